#include "nfqscan/classifier.h"

namespace nfqscan {

void FlowClassificationDeleter::operator()(FlowClassification* c) const {
    delete c;
}

void FlowClassifier::on_new_flow(Flow& flow) const {
    if (flow.state == FlowState::Udp) {
        // None of the scanned protocols runs over UDP: nothing can claim it.
        flow.disposition = Disposition::Released;
        return;
    }
    Service by_port = config_->ports.lookup(flow.server_port());
    if (by_port != Service::None) {
        flow.disposition = Disposition::Claimed;
        flow.claimed_by = ClaimSource::Port;
        flow.service = by_port;
    }
}

void FlowClassifier::on_new_flow(Flow& flow, const DecodedPacket& first, uint64_t now_ms) const {
    const ProtocolPolicy& ftp = config_->protocols[size_t(Service::Ftp)].policy;
    if (expectations_ && ftp.scan && first.is_tcp() && first.has(tcp_flag::kSyn) &&
        !first.has(tcp_flag::kAck)) {
        if (std::shared_ptr<FtpSession> session =
                expectations_->claim(first.src, first.dst, first.dst_port, now_ms)) {
            flow.disposition = Disposition::Claimed;
            flow.claimed_by = ClaimSource::Expectation;
            flow.service = Service::Ftp;
            flow.ftp_data = std::move(session);
            return;
        }
    }
    on_new_flow(flow);
}

void FlowClassifier::decide(Flow& flow, ProbeResult probe, DpiLabel label) {
    if (probe.verdict == ProbeVerdict::Match) {
        flow.disposition = Disposition::Claimed;
        flow.claimed_by = ClaimSource::Probe;
        flow.service = probe.service;
    } else if (Service s = DpiEngine::service_of(label); s != Service::None) {
        flow.disposition = Disposition::Claimed;
        flow.claimed_by = ClaimSource::Dpi;
        flow.service = s;
    } else if (probe.verdict == ProbeVerdict::NoMatch) {
        flow.disposition = Disposition::Released;
    }
}

void FlowClassifier::finish_labelling(Flow& flow) {
    // Keep feeding nDPI until it has a final label, then free its state.
    FlowClassification& c = *flow.classification;
    bool enough = c.dpi.detected || flow.payload_packets >= config_->flows.classify_packets;
    if (flow.disposition != Disposition::Deciding && enough) {
        if (!c.dpi.detected) {
            DpiLabel label = dpi_.give_up(c.dpi);
            flow.dpi_master = label.master;
            flow.dpi_app = label.app;
        }
        flow.classification.reset();
    }
}

bool FlowClassifier::settle(Flow& flow) {
    FlowClassification& c = *flow.classification;
    DpiLabel label{flow.dpi_master, flow.dpi_app};
    decide(flow, c.probe.result(), label);
    if (flow.disposition == Disposition::Deciding &&
        flow.payload_packets >= config_->flows.classify_packets) {
        // Out of patience: the probes' and nDPI's final answers decide.
        label = c.dpi.detected ? label : dpi_.give_up(c.dpi);
        flow.dpi_master = label.master;
        flow.dpi_app = label.app;
        decide(flow, c.probe.final_result(), label);
        if (flow.disposition == Disposition::Deciding) flow.disposition = Disposition::Released;
    }
    if (flow.disposition == Disposition::Released) {
        // Released flows need no label beyond what nDPI has now.
        flow.classification.reset();
        return true;
    }
    bool decided = flow.disposition != Disposition::Deciding;
    finish_labelling(flow);
    return decided;
}

FlowClassification& FlowClassifier::state(Flow& flow) {
    if (!flow.classification) flow.classification.reset(new FlowClassification());
    return *flow.classification;
}

bool FlowClassifier::observe(Flow& flow, Direction direction, const DecodedPacket& packet,
                             uint64_t now_ms, bool ordered) {
    if (packet.payload.empty() || flow.disposition == Disposition::Released) return false;
    // A decided and labelled flow has no state left to feed.
    if (!flow.classification && flow.disposition != Disposition::Deciding &&
        flow.payload_packets > 0)
        return false;
    FlowClassification& c = state(flow);
    bool was_deciding = flow.disposition == Disposition::Deciding;
    // While the engine orders a flow's bytes, observe_bytes() counts what
    // decides it; a raw packet may be one its receiver discards.
    if ((!ordered || !was_deciding) && flow.payload_packets < 255) ++flow.payload_packets;

    if (!c.dpi.detected) {
        DpiLabel label = dpi_.process(c.dpi, packet.packet, now_ms);
        flow.dpi_master = label.master;
        flow.dpi_app = label.app;
    }
    if (!was_deciding) {
        finish_labelling(flow);
        return false;
    }
    if (ordered) {
        // nDPI's label may claim the flow (more inspection, never less);
        // probes and giving up wait for the ordered bytes.
        decide(flow, {ProbeVerdict::NeedMore, Service::None}, {flow.dpi_master, flow.dpi_app});
        return flow.disposition != Disposition::Deciding;
    }
    // A flow picked up mid-stream shows bytes from the middle of whatever
    // it carries: no probe reads them (nDPI's label or patience decides).
    if (!flow.midstream) c.probe.feed(direction == Direction::ServerToClient, packet.payload);
    return settle(flow);
}

bool FlowClassifier::observe_bytes(Flow& flow, Direction direction,
                                   std::span<const uint8_t> bytes) {
    if (bytes.empty() || flow.disposition != Disposition::Deciding) return false;
    FlowClassification& c = state(flow);
    if (flow.payload_packets < 255) ++flow.payload_packets;
    c.probe.feed(direction == Direction::ServerToClient, bytes);
    return settle(flow);
}

}  // namespace nfqscan
