#include "nfqscan/tcp_stream.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace nfqscan {

namespace {
// Retransmissions that end at the newest byte, with nothing new between them,
// before held bytes are taken as a stall and must be mapped.
constexpr uint32_t kStallRetransmissions = 2;
// A relay buffer with less room than this counts as full: a 64 KiB GSO
// packet does not fit, and a sender waits for a window of a full segment.
constexpr size_t kRelayLowWater = 64 << 10;
}  // namespace

// Collects the inspector's answers for one on_bytes() call over `input`
// (the pending bytes, or a packet's new bytes straight from the packet). The
// input is not touched while the inspector holds a span of it; consumed
// bytes are dropped afterwards.
class StreamDirection::Sink : public StreamSink {
  public:
    Sink(StreamDirection& d, std::span<const uint8_t> input) : d_(d), input_(input) {}

    void pass(size_t length) override {
        length = std::min(length, input_.size() - consumed_);
        if (length == 0) return;
        std::span<const uint8_t> bytes = input_.subspan(consumed_, length);
        d_.append_output(bytes, bytes, true);
        consumed_ += length;
    }

    void replace(size_t length, std::span<const uint8_t> bytes) override {
        length = std::min(length, input_.size() - consumed_);
        std::span<const uint8_t> original = input_.subspan(consumed_, length);
        bool same =
            length == bytes.size() && std::equal(bytes.begin(), bytes.end(), original.begin());
        if (!same) ++d_.counters_.rewritten;
        d_.append_output(original, bytes, same);
        consumed_ += length;
    }

    void relay(bool on) override {
        d_.relay_requested_ = on;
        if (on) d_.start_relay();
    }

    size_t consumed() const { return consumed_; }

  private:
    StreamDirection& d_;
    std::span<const uint8_t> input_;
    size_t consumed_ = 0;
};

StreamDirection::StreamDirection(StreamTransform& transform, StreamLimits limits)
    : transform_(transform), limits_(limits) {}

void StreamDirection::start(uint32_t first_data_seq, bool from_syn) {
    started_ = true;
    from_syn_ = from_syn;
    base_ = first_data_seq;
}

StreamDirection::AckRange StreamDirection::classify_ack(uint32_t ack, uint64_t max_window) const {
    if (!from_syn_) return AckRange::Acceptable;
    // Relative to what the receiver acknowledged (SND.UNA), in serial
    // arithmetic: far behind and far ahead both wrap to the other side, so
    // an offset is never computed from an unwrapped guess.
    int64_t diff = int32_t(ack - out_seq(out_acked_));
    // The FIN takes a sequence number once it can have been sent.
    bool fin_sent = output_finished() && out_sent_max_ == out_next_;
    uint64_t sent = out_sent_max_ - out_acked_ + (fin_sent ? 1 : 0);
    if (diff > 0 && uint64_t(diff) > sent) return AckRange::Ahead;
    if (diff < 0 && uint64_t(-diff) > max_window) return AckRange::Behind;
    return AckRange::Acceptable;
}

uint64_t StreamDirection::unwrap(uint32_t seq, uint64_t near) const {
    // The 64-bit offset closest to `near` whose low 32 bits give `seq`.
    int32_t diff = int32_t(seq - uint32_t(base_ + near));
    int64_t offset = int64_t(near) + diff;
    return offset < 0 ? 0 : uint64_t(offset);
}

bool StreamDirection::within_window(uint32_t seq, size_t length, uint64_t window,
                                    uint64_t slack) const {
    if (!from_syn_ || relaying_ || closed_) return true;
    // Serial arithmetic from the next expected byte, not unwrap(): that
    // clamps at offset 0, and far behind would look like the start.
    int64_t begin = int64_t(in_next_) + int32_t(seq - uint32_t(base_ + in_next_));
    int64_t end = begin + int64_t(length);
    // What the sender was told is acknowledged, and the edge of the largest
    // window it may have been offered from there (or by the relay before).
    int64_t acked = int64_t(std::max(out_to_in(out_acked_), in_absorbed_));
    int64_t right = std::max(acked + int64_t(window), int64_t(window_edge_)) + int64_t(slack);
    return end <= right && end + int64_t(window + slack) >= acked;
}

