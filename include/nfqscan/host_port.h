// "host:port" and "[IPv6 address]:port", as the configuration writes the
// addresses of [notify] relay and [daemon] metrics_listen: split, and the
// port checked. What a host may be (a name, a literal) is the caller's rule.
// Tests: tests/unit/notify/notifier_test.cc (RelayAddress),
// tests/unit/metrics/metrics_http_test.cc (ListenAddress).
#pragma once

#include <cstdint>
#include <string_view>

namespace nfqscan {

struct HostPort {
    std::string_view host;   // without the brackets; points into the text
    uint16_t port = 0;       // 1 to 65535
    bool bracketed = false;  // "[...]:port": the caller's IPv6 literal
};

// Throws std::invalid_argument: "an IPv6 address is written
// \"[address]:port\"" for a bracket without "]:port", `shape` for a text
// without exactly one colon, and "the port must be a number from 1 to
// 65535".
HostPort split_host_port(std::string_view text, const char* shape);

}  // namespace nfqscan
