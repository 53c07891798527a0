#include "nfqscan/engine_mark.h"

#include "nfqscan/flow_stream.h"
#include "nfqscan/tcp_packet.h"

namespace nfqscan {

namespace {
// How far before the sender's number the probe to the receiver lies: behind
// any window (at most 2^30 bytes with window scaling) whatever the lost
// shift, yet clearly before it in sequence space (less than 2^31), so never
// acceptable.
constexpr uint32_t kOrphanProbeDistance = 3u << 29;
}  // namespace

EngineMarkStep engine_mark_step(Flow& flow, const DecodedPacket& p, bool packet_marked) {
    if (packet_marked) {
        if (flow.engine_marked || flow.engine_mark_requested) {
            flow.engine_marked = true;
            return EngineMarkStep::Proceed;
        }
        // A client's SYN opens a new connection (conntrack gives a reopened
        // tuple a new entry, so this is a stale mark at worst): never reset.
        if (p.has(tcp_flag::kSyn) && !p.has(tcp_flag::kAck)) return EngineMarkStep::Proceed;
        return EngineMarkStep::Orphan;
    }
    if (flow.engine_marked) return EngineMarkStep::MarkMissing;
    if (flow.stream && !flow.engine_mark_requested && flow.stream->needs_engine()) {
        flow.engine_mark_requested = true;
        return EngineMarkStep::RequestMark;
    }
    return EngineMarkStep::Proceed;
}

std::vector<std::vector<uint8_t>> orphan_answers(const DecodedPacket& p, Direction d,
                                                 const std::optional<ConnectionTuples>& nat) {
    std::vector<std::vector<uint8_t>> out;
    if (p.has(tcp_flag::kRst)) return out;
    // Toward the client a segment carries the reply tuple, toward the server
    // the original one.
    auto addressed = [&](bool to_client) {
        SegmentHeaders h = SegmentHeaders::of(p);
        Endpoint from{p.src, p.src_port}, to{p.dst, p.dst_port};
        bool to_receiver = to_client == (d == Direction::ServerToClient);
        if (!to_receiver) std::swap(from, to);
        if (nat) {
            from = to_client ? nat->reply_src : nat->orig_src;
            to = to_client ? nat->reply_dst : nat->orig_dst;
        }
        h.set_endpoints(from.address, from.port, to.address, to.port);
        return h;
    };
    bool sender_is_client = d == Direction::ClientToServer;
    if (p.has(tcp_flag::kAck)) {
        ControlSegment rst;
        rst.rst = true;
        rst.seq = p.ack;
        out.push_back(build_control_segment(addressed(sender_is_client), rst));
    }
    ControlSegment probe;
    probe.seq = p.seq - kOrphanProbeDistance;
    probe.ack = p.ack;
    out.push_back(build_control_segment(addressed(!sender_is_client), probe));
    return out;
}

}  // namespace nfqscan
