// One StreamDirection between a sender that sends arbitrary segments (any
// offset, length, FIN, sometimes bytes that disagree with what it sent
// before) and a receiver that acknowledges what it got, with a transform
// that passes, replaces, keeps and relays as the input says. Checked after
// every operation (tcp_stream.h states them):
// - the receiver is only ever sent output bytes at their output offsets,
//   the bytes the transform produced (plus what the engine passed on for it);
// - the transform is shown each input byte once, in order: a later call
//   starts where the mapped input ends and shows the kept bytes again;
// - the sender is never acknowledged input whose output the receiver has not
//   acknowledged, unless the engine says it owes that delivery;
// - held, pending and relayed bytes stay within StreamLimits.
//
// Input layout (see make_corpus.py): u32 ISN (its low bit: a hard memory
// cap, StreamLimits::memory_room), u8 limits, then operations,
// each an op byte (low 2 bits: kind) and its arguments:
//   0 segment:  u16 delta (input offset = input_next - 2048 + delta),
//               u16 length (mod 4096); op bit 4: FIN, bit 5: bytes from the
//               fuzz input instead of the sender's stream
//   1 ack:      u16 n: the receiver acknowledges up to n more output bytes
//               (0xffff: also the FIN, when it has it)
//   2 deliver:  the relay sends the receiver up to u16 bytes of its output
//   3 insert:   u8 length, then that many bytes: StreamDirection::insert()
// The transform reads its decisions from the same input when it is called:
// u8 action (low 3 bits) + u8 length; when the input is exhausted it passes
// everything and relaying ends.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "nfqscan/tcp_stream.h"

namespace {

using nfqscan::SegmentVerdict;
using nfqscan::StreamDirection;
using nfqscan::StreamLimits;
using nfqscan::StreamSink;
using nfqscan::StreamTransform;
using nfqscan::fuzz::FuzzInput;

uint8_t sender_byte(uint64_t offset) {
    return uint8_t(offset * 131 + (offset >> 8) + 7);
}

// One range of the mapping as the transform (or the engine's forced pass)
// made it.
struct Mapped {
    uint64_t in_begin, in_end, out_begin, out_end;
    bool same;
};

// What the transform and the engine produced: the expected output stream.
struct Expected {
    std::vector<uint8_t> output;
    std::vector<Mapped> mapping;
    uint64_t in_mapped = 0;

    void add(std::span<const uint8_t> input, std::span<const uint8_t> out, bool same) {
        Mapped m{in_mapped, in_mapped + input.size(), output.size(), output.size() + out.size(),
                 same};
        if (m.in_begin != m.in_end || m.out_begin != m.out_end) mapping.push_back(m);
        output.insert(output.end(), out.begin(), out.end());
        in_mapped += input.size();
    }
    // The output offset up to which the receiver must have acknowledged
    // before input offset `in` may be acknowledged to the sender.
    uint64_t output_needed_for(uint64_t in) const {
        if (in == 0) return 0;
        auto it = std::upper_bound(mapping.begin(), mapping.end(), in - 1,
                                   [](uint64_t v, const Mapped& m) { return v < m.in_end; });
        if (it == mapping.end()) return output.size();
        // Insertions before the range (no input) are needed too: they come first.
        return it->same ? it->out_begin + (in - it->in_begin) : it->out_end;
    }
};

class ScriptedTransform : public StreamTransform {
  public:
    ScriptedTransform(FuzzInput& in, Expected& expected) : in_(in), expected_(expected) {}

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push,
                  StreamSink& sink) override {
        catch_up(offset);
        // Kept bytes are shown again, unchanged, before any new ones.
        FUZZ_CHECK(offset == expected_.in_mapped);
        FUZZ_CHECK(pending.size() >= kept_.size());
        FUZZ_CHECK(std::equal(kept_.begin(), kept_.end(), pending.begin()));
        FUZZ_CHECK(!pending.empty());

        size_t at = 0;
        for (int decisions = 0; at < pending.size() && decisions < 8; ++decisions) {
            if (in_.exhausted()) {
                if (relay_) sink.relay(relay_ = false);
                pass(sink, pending.subspan(at));
                at = pending.size();
                break;
            }
            uint8_t action = in_.u8();
            size_t length = std::min<size_t>(in_.u8(), pending.size() - at);
            std::span<const uint8_t> input = pending.subspan(at, length);
            switch (action & 7) {
                case 0:
                case 1:
                    pass(sink, input);
                    at += length;
                    break;
                case 2: {  // replace with bytes of another length
                    std::span<const uint8_t> with = in_.bytes(action >> 3);
                    sink.replace(length, with);
                    expected_.add(input, with,
                                  std::equal(input.begin(), input.end(), with.begin(), with.end()));
                    at += length;
                    break;
                }
                case 3:  // keep the rest for now
                    decisions = 8;
                    break;
                case 4:
                    sink.relay(relay_ = true);
                    break;
                case 5:
                    sink.relay(relay_ = false);
                    break;
                case 6:  // pass everything there is
                    pass(sink, pending.subspan(at));
                    at = pending.size();
                    break;
                case 7: {  // an insertion
                    std::span<const uint8_t> with = in_.bytes(action >> 3);
                    sink.replace(0, with);
                    expected_.add({}, with, with.empty());
                    break;
                }
            }
        }
        kept_.assign(pending.begin() + ptrdiff_t(at), pending.end());
    }

