// The protocol probes on arbitrary bytes: probe_client_request(),
// probe_server_greeting() with the input split into greeting and client
// reply, and a ServiceProbe fed the input in pieces from both directions.
// A verdict is never taken back, Match names a service, NoMatch none, and
// final_result() never says NeedMore.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "nfqscan/probe.h"

namespace {

using nfqscan::ProbeResult;
using nfqscan::ProbeVerdict;
using nfqscan::Service;

void check_result(ProbeResult r) {
    FUZZ_CHECK((r.verdict == ProbeVerdict::Match) == (r.service != Service::None));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    nfqscan::fuzz::FuzzInput in(data, size);
    std::span<const uint8_t> all(data, size);
    check_result(nfqscan::probe_client_request(all));

    // Byte 0: where the greeting ends and the client's reply starts.
    size_t split = size == 0 ? 0 : data[0] % size;
    check_result(nfqscan::probe_server_greeting(
        all.subspan(1 > size ? 0 : 1).first(split > 0 ? split - 1 : 0), all.subspan(split)));

    // Then a script: [direction/length byte][bytes]...; bit 7 = from server,
    // the low 7 bits the piece's length.
    in.u8();
    nfqscan::ServiceProbe probe;
    ProbeResult last = probe.result();
    check_result(last);
    while (!in.exhausted()) {
        uint8_t op = in.u8();
        probe.feed((op & 0x80) != 0, in.bytes(op & 0x7f));
        ProbeResult now = probe.result();
        check_result(now);
        if (last.verdict != ProbeVerdict::NeedMore)
            FUZZ_CHECK(now.verdict == last.verdict && now.service == last.service);
        last = now;
    }
    ProbeResult final = probe.final_result();
    check_result(final);
    FUZZ_CHECK(final.verdict != ProbeVerdict::NeedMore);
    if (last.verdict != ProbeVerdict::NeedMore)
        FUZZ_CHECK(final.verdict == last.verdict && final.service == last.service);
    return 0;
}
