// The TCP stream engine, one direction at a time (DESIGN.md, "The TCP stream
// engine"). It turns the sender's segments, as they arrive (lost, reordered,
// duplicated, overlapping), into strictly ordered bytes for an inspector, and
// turns what the inspector answers into the segments the receiver gets:
//
//   sender's input stream --(inspector: pass / replace / hold)--> output stream
//
// Input and output are byte streams with their own offsets; a Mapping of
// chunks (input range -> output range) ties them together. Every packet the
// sender sends is answered with the output bytes that correspond to it:
// a new in-order segment carries the output produced for it, a
// retransmission carries the retained output of the range it covers, an
// out-of-order segment is held (no verdict) until the gap before it fills.
// The receiver's ACKs and SACK blocks are translated back from output to
// input offsets before the sender sees them.
//
// Invariants (tested in tests/unit/flow/tcp_stream_test.cc):
// - the receiver only ever gets bytes of the output stream, at their output
//   offsets: never an input byte the inspector has not mapped;
// - each input byte is handed to the inspector once, in order; a
//   retransmission that disagrees with what was inspected is answered with
//   the inspected bytes (and counted as an evasion attempt);
// - the sender is never acknowledged an input byte whose output the receiver
//   has not acknowledged in full (a replaced range counts as acknowledged
//   only when all its replacement is);
// - memory is bounded: held out-of-order segments, unmapped input and a
//   relay's store each have a cap (StreamLimits, [stream] in the config);
//   output retained until acknowledged is bounded by the sender's window in
//   pass mode and by the relay's store while relaying; memory_bytes() counts
//   it all for `nfqscanctl status`, capacities included;
// - all streams of an owner keep within its memory room
//   (StreamLimits::memory_room) at every packet, but for what an inspector
//   adds beyond the bytes of the last packet taken (a grown rewrite, the
//   original a replacement keeps, the chunks, an insertion): counted, not
//   refused (tests/unit/flow/tcp_stream_test.cc and relay_test.cc,
//   StreamMemoryCap and RelayMemoryCap).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace nfqscan {

// Sequence-space helpers (RFC 1982 serial arithmetic on 32 bits).
inline bool seq_before(uint32_t a, uint32_t b) {
    return int32_t(a - b) < 0;
}

// What an inspector answers for the input bytes it is shown.
class StreamSink {
  public:
    virtual ~StreamSink() = default;
    // The next `length` input bytes go to the receiver unchanged.
    virtual void pass(size_t length) = 0;
    // The next `length` input bytes (0: an insertion) become `bytes`.
    virtual void replace(size_t length, std::span<const uint8_t> bytes) = 0;
    // Store and forward from here on (true) or from the next mapped byte on
    // no longer (false): the engine acknowledges the sender itself, so the
    // inspector may keep up to StreamLimits::max_relay bytes unmapped, and it
    // delivers the output to the receiver itself.
    virtual void relay(bool on) = 0;
};

// An inspector of one direction's ordered bytes.
class StreamTransform {
  public:
    enum class Push : uint8_t {
        More,     // more bytes may follow: unmapped bytes may stay pending
        Stalled,  // the sender is waiting (it retransmits): map what you can
        End,      // FIN: every pending byte must be mapped now
    };
    virtual ~StreamTransform() = default;
    // `pending` holds every input byte not yet mapped, from input offset
    // `offset`; the inspector maps a prefix of it through `sink`. Bytes it
    // leaves unmapped are shown again, with any new ones, on the next call.
    virtual void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                          StreamSink& sink) = 0;
};

