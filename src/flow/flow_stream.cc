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
                        size_t room, bool must_replace, std::vector<PacketVerdict>& out) {
    if (v.kind == SegmentVerdict::Kind::Drop) {
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
        return;
    }
    // The packet carries the first `room` bytes of the answer; the rest goes
    // out as new segments right behind it.
    std::span<const uint8_t> payload = v.payload;
    std::span<const uint8_t> first = payload.first(std::min(room, payload.size()));
    std::span<const uint8_t> rest = payload.subspan(first.size());

    SegmentRewrite r;
    r.seq = v.seq;
    r.payload = first;
    r.fin = v.fin && rest.empty();
    uint8_t flags = headers.flags();
    if (flags & tcp_flag::kAck) r.ack = translated_ack(d, headers.ack());
    StreamDirection& other = *directions_[1 - size_t(d)];
    if (other.started() && other.shift() != 0)
        r.sack_edge = [&other](uint32_t e) { return other.translate_sack_edge(e); };

    bool unchanged =
        !must_replace && r.seq == headers.seq() && (!r.ack || *r.ack == headers.ack()) &&
        r.fin == bool(flags & tcp_flag::kFin) && !r.sack_edge &&
        std::equal(first.begin(), first.end(), original_payload.begin(), original_payload.end());
    if (unchanged) {
        out.push_back({id, PacketVerdict::Kind::Accept, {}});
    } else {
        out.push_back({id, PacketVerdict::Kind::Replace, build_segment(headers, r)});
        ++counters_.rewritten_packets;
    }
    size_t offset = first.size();
    while (offset < payload.size()) {
        SegmentRewrite extra = r;
        extra.sack_edge = nullptr;
        extra.payload = payload.subspan(offset, std::min(room, payload.size() - offset));
        extra.seq = uint32_t(v.seq + offset);
        offset += extra.payload.size();
        extra.fin = v.fin && offset == payload.size();
        out.push_back({0, PacketVerdict::Kind::Inject, build_segment(headers, extra)});
        ++counters_.injected_packets;
    }
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
        if (p.has(tcp_flag::kAck)) {
            SegmentVerdict v;
            v.seq = p.seq;
            answer(id, d, SegmentHeaders::of(p), v, {}, 0, false, out);
        } else {
            out.push_back({id, PacketVerdict::Kind::Accept, {}});
        }
        return;
    }
    if (!mine.started()) mine.start(p.seq);  // picked up mid-stream

    // The MSS counts no TCP options: a segment carrying timestamps has 12
    // bytes less for data, or it exceeds the path MTU. A GSO packet is cut
    // by the kernel after the verdict, so it may carry up to 64 KiB.
    size_t mss = mss_[di] ? mss_[di] : kDefaultMss;
    size_t option_bytes = p.l4_header_length - 20u;
    size_t segment_room = mss > option_bytes ? mss - option_bytes : mss;
    size_t room = gso ? kGsoMaxPayload : std::max(segment_room, p.payload.size());

    SegmentHeaders headers = SegmentHeaders::of(p);
    last_headers_[di] = headers;
    bool fin = p.has(tcp_flag::kFin);
    if (p.has(tcp_flag::kRst) || (p.payload.empty() && !fin)) {
        // A RST or a pure ACK: only its numbers (and SACK blocks) change.
        SegmentVerdict v;
        v.seq = mine.translate_seq(p.seq);
        answer(id, d, headers, v, {}, room, false, out);
        return;
    }
    std::vector<SegmentVerdict> released;
    SegmentVerdict v = mine.on_segment(p.seq, p.payload, fin, id, released);
    if (v.kind == SegmentVerdict::Kind::Hold) {
        held_.emplace(id, HeldPacket{std::move(headers), room});
        out.push_back({id, PacketVerdict::Kind::Hold, {}});
        sack_held_data(d, out);
    } else {
        answer(id, d, headers, v, p.payload, room, false, out);
    }
    for (const SegmentVerdict& r : released) {
        auto it = held_.find(uint32_t(r.token));
        if (it == held_.end()) continue;
        // The kernel still has the held packet's original payload: its answer
        // is always written out in full.
        answer(uint32_t(r.token), d, it->second.headers, r, {}, it->second.room, true, out);
        held_.erase(it);
    }
}

void FlowStream::sack_held_data(Direction d, std::vector<PacketVerdict>& out) {
    // The receiver cannot see data held behind a gap, so it sends no SACK and
    // the sender would learn of the loss only by a timeout. nfqscand holds
    // the data: it tells the sender so itself, as a receiver would. A SACK is
    // no acknowledgement: the sender keeps the data until the receiver
    // acknowledges it.
    size_t other = 1 - size_t(d);
    if (!last_headers_[other]) return;
    const StreamDirection& mine = *directions_[size_t(d)];
    const StreamDirection& theirs = *directions_[other];
    const SegmentHeaders& from = *last_headers_[other];
    uint32_t seq = theirs.started() ? theirs.translate_seq(from.seq()) : from.seq();
    auto blocks = mine.held_ranges(3);
    out.push_back({0, PacketVerdict::Kind::Inject,
                   build_sack_ack(from, seq, mine.acknowledged_seq(), blocks)});
    ++counters_.sack_acks;
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
