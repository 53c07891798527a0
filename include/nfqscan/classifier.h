// Flow classification: decides for each young flow whether nfqscan keeps it
// (claimed for one of the scanned services: as an FTP data connection an
// expectation predicted, by configured port, by a probe of its first bytes,
// or by nDPI's label) or releases it to the kernel fast path (conntrack
// mark). A flow is released only when nothing claims it.
#pragma once

#include <cstdint>

#include "nfqscan/config.h"
#include "nfqscan/dpi.h"
#include "nfqscan/flow.h"
#include "nfqscan/ftp_expectations.h"
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
    // The daemon's FTP expectations (nullptr: none are consulted).
    void set_expectations(FtpExpectations* expectations) { expectations_ = expectations; }

    // A new flow: a configured server port claims it at once.
    void on_new_flow(Flow& flow) const;
    // A new flow and its first packet: an FTP expectation claims a SYN
    // before ports and probes are asked (a data connection may use any
    // port, a configured one included); otherwise on_new_flow(flow).
    void on_new_flow(Flow& flow, const DecodedPacket& first, uint64_t now_ms) const;

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
    FtpExpectations* expectations_ = nullptr;
    DpiEngine dpi_;
};

}  // namespace nfqscan