struct StreamLimits {
    size_t max_held = 4u << 20;     // bytes of out-of-order segments held back
    size_t max_pending = 1u << 20;  // input bytes the inspector may leave unmapped
    // While relaying: input bytes unmapped plus output not yet acknowledged.
    // The sender is offered only what fits (the window of the ACKs nfqscand
    // sends it); at the limit the inspector is told the stream is stalled.
    size_t max_relay = 64u << 20;
    // Set (by the owner of many streams) while their memory is over its cap
    // or their held packets fill half the kernel queue: out-of-order segments
    // are then dropped instead of held.
    const bool* refuse_holding = nullptr;
    // Set by the same owner: the bytes all its streams may still grow by
    // under their hard memory cap ([stream] memory_limit), counted as
    // memory_bytes() counts them (buffer capacities); negative once they
    // are over it. Each stream takes what it grows by from it, and gives
    // back what it frees, as it happens (the owner sets it again from their
    // sum after each call). New input is taken only if the buffer it goes
    // to can hold it without growing past the room (held out-of-order
    // segments are dropped to make room for bytes in order), and buffers
    // grow by doubling only within the room: otherwise the input is
    // dropped, neither inspected nor acknowledged, and the sender sends it
    // again once acknowledgements have freed memory. Past the room, buffers
    // give their spare capacity back. What an inspector adds beyond the
    // bytes it was shown is counted, not refused (see the invariants above).
    int64_t* memory_room = nullptr;
    // What the owner keeps for each held segment besides the engine (its
    // record of the held packet): counted against memory_room with it.
    size_t held_overhead = 0;
};

struct StreamCounters {
    uint64_t in_order = 0;       // segments that brought new bytes in order
    uint64_t retransmitted = 0;  // segments wholly or partly already seen
    uint64_t held = 0;           // segments held out of order
    uint64_t held_overflow = 0;  // out-of-order segments dropped: hold limit reached
    uint64_t conflicts = 0;      // retransmitted bytes that differed from the inspected ones
    uint64_t rewritten = 0;      // replace() calls that changed bytes
    uint64_t forced_maps = 0;    // pending bytes passed because max_pending was reached
    uint64_t stalls = 0;         // the sender waited on held bytes: the inspector had to map them
    uint64_t relays = 0;         // times the direction went into store-and-forward
    uint64_t relay_full = 0;     // segments dropped: the relay buffer was full
    uint64_t tails_acknowledged = 0;  // kept input before a gap acknowledged by nfqscand
    uint64_t memory_refused = 0;      // segments dropped: the streams' memory cap was reached
};

// The answer for one segment of the sender.
struct SegmentVerdict {
    enum class Kind : uint8_t {
        Forward,  // send `payload` (possibly empty) at output sequence `seq`
        Hold,     // keep the packet: it is answered later, by release_held()
        Drop,     // drop it (hold overflow; the sender will retransmit)
        Absorb,   // relaying: the engine took the bytes; drop the packet and
                  // acknowledge the sender (acknowledged_seq()) on the receiver's behalf
    };
    Kind kind = Kind::Forward;
    uint32_t seq = 0;  // output-space sequence number for the packet
    // The payload: output bytes [out_begin, out_end), or (repeat_acked_byte)
    // the last byte the receiver acknowledged. StreamDirection::payload()
    // reads them; no copy is made on the per-packet path.
    uint64_t out_begin = 0;
    uint64_t out_end = 0;
    bool repeat_acked_byte = false;
    bool fin = false;    // the packet's FIN stays (only once all input before it is mapped)
    uint64_t token = 0;  // for Hold: identifies the segment in release_held()
};

// Bytes appended at the back and released from the front, contiguous in
// memory. An append is a memcpy into spare room (no zero-fill, no generic
// insert: the per-packet path appends a few bytes per token it rewrites);
// the consumed front is reclaimed when it outgrows what is still held.
class ByteQueue {
  public:
    ByteQueue() = default;
    ByteQueue(const ByteQueue&) = delete;
    ByteQueue& operator=(const ByteQueue&) = delete;

