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
    // flow is decided and labelled. `ordered`: the stream engine orders the
    // flow's bytes and hands them to observe_bytes(); the packet, which may
    // be one its receiver discards (out of the window, a bad checksum), then
    // only feeds nDPI, whose label may claim the flow but never release it.
    // A flow picked up mid-stream is never probed.
    bool observe(Flow& flow, Direction direction, const DecodedPacket& packet, uint64_t now_ms,
                 bool ordered = false);
    // The next ordered, validated bytes of a flow still being decided (from
    // the stream engine, before any inspector sees them): the probes read
    // them. Returns true when they decided the flow.
    bool observe_bytes(Flow& flow, Direction direction, std::span<const uint8_t> bytes);

    DpiEngine& dpi() { return dpi_; }
    const DpiEngine& dpi() const { return dpi_; }

  private:
    void decide(Flow& flow, ProbeResult probe, DpiLabel label);
    void finish_labelling(Flow& flow);
    // The probes' and nDPI's answers so far decide, or patience runs out.
    bool settle(Flow& flow);
    FlowClassification& state(Flow& flow);

    const Config* config_;
    FtpExpectations* expectations_ = nullptr;
    DpiEngine dpi_;
};

}  // namespace nfqscan
