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
// Challenge ACKs to one peer: at most one per this interval (Linux limits
// its own out-of-window answers per socket to one per 500 ms).
constexpr uint64_t kChallengeIntervalMs = 500;
// An ACK may lie this far behind at least, whatever windows were seen.
constexpr uint64_t kMinMaxWindow = 65535;
// Data may reach this far past the receiver's window: a zero-window probe,
// a window edge rounded by scaling, a GSO packet cut from a window that an
// ACK nfqscand forwarded moved meanwhile.
constexpr uint64_t kWindowSlack = 64 << 10;
// Linux's PAWS tolerance (TCP_PAWS_WINDOW): a TSval one tick older than the
// recent one still passes; and a recent TSval older than 24 days no longer
// counts (TCP_PAWS_24DAYS: the sender's clock may have wrapped since).
constexpr int32_t kPawsWindow = 1;
constexpr uint64_t kPawsIdleMs = uint64_t(60 * 60 * 24 * 24) * 1000;
}  // namespace

FlowStream::FlowStream(std::array<StreamTransform*, 2> transforms, StreamLimits limits,
                       const GsoOutput* gso)
    : gso_(gso) {
    limits.held_overhead += kHeldPacketBytes;  // held_'s entry for the packet
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
                        size_t room, bool must_replace, std::optional<uint32_t> ack,
                        std::vector<PacketVerdict>& out, bool may_defer) {
    if (v.kind == SegmentVerdict::Kind::Drop || v.kind == SegmentVerdict::Kind::Absorb) {
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
        return;
    }
    // The packet carries the first `room` bytes of the answer; the rest goes
    // out as new segments right behind it.
    StreamDirection& mine = *directions_[size_t(d)];
    std::span<const uint8_t> payload = mine.payload(v);
    std::span<const uint8_t> first = payload.first(std::min(room, payload.size()));
    std::span<const uint8_t> rest = payload.subspan(first.size());
    if (!rest.empty() && may_defer && !v.fin && !v.repeat_acked_byte && !mine.relaying()) {
        mine.unsend(v.out_begin + first.size());
        deferred_[size_t(d)] = true;
        payload = first;
        rest = {};
    }

    SegmentRewrite r;
    r.seq = v.seq;
    r.payload = first;
    r.fin = v.fin && rest.empty();
    r.ts_value = newer_ts(d, headers);
    uint8_t flags = headers.flags();
    if (flags & tcp_flag::kAck) {
        r.ack = ack;
        if (r.ack) told_ack_[1 - size_t(d)] = *r.ack;
    }
    StreamDirection& other = *directions_[1 - size_t(d)];
    // While the other direction is relayed, nfqscand speaks for this side
    // to its sender: the window there is the relay store's room, never the
    // receiver's own (which would let the sender overrun the store).
    if (r.ack && other.relaying()) r.window = offer_relay_window(Direction(1 - size_t(d)));
    if (other.started() && other.shift() != 0)
        r.sack_edge = [&other](uint32_t e) { return other.translate_sack_edge(e); };

    bool unchanged =
        !must_replace && r.seq == headers.seq() && (!r.ack || *r.ack == headers.ack()) &&
        (!r.window || *r.window == headers.window()) && r.fin == bool(flags & tcp_flag::kFin) &&
        !r.sack_edge && !r.ts_value &&
        std::equal(first.begin(), first.end(), original_payload.begin(), original_payload.end());
    if (unchanged) {
        out.push_back({id, PacketVerdict::Kind::Accept, {}});
    } else {
        out.push_back({id, PacketVerdict::Kind::Replace, build_segment(headers, r)});
        ++counters_.rewritten_packets;
    }
    // New segments go out through a raw socket, which cannot send a GSO
    // packet: each fits the receiver's MSS, whatever the queued packet's room.
    // They are built from the direction's template: addressed for NAT, and
    // without SACK blocks, so that segment_room() holds for them.
    size_t offset = first.size();
    size_t segment = std::max<size_t>(segment_room(d), 1);
    const SegmentHeaders& extra_from =
        last_headers_[size_t(d)] ? *last_headers_[size_t(d)] : headers;
    while (offset < payload.size()) {  // rest
        SegmentRewrite extra = r;
        extra.sack_edge = nullptr;
        extra.payload = payload.subspan(offset, std::min(segment, payload.size() - offset));
        extra.seq = uint32_t(v.seq + offset);
        offset += extra.payload.size();
        extra.fin = v.fin && offset == payload.size();
        out.push_back({0, PacketVerdict::Kind::Inject, build_segment(extra_from, extra)});
        ++counters_.injected_packets;
    }
}