void StreamDirection::append_output(std::span<const uint8_t> input, std::span<const uint8_t> output,
                                    bool same) {
    Chunk c{in_mapped_, in_mapped_ + input.size(), out_next_, out_next_ + output.size(),
            same,       replaced_input_end_};
    // Identity chunks merge, so a flow that is never rewritten keeps one.
    if (!chunks_.empty() && chunks_.back().identity() && c.identity()) {
        chunks_.back().in_end = c.in_end;
        chunks_.back().out_end = c.out_end;
    } else if (c.in_end != c.in_begin || c.out_end != c.out_begin) {
        chunks_.push_back(c);
        take_room(sizeof(Chunk));
    }
    if (!same) {
        append_within_room(replaced_input_, input);
        replaced_input_end_ += input.size();
    }
    append_within_room(out_retained_, output);
    in_mapped_ += input.size();
    out_next_ += output.size();
}

void StreamDirection::feed(StreamTransform::Push push, std::span<const uint8_t> fresh) {
    // New bytes go to the inspector straight from the packet when nothing is
    // pending before them; only what it leaves unmapped is copied.
    if (!pending_.empty() && !fresh.empty()) {
        append_within_room(pending_, fresh);
        fresh = {};
    }
    bool from_packet = pending_.empty();
    std::span<const uint8_t> input =
        from_packet ? fresh : std::span<const uint8_t>(pending_.data(), pending_.size());
    if (input.empty()) return;
    if (relaying_ && push == StreamTransform::Push::More &&
        relay_room_with(input.size()) < std::min<size_t>(kRelayLowWater, limits_.max_relay / 8)) {
        // The relay buffer is (nearly) full: a sender does not send into a
        // window smaller than a segment, so nothing would come that could
        // stall the stream later. The inspector must let something go now.
        ++counters_.stalls;
        push = StreamTransform::Push::Stalled;
    }
    Sink sink(*this, input);
    transform_.on_bytes(in_mapped_, input, push, sink);
    size_t consumed = sink.consumed();
    // The contract: at the end of the stream every byte is mapped; beyond the
    // pending limit the oldest bytes go on unchanged. Both are counted.
    // An inspector that relays keeps what it must (an object awaiting its
    // verdict) even at the end: the store is bounded by the window the sender
    // was offered, the FIN waits behind the bytes, and redrive() shows them
    // again once the verdict is in.
    size_t left = input.size() - consumed;
    size_t limit = relaying_ ? limits_.max_relay : limits_.max_pending;
    size_t forced = push == StreamTransform::Push::End ? left : left > limit ? left - limit : 0;
    if (relaying_ && relay_requested_) forced = 0;
    if (closed_) forced = 0;
    if (forced > 0) {
        ++counters_.forced_maps;
        std::span<const uint8_t> rest = input.subspan(consumed, forced);
        append_output(rest, rest, true);
        consumed += forced;
    }
    if (from_packet)
        append_within_room(pending_, input.subspan(consumed));
    else
        pending_.drop_front(consumed);
    // What the inspector mapped now lives in the output: where the room
    // cannot hold both, the pending buffer gives its spare back at once.
    if (int64_t(pending_.capacity() - pending_.size()) > room()) shrink_within_room(pending_);
    give_back_output_spare();
}