    size_t size() const { return end_ - head_; }
    bool empty() const { return size() == 0; }
    uint8_t operator[](size_t i) const { return bytes_[head_ + i]; }
    const uint8_t* data() const { return bytes_.get() + head_; }
    // `room`: how far the capacity should grow (an owner's memory cap): by
    // doubling within it. Bytes that need more than the room grow it by
    // half (appends stay amortised O(1) when an inspector's output runs
    // past the room): the owner gives that spare back afterwards.
    void append(std::span<const uint8_t> b, size_t room = SIZE_MAX) {
        if (b.empty()) return;
        if (capacity_ - end_ < b.size()) make_room(b.size(), room);
        std::memcpy(bytes_.get() + end_, b.data(), b.size());
        end_ += b.size();
    }
    void drop_front(size_t n) {
        head_ += std::min(n, size());
        if (head_ == end_) {
            head_ = end_ = 0;
            if (!keep_) release_if_idle();
        }
    }
    // Everything goes, the memory too.
    void release() {
        bytes_.reset();
        capacity_ = head_ = end_ = 0;
    }
    // Idle: a large buffer goes back (many idle flows must stay cheap).
    void release_if_idle() {
        if (empty() && capacity_ > kKeepCapacity) {
            bytes_.reset();
            capacity_ = 0;
        }
    }
    // While set, an empty buffer keeps its memory: a relay store fills and
    // empties again and again, and a large buffer given back is a fresh
    // mapping whose every page faults in, zeroed, on the next fill.
    void keep_capacity(bool keep) {
        keep_ = keep;
        if (!keep_) release_if_idle();
    }
    size_t capacity() const { return capacity_; }
    // The capacity appending `n` bytes adds at least (none if they fit,
    // the consumed front reused).
    size_t growth_for(size_t n) const {
        size_t spare = capacity_ - size();
        return n > spare ? n - spare : 0;
    }
    // The capacity shrinks to what is held (nothing: released).
    void shrink_to_fit() {
        if (size() == capacity_) return;
        if (empty()) {
            release();
            return;
        }
        move_to(size());
    }

  private:
    static constexpr size_t kKeepCapacity = 256 << 10;
    bool keep_ = false;
    void make_room(size_t more, size_t room) {
        size_t held = size();
        // Doubling keeps appends amortised O(1); within a tight room the
        // buffer grows by what the room allows.
        size_t doubled = std::max({capacity_ * 2, held + more, size_t(4096)});
        size_t capacity = room >= doubled - capacity_ ? doubled
                          : held + more <= capacity_ + room
                              ? capacity_ + room
                              : std::max(held + more, capacity_ + capacity_ / 2);
        if (head_ > 0 && capacity_ - held >= more && (head_ >= held || capacity < doubled)) {
            // The consumed front makes room: move the rest down (always when
            // most of the buffer is consumed front, else rather than grow
            // past the room).
            std::memmove(bytes_.get(), data(), held);
            head_ = 0;
            end_ = held;
        } else {
            move_to(capacity);
        }
    }
    // The held bytes into a new buffer of `capacity` (at least size()).
    void move_to(size_t capacity) {
        size_t held = size();
        auto moved = std::make_unique_for_overwrite<uint8_t[]>(capacity);
        if (held) std::memcpy(moved.get(), data(), held);
        bytes_ = std::move(moved);
        capacity_ = capacity;
        head_ = 0;
        end_ = held;
    }

    std::unique_ptr<uint8_t[]> bytes_;
    size_t capacity_ = 0;
    size_t head_ = 0;
    size_t end_ = 0;
};

// One direction of a TCP connection: the sender's input and the receiver's
// output. Not thread-safe; owned by the flow's worker.
class StreamDirection {
  public:
    StreamDirection(StreamTransform& transform, StreamLimits limits);

    // The sender's SYN (or the first segment of a flow picked up mid-stream):
    // input offset 0 is the byte at `first_data_seq`.
    void start(uint32_t first_data_seq, bool from_syn = false);
    bool started() const { return started_; }
    // Started at the SYN: the engine has seen every byte of the direction,
    // so it knows what the receiver can have been sent.
    bool from_syn() const { return from_syn_; }
    // The sequence number of input offset 0 (the SYN's plus one, from_syn()).
    uint32_t first_seq() const { return base_; }

    // Where an acknowledgement number from the receiver lies (RFC 5961 5.2):
    // within what was sent to it and at most `max_window` (the largest
    // window it offered) behind what it acknowledged already, or not. Only
    // a direction started at its SYN can tell: picked up mid-stream, the
    // receiver may have bytes the engine never saw (always Acceptable).
    enum class AckRange : uint8_t { Acceptable, Ahead, Behind };
    AckRange classify_ack(uint32_t ack, uint64_t max_window) const;
    // Whether `length` bytes at `seq` of the sender lie within what the
    // receiver offered (RFC 9293 3.10.7.4): no further than `window` (the
    // largest window it offered) plus `slack` past what the sender was told
    // is acknowledged, nor more than that behind it. Bytes outside are not
    // the receiver's to take, so they are not the inspector's to see, and
    // they would be kept without bound. While relaying, the relay's own
    // window rules (note_window_offered()).
    bool within_window(uint32_t seq, size_t length, uint64_t window, uint64_t slack) const;

