#include "nfqscan/flow_stream.h"

#include <algorithm>

namespace nfqscan {

void FlowStreamDeleter::operator()(FlowStream* s) const {
    delete s;
}

namespace {
// Without a SYN to learn from, segments up to what IPv6's minimum MTU allows
// are safe on every path.
constexpr uint16_t kDefaultMss = 1220;
constexpr size_t kGsoMaxPayload = 65535 - 120;  // room for IP and TCP headers
}  // namespace

FlowStream::FlowStream(std::array<StreamTransform*, 2> transforms, StreamLimits limits) {
    for (size_t d = 0; d < 2; ++d)
        directions_[d] = std::make_unique<StreamDirection>(
            transforms[d] ? *transforms[d] : passthrough_, limits);
}

std::optional<uint32_t> FlowStream::translated_ack(Direction d, uint32_t ack) {
    // A packet of direction d acknowledges the other direction's output.
    StreamDirection& other = *directions_[1 - size_t(d)];
    if (!other.started()) return std::nullopt;
    return other.translate_ack(ack);
}

void FlowStream::answer(uint32_t id, Direction d, const SegmentHeaders& headers,
                        const SegmentVerdict& v, std::span<const uint8_t> original_payload,
                        std::vector<PacketVerdict>& out) {
    PacketVerdict pv;
    pv.id = id;
    if (v.kind == SegmentVerdict::Kind::Drop) {
        pv.kind = PacketVerdict::Kind::Drop;
        out.push_back(std::move(pv));
        return;
    }
    SegmentRewrite r;
    r.seq = v.seq;
    r.payload = v.payload;
    r.fin = v.fin;
    uint8_t flags = headers.flags();
    if (flags & tcp_flag::kAck) r.ack = translated_ack(d, headers.ack());
    StreamDirection& other = *directions_[1 - size_t(d)];
    if (other.started())
        r.sack_edge = [&other](uint32_t e) { return other.translate_sack_edge(e); };

    const uint8_t* tcp = headers.bytes.data() + headers.l3_length;
    uint32_t seq = uint32_t(tcp[4]) << 24 | uint32_t(tcp[5]) << 16 | uint32_t(tcp[6]) << 8 | tcp[7];
    bool unchanged = r.seq == seq && (!r.ack || *r.ack == headers.ack()) &&
                     r.fin == bool(flags & tcp_flag::kFin) &&
                     std::equal(v.payload.begin(), v.payload.end(), original_payload.begin(),
                                original_payload.end());
    // SACK blocks may still need translating when the receiver's output and
    // input differ; a flow that was never rewritten has identical spaces.
    if (unchanged && other.shift() == 0 && directions_[size_t(d)]->shift() == 0) {
        pv.kind = PacketVerdict::Kind::Accept;
    } else {
        pv.kind = PacketVerdict::Kind::Replace;
        pv.packet = build_segment(headers, r);
        ++counters_.rewritten_packets;
    }
    out.push_back(std::move(pv));
}

void FlowStream::on_packet(uint32_t id, Direction d, const DecodedPacket& p, bool gso,
                           std::vector<PacketVerdict>& out) {
    StreamDirection& mine = *directions_[size_t(d)];
    size_t di = size_t(d);
    if (p.has(tcp_flag::kSyn)) {
        // The SYN takes one sequence number; data starts after it. Its MSS
        // limits what the other direction may send to this host.
        if (!mine.started()) mine.start(p.seq + 1);
        TcpOptions o = parse_tcp_options(p);
        if (o.mss) mss_[1 - di] = o.mss;
        SegmentHeaders h = SegmentHeaders::of(p);
        if (p.has(tcp_flag::kAck)) {
            SegmentVerdict v;
            v.seq = p.seq;
            answer(id, d, h, v, {}, out);
        } else {
            out.push_back({id, PacketVerdict::Kind::Accept, {}});
        }
        return;
    }
    if (!mine.started()) mine.start(p.seq);  // picked up mid-stream

    SegmentHeaders headers = SegmentHeaders::of(p);
    if (p.has(tcp_flag::kRst)) {
        SegmentVerdict v;
        v.seq = mine.translate_seq(p.seq);
        answer(id, d, headers, v, p.payload, out);
        return;
    }
    bool fin = p.has(tcp_flag::kFin);
    if (p.payload.empty() && !fin) {
        // A pure ACK: only its acknowledgement (and SACK blocks) change.
        SegmentVerdict v;
        v.seq = mine.translate_seq(p.seq);
        answer(id, d, headers, v, {}, out);
        return;
    }
    // The MSS counts no TCP options: a segment carrying timestamps has 12
    // bytes less for data, or it exceeds the path MTU.
    size_t mss = mss_[di] ? mss_[di] : kDefaultMss;
    size_t option_bytes = p.l4_header_length - 20u;
    size_t segment_room = mss > option_bytes ? mss - option_bytes : mss;
    size_t max_payload = gso ? kGsoMaxPayload : std::max(segment_room, p.payload.size());
    std::vector<SegmentVerdict> released;
    SegmentVerdict v = mine.on_segment(p.seq, p.payload, fin, id, released, max_payload);
    if (v.kind == SegmentVerdict::Kind::Hold) {
        held_.emplace(id, HeldPacket{std::move(headers), gso});
        out.push_back({id, PacketVerdict::Kind::Hold, {}});
    } else {
        answer(id, d, headers, v, p.payload, out);
    }
    for (const SegmentVerdict& r : released) {
        auto it = held_.find(uint32_t(r.token));
        if (it == held_.end()) continue;
        // The held packet's own payload is gone from the kernel's view: its
        // answer is always written out in full.
        answer(uint32_t(r.token), d, it->second.headers, r, {}, out);
        if (out.back().kind == PacketVerdict::Kind::Accept) {
            out.back().kind = PacketVerdict::Kind::Replace;
            SegmentRewrite rw;
            rw.seq = r.seq;
            rw.payload = r.payload;
            rw.fin = r.fin;
            out.back().packet = build_segment(it->second.headers, rw);
        }
        held_.erase(it);
    }
}

std::vector<uint32_t> FlowStream::held_ids() const {
    std::vector<uint32_t> ids;
    for (const auto& [id, _] : held_)
        ids.push_back(id);
    return ids;
}

size_t FlowStream::memory_bytes() const {
    size_t bytes = sizeof(*this) + held_.size() * 128;
    for (const auto& d : directions_)
        bytes += d->memory_bytes();
    return bytes;
}

}  // namespace nfqscan
