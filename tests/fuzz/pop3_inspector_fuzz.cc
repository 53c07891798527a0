// The POP3 inspector (make_inspector(Service::Pop3, host)) in the simulator of
// inspector_simulator.h (its layout and checks). Setup bits 5-6: starttls
// allow (0), strip (1), block (2, 3); bit 7: on_virus strip instead of
// replace and notify_recipient_on_error_pass.
#include "inspector_simulator.h"

namespace {

using namespace nfqscan;

constexpr uint64_t kMaxContentSize = fuzz::kMaxContentSize;

const fuzz::SimulatedProtocol kPop3 = {
    .service = Service::Pop3,
    // A message below max_content_size in a memory file (whole pages, twice
    // it at most), per direction, and a header kept for a fallback.
    .max_memory = 2 * (2 * kMaxContentSize + 4096) + (64 << 10),
    .block_ends_flow = false,
    .speaks_for_peers = true,
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::FuzzInput in(data, size);
    fuzz::Simulator simulator(in, kPop3);
    simulator.run([](ProtocolPolicy& policy, uint8_t setup) {
        int tls = (setup >> 5) & 3;
        policy.starttls = tls == 0 ? StartTls::Allow : tls == 1 ? StartTls::Strip : StartTls::Block;
        if (setup & 128) {
            policy.mail_on_virus = MailBlock::Strip;
            policy.notify_recipient_on_error_pass = true;
        }
    });
    return 0;
}