bool StreamDirection::agrees_with_inspected(uint64_t begin, std::span<const uint8_t> bytes) const {
    uint64_t end = begin + bytes.size();
    auto differs = [&](uint64_t from, uint64_t to, const uint8_t* inspected) {
        return std::memcmp(inspected, bytes.data() + (from - begin), size_t(to - from)) != 0;
    };
    if (end > in_mapped_) {
        uint64_t from = std::max(begin, in_mapped_);
        if (differs(from, end, pending_.data() + (from - in_mapped_))) return false;
        end = from;
    }
    // Mapped input: a replaced chunk's own input, an unchanged chunk's output
    // (gone once acknowledged: the receiver has those bytes, and nothing
    // retransmitted can change what it got).
    auto it = std::upper_bound(chunks_.begin(), chunks_.end(), begin,
                               [](uint64_t v, const Chunk& c) { return v < c.in_end; });
    for (; it != chunks_.end() && it->in_begin < end; ++it) {
        uint64_t from = std::max(begin, it->in_begin);
        uint64_t to = std::min(end, it->in_end);
        if (from >= to) continue;  // an insertion: no input of its own
        if (it->identity()) {
            uint64_t out_from = it->out_begin + (from - it->in_begin);
            if (out_from < out_acked_) {
                from += std::min(out_acked_ - out_from, to - from);
                out_from = out_acked_;
            }
            if (from < to && differs(from, to, out_retained_.data() + (out_from - out_acked_)))
                return false;
        } else {
            uint64_t at = it->replaced_at + (from - it->in_begin) - replaced_input_begin_;
            if (differs(from, to, replaced_input_.data() + at)) return false;
        }
    }
    return true;
}

uint64_t StreamDirection::in_to_out_floor(uint64_t in) const {
    if (in >= in_mapped_) return out_next_;
    if (chunks_.empty() || in < chunks_.front().in_begin) return out_acked_;
    auto it = std::upper_bound(chunks_.begin(), chunks_.end(), in,
                               [](uint64_t v, const Chunk& c) { return v < c.in_end; });
    if (it == chunks_.end()) return out_next_;
    return it->identity() ? it->out_begin + (in - it->in_begin) : it->out_begin;
}

uint64_t StreamDirection::out_to_in(uint64_t out) const {
    if (out >= out_next_) return in_mapped_;
    if (chunks_.empty()) return in_mapped_;
    // At the front's start the search below goes on past chunks without
    // output (a deleted range): their input is delivered with nothing.
    if (out < chunks_.front().out_begin) return chunks_.front().in_begin;
    auto it = std::upper_bound(chunks_.begin(), chunks_.end(), out,
                               [](uint64_t v, const Chunk& c) { return v < c.out_end; });
    if (it == chunks_.end()) return in_mapped_;
    if (out == it->out_begin) return it->in_begin;
    // Inside a replaced range nothing of the original counts as delivered
    // until all of its replacement is.
    return it->identity() ? it->in_begin + (out - it->out_begin) : it->in_begin;
}

std::span<const uint8_t> StreamDirection::output_view(uint64_t begin, uint64_t end) const {
    begin = std::max(begin, out_acked_);
    end = std::min(end, out_next_);
    if (begin >= end) return {};
    return {out_retained_.data() + (begin - out_acked_), size_t(end - begin)};
}