uint8_t FlowStream::window_shift(Direction d) const {
    // Windows that the host sending direction d announces.
    size_t di = size_t(d);
    if (!window_scale_[di] || !window_scale_[1 - di]) return 0;
    return *window_scale_[di];
}

size_t FlowStream::segment_room(Direction d) const {
    size_t di = size_t(d);
    size_t mss = mss_[di] ? mss_[di] : kDefaultMss;
    size_t option_bytes = last_headers_[di] ? last_headers_[di]->l4_length - 20u : 0;
    return mss > option_bytes + 64 ? mss - option_bytes : mss;
}

uint16_t FlowStream::relay_window_field(Direction d) const {
    // The window is the relay buffer's room, in the scale of the receiver
    // (whose ACKs nfqscand speaks for).
    uint64_t room = directions_[size_t(d)]->relay_room() >> window_shift(Direction(1 - size_t(d)));
    return uint16_t(std::min<uint64_t>(room, 0xffff));
}

uint16_t FlowStream::offer_relay_window(Direction d) {
    uint16_t field = relay_window_field(d);
    told_window_[size_t(d)] = uint64_t(field) << window_shift(Direction(1 - size_t(d)));
    directions_[size_t(d)]->note_window_offered(told_window_[size_t(d)]);
    return field;
}

RelayOutput FlowStream::relay_output(Direction d) const {
    const StreamDirection& mine = *directions_[size_t(d)];
    return RelayOutput{mine.output_end(), mine.output_finished()};
}