    // A data (or FIN) segment from the sender. `token` identifies it if it has
    // to be held. Segments released from the hold by this call are appended
    // to `released` with their tokens.
    // The answer's payload may be longer than the segment (a rewrite grew
    // it): the caller sends what does not fit as further segments.
    SegmentVerdict on_segment(uint32_t seq, std::span<const uint8_t> payload, bool fin,
                              uint64_t token, std::vector<SegmentVerdict>& released);

    // The receiver acknowledged output up to `ack` (output sequence space).
    // Returns the acknowledgement number the sender must see.
    uint32_t translate_ack(uint32_t ack);
    // An edge of a SACK block from the receiver (output space) -> input space.
    uint32_t translate_sack_edge(uint32_t edge) const;
    // A sequence number of the sender (e.g. of a RST) -> output space.
    uint32_t translate_seq(uint32_t seq) const;

    // The acknowledgement number the sender has been told (input space).
    uint32_t acknowledged_seq() const {
        if (fin_acked_) return uint32_t(base_ + in_next_ + 1);
        return uint32_t(base_ + std::max(out_to_in(out_acked_), in_absorbed_));
    }
    // Out-of-order data held, as [begin, end) sequence ranges of the sender,
    // merged, the highest first (at most `max`): SACK blocks for the sender.
    std::vector<std::pair<uint32_t, uint32_t>> held_ranges(size_t max) const;
    // The last segment took input the sender must now be acknowledged for
    // (see on_segment(): a kept tail before a gap).
    bool must_ack_sender() const { return must_ack_sender_; }
    // nfqscand acknowledged input whose output the receiver has not
    // acknowledged yet: without nfqscand, nobody would deliver it.
    bool owes_delivery() const { return !fin_acked_ && in_absorbed_ > out_to_in(out_acked_); }