SegmentVerdict StreamDirection::answer(uint64_t in_begin, uint64_t in_end, bool brought_new,
                                       bool fin) {
    // From input nfqscand acknowledged on the receiver's behalf on, the
    // sender sends nothing older again: the answer starts with all output
    // the receiver still lacks.
    uint64_t out_begin =
        in_begin <= in_absorbed_ ? out_acked_ : std::max(in_to_out_floor(in_begin), out_acked_);
    uint64_t out_end;
    if (brought_new || in_end >= in_mapped_) {
        // Everything produced so far and not yet sent goes with this segment,
        // also output the inspector mapped now for bytes of earlier segments.
        out_begin = std::max(std::min(out_begin, out_sent_), out_acked_);
        out_end = out_next_;
    } else {
        // A retransmission gets the output of the range it covers; a
        // replaced range is always sent whole.
        auto it = std::upper_bound(chunks_.begin(), chunks_.end(), in_end - 1,
                                   [](uint64_t x, const Chunk& c) { return x < c.in_end; });
        out_end = it == chunks_.end() ? out_next_
                  : it->identity()    ? it->out_begin + (in_end - it->in_begin)
                                      : it->out_end;
    }
    out_end = std::max(out_end, out_begin);
    SegmentVerdict v;
    v.seq = out_seq(out_begin);
    v.out_begin = out_begin;
    v.out_end = std::min(out_end, out_next_);
    if (v.out_end <= v.out_begin && !brought_new && in_end > in_begin && out_acked_ > 0 &&
        !fin_seen_) {
        // The sender retransmits what the receiver already acknowledged: the
        // ACK that said so was lost. An empty segment would draw no answer;
        // the last acknowledged byte again, like any duplicate, makes the
        // receiver repeat its ACK at once.
        v.seq = out_seq(out_acked_ - 1);
        v.out_begin = v.out_end = out_acked_;
        v.repeat_acked_byte = true;
        return v;
    }
    v.out_end = std::max(v.out_end, v.out_begin);
    out_sent_ = std::max(out_sent_, v.out_end);
    out_sent_max_ = std::max(out_sent_max_, out_sent_);
    // The FIN follows the last output byte, so it travels only on a segment
    // whose payload ends there.
    v.fin = fin && fin_seen_ && v.out_end == out_next_;
    return v;
}