void FlowStream::on_packet(uint32_t id, Direction d, const DecodedPacket& p, bool gso,
                           uint64_t now_ms, std::vector<PacketVerdict>& out) {
    size_t di = size_t(d);
    Direction od = Direction(1 - di);
    StreamDirection& mine = *directions_[di];
    StreamDirection& other = *directions_[1 - di];
    if (p.has(tcp_flag::kSyn) && mine.started() &&
        (!mine.from_syn() || p.seq + 1 != mine.first_seq())) {
        // A SYN at another number than the one this flow started from, on a
        // flow the engine carries: either a third party's or a new
        // connection's whose client lost the old one (RFC 5961 4: the
        // receiver answers it with a challenge ACK, and a real client
        // answers that with a RST at the exact number, which ends this flow
        // so its next SYN starts a new one). Taken, it would move the numbers
        // the engine checks and translates.
        ++counters_.peer_checks.syns_refused;
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
        if (!dead_) challenge(d, now_ms, out);
        return;
    }
    if (p.has(tcp_flag::kSyn)) {
        // The SYN takes one sequence number; data starts after it. Its MSS
        // limits what the other direction may send to this host.
        if (!mine.started()) mine.start(p.seq + 1, true);
        // A late copy of the SYN never takes the sender's numbers back.
        if (!next_seq_[di] || seq_before(*next_seq_[di], p.seq + 1)) next_seq_[di] = p.seq + 1;
        max_window_[di] = std::max<uint64_t>(max_window_[di], p.window);  // never scaled
        TcpOptions o = parse_tcp_options(p);
        if (o.mss) mss_[1 - di] = o.mss;
        if (o.has_window_scale) window_scale_[di] = o.window_scale;
        if (o.ts_value) {
            // The first SYN's TSval only: a copy with a later one could be
            // anybody's, and an older recent TSval is only more lenient.
            ts_offered_[di] = true;
            if (!ts_recent_[di]) {
                ts_recent_[di] = o.ts_value;
                ts_recent_ms_[di] = now_ms;
            }
        }
        // Data on a SYN (TCP Fast Open) would reach the receiver before any
        // inspector saw it, and the engine, which starts the direction after
        // the SYN, would then wait for those bytes forever. It is cut: not
        // acknowledged, the sender sends it again after the handshake.
        bool syn_data = !p.payload.empty();
        if (syn_data) ++counters_.peer_checks.syn_data_dropped;
        if (p.has(tcp_flag::kAck)) {
            // The SYN-ACK is the first template of the server's side: the
            // relay acknowledges the client with it when the server sends
            // nothing before the client's data (an FTP data connection in
            // active mode, whose client is the FTP server).
            if (!last_headers_[di]) {
                SegmentHeaders h = SegmentHeaders::of(p);
                h.clear_syn();
                remember_headers(di, h);
            }
            SegmentVerdict v;
            v.seq = p.seq;
            answer(id, d, SegmentHeaders::of(p), v, {}, 0, p.cut || syn_data,
                   translated_ack(d, p.ack), out);
        } else if (syn_data) {
            SegmentRewrite r;
            r.seq = p.seq;
            r.fin = p.has(tcp_flag::kFin);
            out.push_back(
                {id, PacketVerdict::Kind::Replace, build_segment(SegmentHeaders::of(p), r)});
        } else {
            out.push_back({id, PacketVerdict::Kind::Accept, {}});
        }
        return;
    }
    if (!mine.started()) mine.start(p.seq);  // picked up mid-stream
    if (!admissible(id, d, p, now_ms, out)) return;
    if (closed_) {
        // Closed by an inspector (close_with()): no packet reaches a peer.
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
        if (!dead_) on_closed_packet(d, p, now_ms, out);
        return;
    }

    // The MSS counts no TCP options: a segment carrying timestamps has 12
    // bytes less for data, or it exceeds the path MTU. A GSO packet is cut
    // by the kernel after the verdict, so it may carry up to 64 KiB.
    size_t mss = mss_[di] ? mss_[di] : kDefaultMss;
    size_t option_bytes = p.l4_header_length - 20u;
    size_t segment_room = mss > option_bytes ? mss - option_bytes : mss;
    size_t room = gso ? kGsoMaxPayload : std::max(segment_room, p.payload.size());

    SegmentHeaders headers = SegmentHeaders::of(p);
    // Urgent data is treated inline, as the inspector sees it: the flag goes.
    bool must_replace = p.cut;
    if (p.has(tcp_flag::kUrg)) {
        headers.clear_urgent();
        must_replace = true;
        ++counters_.peer_checks.urgent_cleared;
    }
    bool fin = p.has(tcp_flag::kFin);
    bool rst = p.has(tcp_flag::kRst);
    if (!rst) {
        // The template for what nfqscand sends on this side's behalf.
        remember_headers(di, headers);
        std::optional<uint32_t> ts = headers.ts_value();
        if (ts && (!ts_newest_[di] || seq_before(*ts_newest_[di], *ts))) ts_newest_[di] = ts;
        note_ts_recent(d, p, now_ms);
        uint32_t end = uint32_t(p.seq + p.payload.size() + (fin ? 1 : 0));
        if (!next_seq_[di] || seq_before(*next_seq_[di], end)) next_seq_[di] = end;
    }

    // What the packet acknowledges is the other direction's output.
    bool other_relayed = other.relaying();
    std::optional<uint32_t> ack =
        p.has(tcp_flag::kAck) ? translated_ack(d, p.ack) : std::optional<uint32_t>{};
    if (rst) {
        // The connection is over: nothing left to relay. A receiver still
        // owed bytes nfqscand acknowledged, or at shifted numbers, may not
        // take the RST translated: it gets one at each number it may expect.
        if (needs_engine()) reset_receiver(d, out);
        relays_ = {};
        dead_ = true;
        SegmentVerdict v;
        v.seq = mine.translate_seq(p.seq);
        answer(id, d, headers, v, {}, room, must_replace, ack, out);
        return;
    }
    if (other_relayed || relays_[1 - di]) relay_on_ack(od, p, now_ms, out);

    if (p.payload.empty() && !fin) {
        // A pure ACK: only its numbers (and SACK blocks) change. While the
        // other direction is relayed, nfqscand answers its sender itself; a
        // repeat of what that sender was told would only look like loss.
        if (other_relayed && ack && told_ack_[1 - di] == ack) {
            out.push_back({id, PacketVerdict::Kind::Drop, {}});
            return;
        }
        SegmentVerdict v;
        v.seq = mine.translate_seq(p.seq);
        answer(id, d, headers, v, {}, room, must_replace, ack, out);
        return;
    }
    std::vector<SegmentVerdict> released;
    SegmentVerdict v = mine.on_segment(p.seq, p.payload, fin, id, released);
    bool absorbed = v.kind == SegmentVerdict::Kind::Absorb;
    if (v.kind == SegmentVerdict::Kind::Hold) {
        held_.emplace(id, HeldPacket{std::move(headers), room});
        out.push_back({id, PacketVerdict::Kind::Hold, {}});
        ack_sender(d, out);
        ++counters_.sack_acks;
    } else {
        // Held segments released by this one were answered from where it
        // ends: it may defer output only when there are none.
        answer(id, d, headers, v, p.payload, room, must_replace, ack, out, released.empty());
        // Input the inspector keeps before a gap, now acknowledged by
        // nfqscand: the sender goes on to the lost segment.
        if (mine.must_ack_sender()) {
            ack_sender(d, out);
            ++counters_.sack_acks;
        }
    }
    for (const SegmentVerdict& r : released) {
        auto it = held_.find(uint32_t(r.token));
        if (it == held_.end()) continue;
        absorbed |= r.kind == SegmentVerdict::Kind::Absorb;
        // The kernel still has the held packet's original payload: its answer
        // is always written out in full.
        const SegmentHeaders& h = it->second.headers;
        std::optional<uint32_t> held_ack =
            h.flags() & tcp_flag::kAck ? translated_ack(d, h.ack()) : std::optional<uint32_t>{};
        answer(uint32_t(r.token), d, h, r, {}, it->second.room, true, held_ack, out);
        held_.erase(it);
    }
    if (absorbed) {
        ack_sender(d, out);
        ++counters_.relay_acks;
    }
    if (mine.relaying() || relays_[di]) pump_relay(d, now_ms, out);
}

