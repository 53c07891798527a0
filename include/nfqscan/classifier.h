// Flow classification: decides for each young flow whether nfqscan keeps it
// (claimed for one of the scanned services, by configured port, by a probe of
// its first bytes, or by nDPI's label) or releases it to the kernel fast path
// (conntrack mark). A flow is released only when nothing claims it.
#pragma once

#include <cstdint>

#include "nfqscan/config.h"
#include "nfqscan/dpi.h"
#include "nfqscan/flow.h"
#include "nfqscan/probe.h"

namespace nfqscan {

struct FlowClassification {
    DpiFlow dpi;
    ServiceProbe probe;
};

class FlowClassifier {
  public:
    explicit FlowClassifier(const Config& config) : config_(&config) {}

    void set_config(const Config& config) { config_ = &config; }

    // A new flow: a configured server port claims it at once.
    void on_new_flow(Flow& flow) const;

    // Observe one packet of the flow; returns true when this packet decided
    // the flow (claimed or released). Frees the classification state once the
    // flow is decided and labelled.
    bool observe(Flow& flow, Direction direction, const DecodedPacket& packet, uint64_t now_ms);

    DpiEngine& dpi() { return dpi_; }
    const DpiEngine& dpi() const { return dpi_; }

  private:
    void decide(Flow& flow, ProbeResult probe, DpiLabel label);
    void finish_labelling(Flow& flow);

    const Config* config_;
    DpiEngine dpi_;
};

}  // namespace nfqscan