SegmentVerdict StreamDirection::on_segment(uint32_t seq, std::span<const uint8_t> payload, bool fin,
                                           uint64_t token, std::vector<SegmentVerdict>& released) {
    if (!started_) start(seq);
    if (closed_) {
        SegmentVerdict v;
        v.kind = SegmentVerdict::Kind::Drop;
        return v;
    }
    uint64_t begin = unwrap(seq, in_next_);
    if (fin_seen_ && begin + payload.size() > in_next_) {
        // Nothing follows a FIN: the receiver drops bytes beyond it, so the
        // inspector must not be shown them (it was told the stream ended).
        payload = payload.first(begin < in_next_ ? size_t(in_next_ - begin) : 0);
        fin = false;
    }
    uint64_t end = begin + payload.size();

    if (begin > in_next_) {
        // Out of order: hold it (no verdict) until the gap fills.
        bool pressure = limits_.refuse_holding && *limits_.refuse_holding;
        bool full = int64_t(payload.size() + held_cost()) > room();
        if (full) ++counters_.memory_refused;
        if (pressure || full || held_bytes_ + payload.size() > limits_.max_held ||
            held_.count(begin)) {
            ++counters_.held_overflow;
            SegmentVerdict v;
            v.kind = SegmentVerdict::Kind::Drop;
            return v;
        }
        held_bytes_ += payload.size();
        take_room(payload.size() + held_cost());
        held_.emplace(begin,
                      Held{token, std::vector<uint8_t>(payload.begin(), payload.end()), fin});
        ++counters_.held;
        SegmentVerdict v;
        v.kind = SegmentVerdict::Kind::Hold;
        v.token = token;
        return v;
    }

    // Bytes already seen: compare them with what was inspected.
    uint64_t old_end = std::min(end, in_next_);
    if (begin < old_end) {
        ++counters_.retransmitted;
        if (!agrees_with_inspected(begin, payload.first(size_t(old_end - begin))))
            ++counters_.conflicts;
    }

    bool new_bytes = end > in_next_;
    if (new_bytes && !make_room_for_input(size_t(end - in_next_), released)) {
        ++counters_.memory_refused;
        SegmentVerdict v;
        v.kind = SegmentVerdict::Kind::Drop;
        return v;
    }
    if (new_bytes && relaying_ && end > std::max<uint64_t>(window_edge_, in_next_ + relay_room())) {
        // More than the window nfqscand offered: the sender sends it again.
        // The inspector must let go of what it stores, or nothing moves.
        ++counters_.relay_full;
        ++counters_.stalls;
        feed(StreamTransform::Push::Stalled);
        SegmentVerdict v;
        v.kind = SegmentVerdict::Kind::Drop;
        return v;
    }
    std::span<const uint8_t> fresh;
    if (new_bytes) {
        ++counters_.in_order;
        fresh = payload.subspan(size_t(in_next_ - begin));
        in_next_ += fresh.size();
    }
    bool fin_now = fin && end == in_next_ && !fin_seen_;
    if (fin_now) fin_seen_ = true;

    if (new_bytes) stall_retransmissions_ = 0;
    // The receiver has all the output, yet the sender retransmits up to its
    // newest byte, part of which the inspector keeps (a possible token
    // start), and sends nothing new: it waits for those bytes to be
    // acknowledged.
    bool waits_on_kept =
        !new_bytes && !relaying_ && end == in_next_ && end > in_mapped_ && out_acked_ == out_next_;
    must_ack_sender_ = false;
    if (waits_on_kept && !held_.empty() && in_absorbed_ < in_next_) {
        // The segment after them, which would let the inspector go on, was
        // lost and later ones wait behind the gap: after a timeout a sender
        // resends only its oldest unacknowledged bytes and waits, at
        // exponential backoff. A SACK block cannot say nfqscand has them
        // (Linux ignores one that starts at its cumulative acknowledgement),
        // so nfqscand acknowledges them itself and owes their delivery: they
        // go out with the gap's bytes, and again with any retransmission the
        // sender makes from there (see answer()).
        in_absorbed_ = in_next_;
        must_ack_sender_ = true;
        ++counters_.tails_acknowledged;
    }
    if (fin_seen_) {
        feed(StreamTransform::Push::End, fresh);
    } else if (new_bytes) {
        feed(StreamTransform::Push::More, fresh);
    } else if (waits_on_kept && held_.empty() &&
               ++stall_retransmissions_ >= kStallRetransmissions) {
        // Nothing is lost after those bytes: the inspector must let them go.
        // Once is not proof (the next segment may be on its way); twice is.
        ++counters_.stalls;
        feed(StreamTransform::Push::Stalled);
    }

    SegmentVerdict v;
    if (relaying_) {
        // The engine owns the delivery: whatever the sender sent in order
        // is acknowledged to it, the output goes out through the relay.
        in_absorbed_ = in_next_;
        v.kind = SegmentVerdict::Kind::Absorb;
        v.token = token;
    } else {
        v = answer(begin, end, new_bytes || fin_now, fin);
    }

    // The gap before held segments may be filled now. One loop releases
    // them all, in order: a segment released here releases no others
    // itself, so a long run of held segments costs neither recursion depth
    // nor copies of nested lists.
    if (releasing_) return v;
    releasing_ = true;
    struct Done {
        bool& flag;
        ~Done() { flag = false; }
    } done{releasing_};
    while (!held_.empty() && held_.begin()->first <= in_next_) {
        auto node = held_.extract(held_.begin());
        Held& h = node.mapped();
        held_bytes_ -= h.bytes.size();
        give_room(h.bytes.size() + held_cost());
        SegmentVerdict r =
            on_segment(uint32_t(base_ + node.key()), h.bytes, h.fin, h.token, released);
        r.token = h.token;
        released.push_back(std::move(r));
    }
    return v;
}