bool FlowStream::admissible(uint32_t id, Direction d, const DecodedPacket& p, uint64_t now_ms,
                            std::vector<PacketVerdict>& out) {
    if (dead_) return true;  // nothing of the engine's left to protect
    size_t di = size_t(d);
    PeerCheckCounters& c = counters_.peer_checks;
    const StreamDirection& other = *directions_[1 - di];
    auto refuse = [&](uint64_t& counter) {
        ++counter;
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
        challenge(d, now_ms, out);
        return false;
    };
    const StreamDirection& mine = *directions_[di];
    if (p.has(tcp_flag::kRst) && mine.from_syn()) {
        // RFC 5961 3.2: a RST counts only at the number the receiver expects
        // next. The engine knows it as the sender's next number, or as the
        // acknowledgement the sender was last told (where a sender that
        // really reset answers a challenge ACK).
        uint32_t expected = mine.acknowledged_seq();
        bool exact = p.seq == expected || (next_seq_[di] && p.seq == *next_seq_[di]) ||
                     (told_ack_[di] && p.seq == *told_ack_[di]);
        if (!exact) {
            uint64_t window = std::max({max_window_[1 - di], kMinMaxWindow, told_window_[di]});
            if (uint64_t(uint32_t(p.seq - expected)) < window) return refuse(c.rsts_challenged);
            ++c.rsts_out_of_window;  // no answer: it would only help a blind attacker
            out.push_back({id, PacketVerdict::Kind::Drop, {}});
            return false;
        }
    }
    if (!p.has(tcp_flag::kRst) && p.has(tcp_flag::kAck) && other.started()) {
        // An ACK beyond what the receiver was sent would free output that
        // may still need repair (it is no longer retained once acknowledged).
        uint64_t max_window = std::max(max_window_[di], kMinMaxWindow);
        switch (other.classify_ack(p.ack, max_window)) {
            case StreamDirection::AckRange::Ahead:
                return refuse(c.acks_ahead);
            case StreamDirection::AckRange::Behind:
                return refuse(c.acks_behind);
            case StreamDirection::AckRange::Acceptable:
                break;
        }
    }
    bool data = !p.payload.empty() || p.has(tcp_flag::kFin);
    if (data && !p.has(tcp_flag::kRst) && other.from_syn() &&
        !mine.within_window(p.seq, p.payload.size(), std::max(max_window_[1 - di], kMinMaxWindow),
                            kWindowSlack))
        return refuse(c.data_out_of_window);
    // RSTs are exempt, as in Linux (tcp_validate_incoming).
    if (data && !p.has(tcp_flag::kRst) && paws_rejects(d, p, now_ms)) return refuse(c.paws);
    // Only windows of packets that passed count: a spoofed one could
    // otherwise widen what the next spoofed packet may claim.
    max_window_[di] = std::max(max_window_[di], uint64_t(p.window) << window_shift(d));
    return true;
}

bool FlowStream::paws_rejects(Direction d, const DecodedPacket& p, uint64_t now_ms) const {
    // As Linux's tcp_paws_discard(), never stricter: a segment without a
    // timestamp is not checked, one at most kPawsWindow older passes.
    size_t di = size_t(d);
    if (!ts_offered_[0] || !ts_offered_[1] || !ts_recent_[di]) return false;
    std::optional<uint32_t> ts = parse_tcp_options(p).ts_value;
    if (!ts || int32_t(*ts_recent_[di] - *ts) <= kPawsWindow) return false;
    return now_ms < ts_recent_ms_[di] + kPawsIdleMs;
}

