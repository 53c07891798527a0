// rspamd's /checkv2 reply parser on arbitrary bytes, with a threshold from
// the first byte: it never throws, a spam verdict always carries the spam
// category, the rspamd engine and a finite score, and its symbol list stays
// bounded.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "nfqscan/spam.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const double threshold = data[0] / 8.0;
    std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
    nfqscan::ScanVerdict v = nfqscan::parse_rspamd_reply(body, threshold);
    if (v.is_infected()) {
        FUZZ_CHECK(v.detection.category == nfqscan::ThreatCategory::Spam);
        FUZZ_CHECK(v.detection.engine == nfqscan::ScanEngineKind::Rspamd);
        FUZZ_CHECK(v.detection.score && std::isfinite(*v.detection.score));
        FUZZ_CHECK(v.detection.layer_path.size() <= 400);
        FUZZ_CHECK(v.detection.signature.size() <= 64 + 8);
    } else if (v.is_error()) {
        FUZZ_CHECK(v.error == nfqscan::ScanError::EngineNotReady);
    }
    return 0;
}
