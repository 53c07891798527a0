// The HTTP inspector (make_inspector(Service::Http, host)) in the simulator
// of inspector_simulator.h (its layout and checks). Setup bits 5-7 unused;
// one allowlisted host suffix, ".allowed.example".
#include "inspector_simulator.h"

namespace {

using namespace nfqscan;

constexpr uint64_t kMaxContentSize = fuzz::kMaxContentSize;
// HttpFramerLimits::max_head_text, per direction.
constexpr size_t kMaxHeadText = 64 * 1024;

const fuzz::SimulatedProtocol kHttp = {
    .service = Service::Http,
    // Per direction: a body below max_content_size (a vector at most twice
    // that) and a head's kept text.
    .max_memory = 2 * (2 * kMaxContentSize + kMaxHeadText),
    .block_ends_flow = true,
    .speaks_for_peers = false,
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::FuzzInput in(data, size);
    fuzz::Simulator simulator(in, kHttp);
    simulator.run(
        [](ProtocolPolicy& policy, uint8_t) { policy.allow_hosts = {".allowed.example"}; });
    return 0;
}