void FlowStream::note_ts_recent(Direction d, const DecodedPacket& p, uint64_t now_ms) {
    // Linux takes a segment's TSval as the recent one only when the segment
    // reaches the edge it last acknowledged (tcp_replace_ts_recent(): seq
    // not after rcv_wup, end not before it). A newer TSval taken from a
    // segment further ahead (reordered, or spoofed within the window) would
    // make the engine drop data the receiver takes.
    size_t di = size_t(d);
    if (!ts_offered_[0] || !ts_offered_[1] || !directions_[di]->from_syn()) return;
    std::optional<uint32_t> ts = parse_tcp_options(p).ts_value;
    if (!ts) return;
    uint32_t edge = directions_[di]->acknowledged_seq();
    uint32_t end = uint32_t(p.seq + p.payload.size() + (p.has(tcp_flag::kFin) ? 1 : 0));
    if (seq_before(edge, p.seq) || seq_before(end, edge)) return;
    ts_recent_[di] = ts;
    ts_recent_ms_[di] = now_ms;
}

void FlowStream::challenge(Direction d, uint64_t now_ms, std::vector<PacketVerdict>& out) {
    std::optional<uint64_t>& last = challenged_at_[size_t(d)];
    if (last && now_ms < *last + kChallengeIntervalMs) return;
    if (!last_headers_[1 - size_t(d)] || !directions_[size_t(d)]->started()) return;
    last = now_ms;
    ack_sender(d, out);
    ++counters_.peer_checks.challenge_acks;
}

void FlowStream::relay_on_ack(Direction d, const DecodedPacket& p, uint64_t now_ms,
                              std::vector<PacketVerdict>& out) {
    // `p` comes from the receiver of direction d.
    pump_relay(d, now_ms, out);  // creates the relay when it starts
    RelaySender* relay = relays_[size_t(d)].get();
    if (!relay) return;
    const StreamDirection& mine = *directions_[size_t(d)];
    uint64_t window = uint64_t(p.window) << window_shift(Direction(1 - size_t(d)));
    bool duplicate_candidate = p.payload.empty() && !p.has(tcp_flag::kFin);
    // The receiver's SACK blocks, in output offsets: only holes go again.
    // A block at or behind the cumulative ACK (a D-SACK) says nothing new.
    std::array<std::pair<uint32_t, uint32_t>, 4> blocks;
    std::array<std::pair<uint64_t, uint64_t>, 4> sacked;
    size_t count = 0;
    uint64_t acked = mine.output_acked();
    uint32_t acked_seq = mine.output_seq(acked);
    for (size_t i = 0, n = parse_sack_blocks(p, blocks); i < n; ++i) {
        uint32_t left = blocks[i].first - acked_seq, right = blocks[i].second - acked_seq;
        if (int32_t(left) <= 0 || int32_t(right) <= int32_t(left)) continue;
        sacked[count++] = {acked + left, acked + right};
    }
    std::vector<RelaySegment> send;
    relay->on_ack(acked, mine.fin_acknowledged(), window, duplicate_candidate, relay_output(d),
                  now_ms, send, std::span(sacked.data(), count));
    emit(d, send, out);
    if (!mine.relaying()) {
        end_relay(d, now_ms);  // caught up: back to pass mode
        return;
    }
    // The receiver took data: when that reopened a window the sender was
    // told was (nearly) closed, say so, or the sender waits for its timer.
    uint64_t open = uint64_t(relay_window_field(d)) << window_shift(Direction(1 - size_t(d)));
    if (open > 2 * told_window_[size_t(d)]) ack_sender(d, out);
}

void FlowStream::end_relay(Direction d, uint64_t now_ms) {
    std::unique_ptr<RelaySender>& relay = relays_[size_t(d)];
    if (!relay) return;
    relay_memo_[size_t(d)] = relay->memo(now_ms);
    relay.reset();
}

void FlowStream::pump_relay(Direction d, uint64_t now_ms, std::vector<PacketVerdict>& out) {
    size_t di = size_t(d);
    const StreamDirection& mine = *directions_[di];
    if (dead_ || !last_headers_[di]) return;
    if (!mine.relaying()) {
        end_relay(d, now_ms);
        return;
    }
    if (!relays_[di])
        relays_[di] =
            std::make_unique<RelaySender>(mine.output_acked(), mine.output_sent(), segment_room(d),
                                          now_ms, relay_memo_[di] ? &*relay_memo_[di] : nullptr);
    std::vector<RelaySegment> send;
    relays_[di]->catch_up(mine.output_acked(), mine.fin_acknowledged(), relay_output(d), now_ms,
                          send);
    relays_[di]->pump(relay_output(d), now_ms, send);
    emit(d, send, out);
}