    // -- Store and forward --------------------------------------------------
    // While relaying, every in-order segment of the sender is absorbed: the
    // engine acknowledges it and delivers the output itself (FlowStream's
    // RelaySender), out of output_bytes(). Relaying ends once the inspector
    // turned it off, everything is mapped and the receiver has acknowledged
    // all output; the direction is then back to answering packets, with the
    // offset the relay left. A FIN is acknowledged to the sender only by the
    // receiver's ACK of the FIN that follows the output.
    bool relaying() const { return relaying_; }
    // Shows the inspector its pending bytes again (its scan verdict came
    // after the sender's last segment: nothing else would). Push is End once
    // the FIN was seen.
    void redrive();
    // The end of this direction: `bytes` follow the output mapped so far,
    // then a FIN; input not mapped yet and all later input is dropped. The
    // direction relays until the receiver has acknowledged it all.
    void close_with(std::span<const uint8_t> bytes);
    // No more input is taken, nor delivered (the peer it was for is reset).
    void discard();
    // discard(), and the output not delivered yet goes too: the peers were
    // reset, nothing of this direction is sent any more.
    void release_memory();
    bool closed() const { return closed_; }
    // Own bytes (e.g. a protocol reply) at the current output position,
    // delivered by the relay. Offsets after them shift like a rewrite's.
    // Ignored once the sender's FIN was seen: nothing follows a FIN.
    void insert(std::span<const uint8_t> bytes);
    // Bytes the sender may still send before the relay buffer is full.
    size_t relay_room() const { return relay_room_with(pending_.size()); }
    // The sender was offered a window of `bytes` from what it has been told
    // is acknowledged. A window is never taken back (RFC 9293 3.8.6): what
    // the sender sends up to that edge is taken even if the store filled up
    // meanwhile (a replacement grew the output), at most one window over
    // max_relay; dropping it would look like loss to the sender.
    void note_window_offered(uint64_t bytes);
    uint64_t output_acked() const { return out_acked_; }
    uint64_t output_end() const { return out_next_; }
    uint64_t output_sent() const { return out_sent_; }
    // The relay handed output up to `end` to the receiver.
    void note_sent(uint64_t end) {
        out_sent_ = std::max(out_sent_, std::min(end, out_next_));
        out_sent_max_ = std::max(out_sent_max_, out_sent_);
    }
    // A verdict's output from `offset` on was not sent after all (it waits
    // for the next segment, which starts with it).
    void unsend(uint64_t offset) { out_sent_ = std::max(out_acked_, std::min(offset, out_sent_)); }
    uint32_t output_seq(uint64_t offset) const { return out_seq(offset); }
    std::vector<uint8_t> output_bytes(uint64_t begin, uint64_t end) const {
        std::span<const uint8_t> view = output_view(begin, end);
        return {view.begin(), view.end()};
    }
    // The retained output in [begin, end) (clipped to what is retained),
    // valid until this direction next changes: a segment, an ACK, an insert.
    // Acknowledged output is not retained: a view asked from before
    // output_acked() starts there, so a caller that sends it computes the
    // sequence number from max(begin, output_acked()).
    std::span<const uint8_t> output_view(uint64_t begin, uint64_t end) const;
    // The bytes a verdict of this direction carries, valid as long as
    // output_view()'s.
    std::span<const uint8_t> payload(const SegmentVerdict& v) const {
        if (v.repeat_acked_byte) return {&last_acked_byte_, 1};
        return output_view(v.out_begin, v.out_end);
    }
    // The sender's FIN was seen and all input before it is mapped: a FIN
    // follows the last output byte.
    bool output_finished() const { return closed_ || (fin_seen_ && pending_.empty()); }
    bool fin_acknowledged() const { return fin_acked_; }
    // The receiver's next expected byte that nfqscand knows of.
    uint64_t input_next() const { return in_next_; }
    uint64_t input_mapped() const { return in_mapped_; }
    size_t held_segments() const { return held_.size(); }
    size_t held_bytes() const { return held_bytes_; }

    const StreamCounters& counters() const { return counters_; }
    size_t memory_bytes() const;
    // Output offset minus input offset at the front: what rewriting has
    // shifted so far (for status and tests).
    int64_t shift() const { return int64_t(out_next_) - int64_t(in_mapped_); }

  private:
    struct Chunk {
        uint64_t in_begin, in_end;
        uint64_t out_begin, out_end;
        bool same;             // output bytes equal the input bytes
        uint64_t replaced_at;  // !same: where its input starts in replaced_input_
        bool identity() const { return same; }
    };
    class Sink;
    // The relay's room with `unmapped` input bytes stored (pending_, or a
    // packet's bytes about to be).
    size_t relay_room_with(size_t unmapped) const;
    struct Held {
        uint64_t token;
        std::vector<uint8_t> bytes;
        bool fin;
    };
    // What a held segment costs besides its bytes (its node in held_).
    static constexpr size_t kHeldOverhead = sizeof(Held) + 48;