    // The engine passes unmapped bytes on by itself (end of stream, pending
    // limit): those were the oldest kept ones, unchanged.
    void catch_up(uint64_t engine_in_mapped) {
        if (engine_in_mapped <= expected_.in_mapped) return;
        size_t forced = size_t(engine_in_mapped - expected_.in_mapped);
        FUZZ_CHECK(forced <= kept_.size());
        std::span<const uint8_t> bytes(kept_.data(), forced);
        expected_.add(bytes, bytes, true);
        kept_.erase(kept_.begin(), kept_.begin() + ptrdiff_t(forced));
    }

  private:
    void pass(StreamSink& sink, std::span<const uint8_t> input) {
        sink.pass(input.size());
        expected_.add(input, input, true);
    }
    FuzzInput& in_;
    Expected& expected_;
    std::vector<uint8_t> kept_;
    bool relay_ = false;
};

}  // namespace

namespace {

class Harness {
  public:
    // `share`: the owner's hard memory cap for this stream, with
    // `limits.memory_room` pointing at `room` (none: no cap).
    Harness(FuzzInput& in, StreamLimits limits, std::optional<int64_t> share, int64_t& room)
        : in_(in),
          limits_(limits),
          transform_(in, expected_),
          engine_(transform_, limits),
          share_(share),
          room_(room) {}

    void run(uint32_t isn) {
        isn_ = isn;
        engine_.start(isn);
        settle();
        last_sender_ack_ = isn;
        for (int ops = 0; ops < 4096 && !in_.exhausted(); ++ops) {
            uint8_t op = in_.u8();
            switch (op & 3) {
                case 0:
                    segment(op);
                    break;
                case 1:
                    ack(in_.u16());
                    break;
                case 2:
                    deliver_relayed(in_.u16());
                    break;
                case 3: {
                    std::span<const uint8_t> bytes = in_.bytes(in_.u8());
                    uint64_t before = engine_.output_end();
                    engine_.insert(bytes);
                    // Refused after the FIN (nothing follows it).
                    if (engine_.output_end() != before) expected_.add({}, bytes, false);
                    break;
                }
            }
            check();
        }
        // The sender retransmits its newest bytes until the stream drains:
        // the engine must map everything (Stalled / End) eventually.
        for (int i = 0; i < 4 && engine_.input_next() > 0; ++i) {
            segment_at(engine_.input_next() - 1, 1, false, false);
            ack(0xffff);
            deliver_relayed(0xffff);
            check();
        }
    }