void FlowStream::emit(Direction d, const std::vector<RelaySegment>& segments,
                      std::vector<PacketVerdict>& out) {
    size_t di = size_t(d);
    if (segments.empty() || !last_headers_[di]) return;
    StreamDirection& mine = *directions_[di];
    const StreamDirection& other = *directions_[1 - di];
    const SegmentHeaders& from = *last_headers_[di];
    bool frames = gso_ && (from.ip_version == 4 ? gso_->ipv4 : gso_->ipv6);
    size_t size = relays_[di] ? relays_[di]->segment_size() : segment_room(d);
    // The IP packet's 16-bit length bounds a frame.
    size_t cap = 65535 - from.bytes.size();
    for (size_t i = 0; i < segments.size();) {
        const RelaySegment& s = segments[i++];
        mine.note_sent(s.end);
        // What the receiver acknowledged meanwhile is not sent again.
        uint64_t begin = std::max(s.begin, mine.output_acked());
        if (begin >= s.end && !s.fin) continue;
        // One frame for a run of segments; the kernel cuts it where the
        // RelaySender cut them (reset_peers relies on those boundaries).
        size_t count = frames ? frame_run(segments, i - 1, begin, size, cap) : 1;
        for (size_t k = 1; k < count; ++k)
            mine.note_sent(segments[i++].end);
        uint64_t end = segments[i - 1].end;
        bool fin = segments[i - 1].fin;
        std::span<const uint8_t> payload = mine.output_view(begin, end);
        SegmentRewrite r;
        r.seq = mine.output_seq(begin);
        r.payload = payload;
        r.fin = fin;
        r.ts_value = newer_ts(d, from);
        if (other.started()) r.ack = other.acknowledged_seq();
        if (other.started() && other.shift() != 0)
            r.sack_edge = [&other](uint32_t e) { return other.translate_sack_edge(e); };
        if (frames) {
            out.push_back(
                {0, PacketVerdict::Kind::InjectFrame, build_gso_frame(from, r, uint16_t(size))});
            if (payload.size() > size) ++counters_.relay_gso_frames;
        } else {
            out.push_back({0, PacketVerdict::Kind::Inject, build_segment(from, r)});
        }
        counters_.relay_segments += count;
        if (s.retransmission) counters_.relay_retransmissions += count;
    }
}

void FlowStream::send_output(Direction d, uint64_t begin, uint64_t end, size_t room,
                             std::vector<PacketVerdict>& out) {
    size_t di = size_t(d);
    StreamDirection& mine = *directions_[di];
    const StreamDirection& other = *directions_[1 - di];
    if (!last_headers_[di]) return;
    room = std::max<size_t>(room, 1);
    // What the receiver acknowledged meanwhile is not sent again (the view
    // starts there: a segment from `begin` would carry bytes at the wrong
    // sequence numbers).
    for (uint64_t at = std::max(begin, mine.output_acked()); at < end;) {
        uint64_t to = std::min<uint64_t>(end, at + room);
        SegmentRewrite r;
        r.seq = mine.output_seq(at);
        r.payload = mine.output_view(at, to);
        r.ts_value = newer_ts(d, *last_headers_[di]);
        if (other.started()) r.ack = other.acknowledged_seq();
        if (other.started() && other.shift() != 0)
            r.sack_edge = [&other](uint32_t e) { return other.translate_sack_edge(e); };
        out.push_back({0, PacketVerdict::Kind::Inject, build_segment(*last_headers_[di], r)});
        ++counters_.injected_packets;
        mine.note_sent(to);
        at = to;
    }
}

void FlowStream::flush_deferred(std::vector<PacketVerdict>& out) {
    for (Direction d : {Direction::ClientToServer, Direction::ServerToClient}) {
        if (!deferred_[size_t(d)]) continue;
        deferred_[size_t(d)] = false;
        const StreamDirection& mine = *directions_[size_t(d)];
        // Relaying or reset meanwhile: the relay owns the output, or nobody.
        if (dead_ || mine.relaying()) continue;
        send_output(d, mine.output_sent(), mine.output_end(), segment_room(d), out);
    }
}

void FlowStream::on_timer(uint64_t now_ms, std::vector<PacketVerdict>& out) {
    if (dead_) return;
    for (Direction d : {Direction::ClientToServer, Direction::ServerToClient}) {
        RelaySender* relay = relays_[size_t(d)].get();
        if (!relay) continue;
        std::vector<RelaySegment> send;
        const StreamDirection& mine = *directions_[size_t(d)];
        relay->catch_up(mine.output_acked(), mine.fin_acknowledged(), relay_output(d), now_ms,
                        send);
        uint64_t timeouts = relay->counters().timeouts;
        relay->on_timer(relay_output(d), now_ms, send);
        counters_.relay_timeouts += relay->counters().timeouts - timeouts;
        if (relay->gave_up()) {
            // The receiver takes nothing more: the connection cannot be
            // completed, and must not look completed to either side.
            reset_peers(out);
            return;
        }
        emit(d, send, out);
    }
}