uint32_t StreamDirection::translate_ack(uint32_t ack) {
    uint64_t out = unwrap(ack, out_acked_);
    bool fin = output_finished() && out == out_next_ + 1;
    // Never more than was sent (classify_ack() keeps such ACKs away; this
    // holds for every caller): output taken as acknowledged is no longer
    // retained, so it could never be repaired.
    out = std::min(out, from_syn_ ? out_sent_max_ : out_next_);
    if (fin && out != out_next_) fin = false;
    if (out > out_acked_) {
        out_acked_ = out;
        trim_acknowledged();
    }
    if (fin) {
        fin_acked_ = true;
        // The receiver has every byte and the FIN: nothing is stored here
        // any more. A relay kept its store's capacity (it refills); a closed
        // flow lingers for the closing timeout, and its empty buffers (about
        // twice its largest object) would count against memory_limit all
        // that time.
        out_retained_.keep_capacity(false);
        if (out_retained_.empty()) out_retained_.release();
        if (replaced_input_.empty()) replaced_input_.release();
        pending_.keep_capacity(false);
        if (pending_.empty()) pending_.release();
        return uint32_t(base_ + in_next_ + 1);
    }
    maybe_end_relay();
    return uint32_t(base_ + std::max(out_to_in(out), in_absorbed_));
}

void StreamDirection::start_relay() {
    if (relaying_) return;
    relaying_ = true;
    ++counters_.relays;
    out_retained_.keep_capacity(true);
    pending_.keep_capacity(true);
    // Input the sender sent in order is acknowledged by the engine from now
    // on, also what the receiver has not acknowledged yet: the relay owns
    // every unacknowledged output byte.
    in_absorbed_ = std::max(in_absorbed_, in_next_);
}

void StreamDirection::maybe_end_relay() {
    // Caught up: nothing buffered, nothing unacknowledged. With a FIN seen
    // the relay stays to the end (it delivers the FIN).
    if (!relaying_ || relay_requested_ || !pending_.empty() || !held_.empty() || fin_seen_ ||
        closed_ || out_acked_ != out_next_)
        return;
    relaying_ = false;
    out_sent_ = out_next_;
    out_retained_.keep_capacity(false);
    // The store's input buffer too: pass mode keeps little.
    pending_.keep_capacity(false);
}

void StreamDirection::redrive() {
    if (closed_ || pending_.empty()) return;
    feed(fin_seen_ ? StreamTransform::Push::End : StreamTransform::Push::More);
}

void StreamDirection::close_with(std::span<const uint8_t> bytes) {
    if (closed_) return;
    insert(bytes);
    start_relay();
    discard();
}

void StreamDirection::discard() {
    closed_ = true;
    relay_requested_ = false;
    pending_.release();
    held_.clear();
    held_bytes_ = 0;
}

void StreamDirection::release_memory() {
    discard();
    relaying_ = false;
    out_retained_.release();
    replaced_input_.release();
    replaced_input_begin_ = replaced_input_end_;
    std::deque<Chunk>().swap(chunks_);
    out_acked_ = out_sent_ = out_next_;
}

void StreamDirection::insert(std::span<const uint8_t> bytes) {
    // Nothing follows a FIN once it can have been sent: the receiver may
    // have it (and acknowledged it) already, and would drop what comes after
    // it. A FIN behind bytes still unmapped has not been sent.
    if (bytes.empty() || output_finished()) return;
    append_output({}, bytes, false);
    give_back_output_spare();
    ++counters_.rewritten;
    start_relay();
}

void StreamDirection::note_window_offered(uint64_t bytes) {
    window_edge_ =
        std::max<uint64_t>(window_edge_, std::max(out_to_in(out_acked_), in_absorbed_) + bytes);
}

size_t StreamDirection::relay_room_with(size_t unmapped) const {
    size_t used = unmapped + size_t(out_next_ - out_acked_);
    return used >= limits_.max_relay ? 0 : limits_.max_relay - used;
}

uint32_t StreamDirection::translate_sack_edge(uint32_t edge) const {
    uint64_t out = std::min(unwrap(edge, out_acked_), out_next_);
    return uint32_t(base_ + out_to_in(out));
}

uint32_t StreamDirection::translate_seq(uint32_t seq) const {
    uint64_t in = unwrap(seq, in_next_);
    // Past the FIN (which takes one sequence number in both spaces): e.g. the
    // sender's last ACK, which must land exactly after the receiver's FIN.
    if (fin_seen_ && in > in_next_) return out_seq(out_next_ + (in - in_next_));
    return out_seq(in_to_out_floor(in));
}