    uint64_t unwrap(uint32_t seq, uint64_t near) const;
    uint32_t out_seq(uint64_t out_offset) const { return uint32_t(base_ + out_offset); }
    uint64_t in_to_out_floor(uint64_t in) const;
    uint64_t out_to_in(uint64_t out) const;
    // Shows the inspector the pending input followed by `fresh` (new bytes,
    // already counted in in_next_).
    void feed(StreamTransform::Push push, std::span<const uint8_t> fresh = {});
    void append_output(std::span<const uint8_t> input, std::span<const uint8_t> output, bool same);
    // Whether `bytes` at input offset `begin` (already seen) agree with what
    // the inspector was shown, as far as that is still retained.
    bool agrees_with_inspected(uint64_t begin, std::span<const uint8_t> bytes) const;
    SegmentVerdict answer(uint64_t in_begin, uint64_t in_end, bool brought_new, bool fin);
    void trim_acknowledged();
    // -- The owner's memory cap (StreamLimits::memory_room) --
    int64_t room() const { return limits_.memory_room ? *limits_.memory_room : INT64_MAX; }
    // The streams grew (shrank) by `bytes`: the room shrinks (grows) by as much.
    void take_room(size_t bytes) {
        if (limits_.memory_room) *limits_.memory_room -= int64_t(bytes);
    }
    void give_room(size_t bytes) {
        if (limits_.memory_room) *limits_.memory_room += int64_t(bytes);
    }
    // A held segment's cost besides its bytes, here and in the owner.
    size_t held_cost() const { return kHeldOverhead + limits_.held_overhead; }
    // Whether `length` new input bytes fit: the buffer they go to (the
    // pending input while the inspector keeps bytes or relays, else the
    // output) holds them without growing past the room.
    bool input_fits(size_t length) const;
    // input_fits(), after dropping held segments (the furthest first) that
    // stand in the way: the bytes in order are what lets the stream move, as
    // Linux prunes its out-of-order queue under memory pressure. Their
    // verdicts (Drop) go to `dropped`.
    bool make_room_for_input(size_t length, std::vector<SegmentVerdict>& dropped);
    void append_within_room(ByteQueue& q, std::span<const uint8_t> bytes);
    void shrink_within_room(ByteQueue& q);
    // Spare capacity (a relay store's kept buffer, a buffer grown by
    // doubling, a front that acknowledgements consumed) goes back once the
    // room could not hold as much and it is at least half the buffer, so
    // that delivered bytes free memory for other streams too (this one's
    // next input reuses it anyway: input_fits() counts it).
    // Copying what is held to do so costs at most what is given back.
    void give_back_spare(ByteQueue& q);
    // After output was made (by the inspector, an insertion): spare capacity
    // that growing past the room left goes back at once.
    void give_back_output_spare();
    void start_relay();
    void maybe_end_relay();

    StreamTransform& transform_;
    StreamLimits limits_;
    bool started_ = false;
    uint32_t base_ = 0;  // sequence number of input and output offset 0

    uint64_t in_next_ = 0;                // next input byte expected in order
    uint64_t in_mapped_ = 0;              // input bytes mapped to output so far
    uint64_t out_next_ = 0;               // next output byte
    uint64_t out_acked_ = 0;              // output the receiver acknowledged
    uint64_t out_sent_ = 0;               // output handed to the receiver at least once
    uint64_t out_sent_max_ = 0;           // the highest out_sent_ ever (unsend() lowers out_sent_)
    bool from_syn_ = false;               // start() at the SYN
    uint8_t last_acked_byte_ = 0;         // to draw a repeated ACK from the receiver
    bool fin_seen_ = false;               // FIN consumed in order (one sequence number)
    uint32_t stall_retransmissions_ = 0;  // retransmissions of the newest bytes, none new since
    bool fin_acked_ = false;              // the receiver acknowledged the output's FIN
    bool relaying_ = false;               // store and forward: the engine delivers the output
    bool relay_requested_ = false;        // the inspector wants it (relaying_ ends after)
    bool closed_ = false;                 // close_with(): output ends, input is dropped
    bool releasing_ = false;              // on_segment() is releasing held segments
    uint64_t in_absorbed_ = 0;            // input acknowledged to the sender by the engine
    bool must_ack_sender_ = false;        // in_absorbed_ just moved in pass mode
    uint64_t window_edge_ = 0;            // input offset the sender may send up to (relay)

    std::deque<Chunk> chunks_;  // contiguous mapping of unacknowledged ranges
    ByteQueue pending_;         // input [in_mapped_, in_next_)
    // The input of the replaced chunks still in chunks_, in order, to judge
    // retransmissions against (an unchanged chunk's input is its output,
    // retained anyway). Positions count from the flow's start.
    ByteQueue replaced_input_;
    uint64_t replaced_input_begin_ = 0;  // position of replaced_input_[0]
    uint64_t replaced_input_end_ = 0;    // position of the next byte appended
    ByteQueue out_retained_;             // output [out_acked_, out_next_)
    std::map<uint64_t, Held> held_;      // out-of-order segments by input offset
    size_t held_bytes_ = 0;
    StreamCounters counters_;
};

}  // namespace nfqscan