std::optional<uint64_t> FlowStream::deadline() const {
    std::optional<uint64_t> first;
    if (dead_) return first;
    for (const auto& relay : relays_)
        if (relay && relay->deadline() && (!first || *relay->deadline() < *first))
            first = relay->deadline();
    return first;
}

void FlowStream::send_own(Direction d, std::span<const uint8_t> bytes, uint64_t now_ms,
                          std::vector<PacketVerdict>& out) {
    directions_[size_t(d)]->insert(bytes);
    pump_relay(d, now_ms, out);
}

bool FlowStream::needs_engine() const {
    if (dead_) return false;
    for (const auto& d : directions_)
        if (d->relaying() || d->shift() != 0 || d->owes_delivery()) return true;
    return false;
}

void FlowStream::reset_peers(std::vector<PacketVerdict>& out) {
    if (dead_) return;
    for (Direction x : {Direction::ClientToServer, Direction::ServerToClient})
        reset_receiver(x, out);
    relays_ = {};
    dead_ = true;
}

void FlowStream::abandon(std::vector<PacketVerdict>& out) {
    for (const auto& [id, _] : held_)
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
    held_.clear();
    if (needs_engine() || relay_active()) reset_peers(out);
}

void FlowStream::shed(std::vector<PacketVerdict>& out) {
    reset_peers(out);
    for (const auto& [id, _] : held_)
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
    held_.clear();
    for (auto& d : directions_)
        d->release_memory();
    closed_ = Direction::ServerToClient;  // with dead_: every packet is dropped
    deferred_ = {false, false};
}

void FlowStream::reset_receiver(Direction dx, std::vector<PacketVerdict>& out) {
    size_t x = size_t(dx);
    {
        // To the receiver of direction x, as x's sender: the receiver
        // accepts a RST only at exactly the sequence number it expects next
        // (RFC 5961). That is its last ACK, or the end of one of the
        // segments sent since (its ACK may be on its way): one RST for each
        // such boundary, the newest first, at most kMaxResets.
        constexpr size_t kMaxResets = 128;
        if (!last_headers_[x] || !directions_[x]->started()) return;
        const StreamDirection& dir = *directions_[x];
        uint64_t acked = dir.output_acked();
        uint64_t sent = std::max(acked, relays_[x] ? relays_[x]->sent_end() : dir.output_sent());
        size_t step = std::max<size_t>(segment_room(Direction(x)), 1);
        std::vector<uint64_t> offsets{sent};
        for (uint64_t o = acked + (sent - acked - 1) / step * step;
             o >= acked && o < sent && offsets.size() < kMaxResets; o -= step) {
            offsets.push_back(o);
            if (o < acked + step) break;
        }
        if (offsets.back() != acked && offsets.size() < kMaxResets) offsets.push_back(acked);
        for (uint64_t offset : offsets) {
            ControlSegment c;
            c.rst = true;
            c.seq = dir.output_seq(offset);
            out.push_back(
                {0, PacketVerdict::Kind::Inject, build_control_segment(*last_headers_[x], c)});
            ++counters_.resets;
        }
    }
}

void FlowStream::remember_headers(size_t d, const SegmentHeaders& h) {
    last_headers_[d] = h;
    last_headers_[d]->strip_sack();
    if (const auto& wire = wire_[d])
        last_headers_[d]->set_endpoints(wire->first.address, wire->first.port, wire->second.address,
                                        wire->second.port);
}

void FlowStream::set_wire_endpoints(Direction d, const Endpoint& src, const Endpoint& dst) {
    size_t di = size_t(d);
    wire_[di] = std::pair{src, dst};
    wire_checked_ = true;
    if (last_headers_[di]) remember_headers(di, *last_headers_[di]);
}

void FlowStream::redrive(uint64_t now_ms, std::vector<PacketVerdict>& out) {
    if (dead_) return;
    for (Direction d : {Direction::ClientToServer, Direction::ServerToClient}) {
        StreamDirection& mine = *directions_[size_t(d)];
        if (!mine.started()) continue;
        mine.redrive();
        if (closed_ && *closed_ != d) continue;
        if (mine.relaying() || relays_[size_t(d)]) {
            pump_relay(d, now_ms, out);
        } else if (mine.output_end() > mine.output_sent() && !deferred_[size_t(d)]) {
            // Mapped after the sender's last segment: nobody else sends it.
            send_output(d, mine.output_sent(), mine.output_end(), segment_room(d), out);
        }
    }
}