std::vector<std::pair<uint32_t, uint32_t>> StreamDirection::held_ranges(size_t max) const {
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (const auto& [begin, h] : held_) {
        uint64_t end = begin + h.bytes.size();
        if (!merged.empty() && begin <= merged.back().second)
            merged.back().second = std::max(merged.back().second, end);
        else
            merged.emplace_back(begin, end);
    }
    std::vector<std::pair<uint32_t, uint32_t>> blocks;
    for (auto it = merged.rbegin(); it != merged.rend() && blocks.size() < max; ++it)
        blocks.emplace_back(uint32_t(base_ + it->first), uint32_t(base_ + it->second));
    return blocks;
}

void StreamDirection::trim_acknowledged() {
    if (out_retained_.size() > out_next_ - out_acked_) {
        size_t drop = out_retained_.size() - size_t(out_next_ - out_acked_);
        last_acked_byte_ = out_retained_[drop - 1];
        out_retained_.drop_front(drop);
    }
    // Chunks wholly acknowledged go, a replaced one with its input.
    while (!chunks_.empty() && chunks_.front().out_end <= out_acked_ &&
           chunks_.front().in_end <= in_mapped_) {
        const Chunk& c = chunks_.front();
        if (!c.identity()) {
            uint64_t drop = c.replaced_at + (c.in_end - c.in_begin) - replaced_input_begin_;
            replaced_input_.drop_front(size_t(drop));
            replaced_input_begin_ += drop;
        }
        chunks_.pop_front();
    }
    give_back_spare(out_retained_);
    give_back_spare(replaced_input_);
}

bool StreamDirection::input_fits(size_t length) const {
    if (!limits_.memory_room) return true;
    const ByteQueue& to = relaying_ || !pending_.empty() ? pending_ : out_retained_;
    // Past the room nothing is taken, even into spare capacity: what an
    // inspector adds for the bytes (the ranges it rewrote, their originals)
    // would pile up.
    return room() > 0 && int64_t(to.growth_for(length)) <= room();
}

bool StreamDirection::make_room_for_input(size_t length, std::vector<SegmentVerdict>& dropped) {
    while (!input_fits(length) && !held_.empty()) {
        auto node = held_.extract(std::prev(held_.end()));
        held_bytes_ -= node.mapped().bytes.size();
        give_room(node.mapped().bytes.size() + held_cost());
        ++counters_.memory_refused;
        SegmentVerdict v;
        v.kind = SegmentVerdict::Kind::Drop;
        v.token = node.mapped().token;
        dropped.push_back(v);
    }
    return input_fits(length);
}

void StreamDirection::append_within_room(ByteQueue& q, std::span<const uint8_t> bytes) {
    size_t before = q.capacity();
    int64_t r = room();
    q.append(bytes, r > 0 ? size_t(r) : 0);
    if (q.capacity() > before)
        take_room(q.capacity() - before);
    else
        give_room(before - q.capacity());
}

void StreamDirection::shrink_within_room(ByteQueue& q) {
    size_t before = q.capacity();
    q.shrink_to_fit();
    give_room(before - q.capacity());
}

void StreamDirection::give_back_output_spare() {
    for (ByteQueue* q : {&out_retained_, &replaced_input_})
        if (int64_t(q->capacity() - q->size()) > room()) shrink_within_room(*q);
}

void StreamDirection::give_back_spare(ByteQueue& q) {
    size_t spare = q.capacity() - q.size();
    if (spare > 0 && int64_t(spare) > room() && q.size() <= spare) shrink_within_room(q);
}

size_t StreamDirection::memory_bytes() const {
    return out_retained_.capacity() + replaced_input_.capacity() + pending_.capacity() +
           held_bytes_ + chunks_.size() * sizeof(Chunk) + held_.size() * kHeldOverhead;
}

}  // namespace nfqscan