  private:
    void segment(uint8_t op) {
        int64_t offset = int64_t(engine_.input_next()) - 2048 + in_.u16();
        size_t length = in_.u16() % 4096;
        segment_at(uint64_t(std::max<int64_t>(offset, 0)), length, (op & 0x10) != 0,
                   (op & 0x20) != 0);
    }

    void segment_at(uint64_t offset, size_t length, bool fin, bool from_input) {
        std::vector<uint8_t> payload;
        if (from_input) {
            std::span<const uint8_t> b = in_.bytes(length);
            payload.assign(b.begin(), b.end());
        } else {
            payload.resize(length);
            for (size_t i = 0; i < length; ++i)
                payload[i] = sender_byte(offset + i);
        }
        std::vector<SegmentVerdict> released;
        SegmentVerdict v =
            engine_.on_segment(uint32_t(isn_ + offset), payload, fin, next_token_++, released);
        transform_.catch_up(engine_.input_mapped());
        receive(v);
        for (const SegmentVerdict& r : released)
            receive(r);
        held_tokens_ += v.kind == SegmentVerdict::Kind::Hold;
        for (const SegmentVerdict& r : released)
            FUZZ_CHECK(r.kind != SegmentVerdict::Kind::Hold);
        held_tokens_ -= std::min(held_tokens_, released.size());
    }

    // The receiver gets a verdict's payload: it must be the expected output
    // at that offset.
    void receive(const SegmentVerdict& v) {
        if (v.kind != SegmentVerdict::Kind::Forward) return;
        std::span<const uint8_t> payload = engine_.payload(v);
        if (v.repeat_acked_byte) {
            FUZZ_CHECK(engine_.output_acked() > 0);
            FUZZ_CHECK(payload.size() == 1 &&
                       payload[0] == expected_.output[engine_.output_acked() - 1]);
            FUZZ_CHECK(v.seq == uint32_t(isn_ + engine_.output_acked() - 1));
            return;
        }
        uint64_t begin = std::max(v.out_begin, engine_.output_acked());
        FUZZ_CHECK(v.out_end <= expected_.output.size());
        if (!payload.empty()) FUZZ_CHECK(v.seq == uint32_t(isn_ + begin));
        arrive(begin, payload);
        if (v.fin) {
            FUZZ_CHECK(engine_.output_finished());
            FUZZ_CHECK(begin + payload.size() == engine_.output_end());
            if (received_ == engine_.output_end()) fin_received_ = true;
        }
    }

    void arrive(uint64_t begin, std::span<const uint8_t> payload) {
        FUZZ_CHECK(begin + payload.size() <= expected_.output.size());
        FUZZ_CHECK(std::equal(payload.begin(), payload.end(),
                              expected_.output.begin() + ptrdiff_t(begin)));
        if (begin <= received_) received_ = std::max(received_, begin + payload.size());
    }

    // The relay sends output the receiver has not had, as FlowStream does.
    void deliver_relayed(uint16_t budget) {
        if (!engine_.relaying()) return;
        uint64_t from = engine_.output_sent();
        uint64_t to = std::min<uint64_t>(engine_.output_end(), from + budget);
        std::span<const uint8_t> bytes = engine_.output_view(from, to);
        FUZZ_CHECK(bytes.size() == to - std::max(from, engine_.output_acked()));
        arrive(std::max(from, engine_.output_acked()), bytes);
        engine_.note_sent(to);
        if (engine_.output_finished() && to == engine_.output_end() &&
            received_ == engine_.output_end())
            fin_received_ = true;
        engine_.note_window_offered(engine_.relay_room());
    }