void FlowStream::close_with(Direction d, std::span<const uint8_t> bytes, uint64_t now_ms,
                            std::vector<PacketVerdict>& out) {
    if (dead_ || closed_) return;
    closed_ = d;
    // Nothing held is delivered any more, in either direction.
    for (const auto& [id, _] : held_)
        out.push_back({id, PacketVerdict::Kind::Drop, {}});
    held_.clear();
    directions_[size_t(d)]->close_with(bytes);
    directions_[1 - size_t(d)]->discard();
    relays_[1 - size_t(d)].reset();
    // The sender of d is the receiver of the other direction.
    reset_receiver(Direction(1 - size_t(d)), out);
    pump_relay(d, now_ms, out);
}

void FlowStream::on_closed_packet(Direction d, const DecodedPacket& p, uint64_t now_ms,
                                  std::vector<PacketVerdict>& out) {
    Direction closed = *closed_;
    if (d == closed || p.has(tcp_flag::kRst)) {
        // The reset side's late packets, or a peer's RST: nothing to deliver.
        if (p.has(tcp_flag::kRst)) {
            relays_ = {};
            dead_ = true;
        }
        return;
    }
    // From the receiver of the closed direction: its ACKs drive the relay
    // that delivers the message and the FIN.
    if (p.has(tcp_flag::kAck)) translated_ack(d, p.ack);
    relay_on_ack(closed, p, now_ms, out);
    // It has the FIN and says more (its own FIN, data): it gets a RST, as
    // its peer is gone.
    if ((!p.payload.empty() || p.has(tcp_flag::kFin)) &&
        directions_[size_t(closed)]->fin_acknowledged()) {
        if (!last_headers_[size_t(closed)]) return;
        ControlSegment c;
        c.rst = true;
        c.seq =
            directions_[size_t(closed)]->output_seq(directions_[size_t(closed)]->output_end() + 1);
        out.push_back({0, PacketVerdict::Kind::Inject,
                       build_control_segment(*last_headers_[size_t(closed)], c)});
        ++counters_.resets;
        relays_ = {};
        dead_ = true;
    }
}

void FlowStream::ack_sender(Direction d, std::vector<PacketVerdict>& out) {
    // The receiver cannot see data held behind a gap, so it sends no SACK and
    // the sender would learn of the loss only by a timeout; data the relay
    // took it never sees at all. nfqscand tells the sender itself, as the
    // receiver would. A SACK is no acknowledgement: the sender keeps the
    // data until the receiver acknowledges it.
    size_t di = size_t(d);
    size_t oi = 1 - di;
    if (!last_headers_[oi]) return;
    const StreamDirection& mine = *directions_[di];
    const StreamDirection& theirs = *directions_[oi];
    const SegmentHeaders& from = *last_headers_[oi];
    uint32_t next = next_seq_[oi].value_or(from.seq());
    auto blocks = mine.held_ranges(3);
    ControlSegment c;
    c.seq = theirs.started() ? theirs.translate_seq(next) : next;
    c.ack = mine.acknowledged_seq();
    c.sack_blocks = blocks;
    if (mine.relaying()) {
        c.window = offer_relay_window(d);
    }
    c.ts_value = newer_ts(Direction(oi), from);
    c.ts_echo = ts_newest_[di];
    out.push_back({0, PacketVerdict::Kind::Inject, build_control_segment(from, c)});
    told_ack_[di] = c.ack;
}

std::optional<uint32_t> FlowStream::newer_ts(Direction d, const SegmentHeaders& h) const {
    const std::optional<uint32_t>& newest = ts_newest_[size_t(d)];
    if (!newest) return std::nullopt;
    std::optional<uint32_t> own = h.ts_value();
    if (!own || !seq_before(*own, *newest)) return std::nullopt;
    return newest;
}

std::vector<uint32_t> FlowStream::held_ids() const {
    std::vector<uint32_t> ids;
    for (const auto& [id, _] : held_)
        ids.push_back(id);
    return ids;
}

size_t FlowStream::memory_bytes() const {
    size_t bytes = sizeof(*this) + held_.size() * kHeldPacketBytes;
    for (const auto& d : directions_)
        bytes += d->memory_bytes();
    return bytes;
}

}  // namespace nfqscan
