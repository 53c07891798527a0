// parse_config() on arbitrary text: it either returns a Config or throws
// ConfigError. Any other exception escapes this function, and libFuzzer
// reports it (std::terminate) like a crash: a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "nfqscan/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        nfqscan::Config c = nfqscan::parse_config(text, "/etc/nfqscan/fuzz.toml");
        // What the daemon relies on after a successful parse.
        FUZZ_CHECK(c.daemon.queues.first <= c.daemon.queues.last);
        FUZZ_CHECK(c.daemon.queues.count() <= 64);
        for (size_t s = 1; s < nfqscan::kServiceCount; ++s)
            for (uint16_t port : c.protocols[s].ports)
                FUZZ_CHECK(c.ports.lookup(port) != nfqscan::Service::None);
    } catch (const nfqscan::ConfigError& e) {
        FUZZ_CHECK(e.what() != nullptr);
    }
    return 0;
}