    void ack(uint16_t n) {
        uint64_t out = std::min<uint64_t>(received_, engine_.output_acked() + n);
        // A receiver's ACKs never go back: once it acknowledged the FIN,
        // every later ACK does.
        bool fin = (n == 0xffff || engine_.fin_acknowledged()) && fin_received_ && out == received_;
        uint32_t sender_ack = engine_.translate_ack(uint32_t(isn_ + out + (fin ? 1 : 0)));
        // The sender's acknowledgement never goes back ...
        FUZZ_CHECK(!nfqscan::seq_before(sender_ack, last_sender_ack_));
        last_sender_ack_ = sender_ack;
        uint64_t in = uint32_t(sender_ack - isn_);
        // ... nor past what it sent (its FIN counts one) ...
        FUZZ_CHECK(in <= engine_.input_next() + 1);
        // ... nor past input whose output the receiver acknowledged, unless
        // nfqscand took that delivery on itself.
        if (!engine_.fin_acknowledged() && !engine_.owes_delivery() && !engine_.relaying())
            FUZZ_CHECK(expected_.output_needed_for(in) <= engine_.output_acked());
    }

    void check() {
        FUZZ_CHECK(engine_.output_acked() <= engine_.output_sent() || engine_.output_sent() == 0);
        FUZZ_CHECK(engine_.output_acked() <= engine_.output_end());
        FUZZ_CHECK(engine_.output_end() == expected_.output.size());
        FUZZ_CHECK(engine_.input_mapped() == expected_.in_mapped);
        FUZZ_CHECK(engine_.input_mapped() <= engine_.input_next());
        FUZZ_CHECK(engine_.held_bytes() <= limits_.max_held);
        uint64_t pending = engine_.input_next() - engine_.input_mapped();
        FUZZ_CHECK(pending <= std::max(limits_.max_pending, limits_.max_relay));
        // Retained output is bounded by what is unacknowledged; the rest of
        // the memory by the limits (plus bookkeeping and buffer doubling).
        uint64_t unacked = engine_.output_end() - engine_.output_acked();
        uint64_t bound = 2 * (unacked + 2 * expected_.in_mapped + pending) + limits_.max_held +
                         engine_.held_segments() * 256 + 64 * 1024 + expected_.mapping.size() * 64;
        FUZZ_CHECK(engine_.memory_bytes() <= bound);
        settle();
    }

    // As a worker keeps the cap: after every packet the room is the share
    // less what its streams hold (negative once over it).
    void settle() {
        if (share_) room_ = *share_ - int64_t(engine_.memory_bytes());
    }

    FuzzInput& in_;
    StreamLimits limits_;
    Expected expected_;
    ScriptedTransform transform_;
    StreamDirection engine_;
    uint32_t isn_ = 0;
    uint32_t last_sender_ack_ = 0;
    uint64_t next_token_ = 1;
    size_t held_tokens_ = 0;
    uint64_t received_ = 0;  // output the receiver has in order
    bool fin_received_ = false;
    std::optional<int64_t> share_;
    int64_t& room_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzInput in(data, size);
    uint32_t isn = in.u32();
    uint8_t l = in.u8();
    // Small limits, so that the fuzzer reaches them.
    StreamLimits limits;
    limits.max_held = size_t(1 + (l & 3)) * 4096;
    limits.max_pending = size_t(1 + ((l >> 2) & 3)) * 1024;
    limits.max_relay = size_t(1 + ((l >> 4) & 7)) * 16384;
    bool refuse = (l & 0x80) != 0;
    limits.refuse_holding = &refuse;
    // The ISN's low bit puts the stream under a hard memory cap of 16-44 KiB
    // (StreamLimits::memory_room; the limits byte has no bit left), so that
    // the cap's paths run under the same checks: input refused, held
    // segments pruned, spare capacity given back.
    std::optional<int64_t> share;
    int64_t room = 0;
    if (isn & 1) {
        share = int64_t(4 + ((isn >> 1) & 7)) * 4096;
        limits.memory_room = &room;
    }
    Harness h(in, limits, share, room);
    h.run(isn);
    return 0;
}
