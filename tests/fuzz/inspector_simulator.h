// A simulator of the stream engine's contract (tcp_stream.h,
// StreamDirection::feed) and of the worker's host (FlowInspection) for the
// inspector fuzz targets (http, pop3, imap): a pending buffer per direction
// that the inspector maps a prefix of; the relay (relay(true) keeps the
// bytes even at the End, and the sender may send only what fits in the relay
// store: beyond it the bytes wait at the sender and the inspector is told
// Stalled); the engine's forced maps (every byte at the End unless relaying,
// beyond the pending limit in pass mode); after host.release() every byte
// passes without the inspector, as FlowInspection does; send() bytes
// delivered after the call, and redrive() showing both directions again, as
// the worker's settle() does; scan verdicts answered later, in any order,
// after which both directions are shown their pending bytes again
// (inspector.h, "The life of an object").
// Checked:
// - the inspector maps only bytes it was shown (the engine would trim a
//   longer pass()/replace(), but an inspector that maps more than it was
//   shown has lost track of its offsets);
// - an object is handed to scan() while all its bytes are unmapped (or, a
//   mail message's parts, from the verdict of the whole), and no byte of
//   its direction is mapped (by the inspector, the engine's forced maps or
//   a release) until its verdict is in; no own bytes go out meanwhile;
// - scan ids are unique, objects non-null and within max_content_size; a
//   verdict for an id that is not outstanding changes nothing;
// - HTTP: a verdict the policy blocks ends the flow, and nothing more of its
//   direction is mapped;
// - nothing is asked of the host after reset_both() or send_and_close();
// - memory_bytes() stays within what the limits allow.
//
// Input layout (make_corpus.py): u8 setup, then operations, each an op byte
// (low 2 bits: kind):
//   0 client bytes: u8 length, bytes      1 server bytes: u8 length, bytes
//   2 a verdict: op bits 2-3: clean (or infected, setup bit 0), infected,
//     error, skipped; op bits 4-7: which outstanding scan (index modulo
//     their number, 0 the oldest), 15: a stale id (answered or never given)
//   3 end of a direction (op bit 2: server) (FIN); op bit 3: a Stalled push
//     instead of the FIN
// Setup bits: 0 infected verdicts by default; the fallback of 1
// protocol-error: pass, 2 content-size: block, 3 out-of-resource: block,
// 4 partial: block; 5-7 the target's own.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "nfqscan/inspector.h"

namespace nfqscan::fuzz {

using Push = StreamTransform::Push;

constexpr size_t kMaxPending = 4096;
constexpr size_t kMaxRelay = 64 * 1024;
// The engine tells a relaying inspector Stalled when less than this is left.
constexpr size_t kRelayLowWater = kMaxRelay / 8;
constexpr uint64_t kMaxContentSize = 16 * 1024;  // small enough to be reached

// One direction as the engine shows it to the inspector.
struct SimulatedDirection {
    std::vector<uint8_t> sender;   // sent, not taken yet (no room in the relay store)
    bool fin_at_sender = false;    // the FIN follows `sender`
    std::vector<uint8_t> pending;  // taken, not mapped
    uint64_t offset = 0;           // input offset of pending[0]
    bool relay_requested = false;
    bool relaying = false;  // the engine's store and forward (ends once caught up)
    bool ended = false;     // FIN taken
    bool closed = false;    // send_and_close / reset: nothing more is shown
    std::string output;     // what the receiver gets (kept for debugging)
};

class FakeHost;

// What differs between the protocols.
struct SimulatedProtocol {
    Service service;
    // memory_bytes() may not exceed this.
    size_t max_memory;
    // A verdict the policy blocks ends the flow (HTTP: block page, resets);
    // the mail protocols replace the object and go on.
    bool block_ends_flow;
    // The inspector gives replies of its own (send()) and redrives.
    bool speaks_for_peers;
};

class SimulatedSink : public StreamSink {
  public:
    SimulatedSink(SimulatedDirection& d, const FakeHost& host, Direction direction)
        : d_(d), host_(host), direction_(direction) {}
    void pass(size_t length) override;
    void replace(size_t length, std::span<const uint8_t> bytes) override;
    void relay(bool on) override {
        d_.relay_requested = on;
        if (on) d_.relaying = true;
    }
    size_t consumed() const { return consumed_; }
    size_t unmapped() const { return d_.pending.size() - consumed_; }

  private:
    void mapping(size_t length);

    SimulatedDirection& d_;
    const FakeHost& host_;
    Direction direction_;
    size_t consumed_ = 0;
};

class FakeHost : public InspectorHost {
  public:
    struct Scan {
        uint64_t id;
        Direction direction;
    };

    void scan(uint64_t id, const ObjectInfo& info,
              std::shared_ptr<const ObjectBuffer> bytes) override {
        FUZZ_CHECK(!ended());
        FUZZ_CHECK(!released_);
        FUZZ_CHECK(bytes != nullptr);
        FUZZ_CHECK(info.protocol == protocol_.service);
        FUZZ_CHECK(bytes->size() <= limits_.max_content_size);
        FUZZ_CHECK(scanned_.insert(id).second);  // ids are unique
        // Handed over while the inspector is shown its direction's bytes,
        // all of them still unmapped (decoded bytes are never more than the
        // bytes on the wire).
        // Or, for a mail message found infected, its parts, each on its own,
        // from the verdict of the whole (MessageJudge).
        const SimulatedSink* sink = shown_[size_t(info.direction)];
        if (sink == nullptr) {
            FUZZ_CHECK(in_verdict_ && *in_verdict_ == info.direction);
        } else {
            FUZZ_CHECK(bytes->size() <= sink->unmapped());
        }
        outstanding_.push_back({id, info.direction});
    }
    std::string record(const ObjectInfo& info, const ScanVerdict&,
                       std::string_view action) override {
        FUZZ_CHECK(!ended());
        FUZZ_CHECK(info.protocol == protocol_.service && !action.empty());
        return "event-" + std::to_string(++events_);
    }
    std::string record_fallback(const ObjectInfo& info, Category, std::string_view reason,
                                std::string_view action) override {
        FUZZ_CHECK(!ended());
        FUZZ_CHECK(info.protocol == protocol_.service && !action.empty() && !reason.empty());
        return "event-" + std::to_string(++events_);
    }
    void send_and_close(Direction d, std::span<const uint8_t> bytes) override {
        FUZZ_CHECK(!ended());
        FUZZ_CHECK(!released_);
        FUZZ_CHECK(!bytes.empty());
        closed_[size_t(d)] = true;
    }
    // Only the mail protocols speak for a peer (a refused STARTTLS).
    void send(Direction d, std::span<const uint8_t> bytes) override {
        FUZZ_CHECK(protocol_.speaks_for_peers);
        FUZZ_CHECK(!ended() && !released_);
        FUZZ_CHECK(!bytes.empty());
        // Own bytes go after the output mapped so far: never while an object
        // of the direction, unmapped, waits for its verdict.
        FUZZ_CHECK(!awaits_verdict(d));
        own_[size_t(d)].append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    void redrive() override {
        FUZZ_CHECK(protocol_.speaks_for_peers);
        redrive_ = true;
    }
    // Senders are told only when the policy asks (notify_sender_on_*, the
    // mail protocols), never by a flow that ended. (Which recipients are
    // refused is the Notifier's to check.)
    void notify(Notification) override {
        FUZZ_CHECK(!ended());
        FUZZ_CHECK(policy_.notify_sender_on_virus || policy_.notify_sender_on_error_drop);
    }
    void reset_both() override {
        FUZZ_CHECK(!ended());
        reset_ = true;
    }
    void note_allowlisted(const ObjectInfo& info) override {
        FUZZ_CHECK(!ended());
        FUZZ_CHECK(info.protocol == protocol_.service);
    }
    void release(ReleaseReason) override {
        FUZZ_CHECK(!ended());
        // From here on every byte passes unchanged: nothing may still wait
        // for a verdict.
        FUZZ_CHECK(outstanding_.empty());
        released_ = true;
    }
    const ProtocolPolicy& policy() const override { return policy_; }
    const MessageTemplates& messages() const override { return *templates_; }
    std::string render_message(std::string_view name, const MessageFields& fields) const override {
        return templates_->render(name, fields);
    }
    const ScanLimits& limits() const override { return limits_; }
    // Trickling is driven by its unit tests; here the clock stands still.
    uint64_t now_ms() const override { return 1'000'000; }
    void want_ticks(bool) override {}
    MessageFields message_fields() const override {
        MessageFields f;
        f.client = "192.0.2.1:40000";
        f.server = "198.51.100.1:80";
        f.protocol = "http";
        f.host = "fuzz";
        return f;
    }

    bool ended() const { return reset_ || closed_[0] || closed_[1]; }
    bool awaits_verdict(Direction d) const {
        return std::any_of(outstanding_.begin(), outstanding_.end(),
                           [d](const Scan& s) { return s.direction == d; });
    }

    explicit FakeHost(const SimulatedProtocol& protocol) : protocol_(protocol) {}

    const SimulatedProtocol& protocol_;
    std::string own_[2];  // send(): delivered after the current call
    bool redrive_ = false;
    std::optional<Direction> in_verdict_;  // on_verdict() of an object of this direction runs
    std::deque<Scan> outstanding_;
    std::set<uint64_t> scanned_;
    const SimulatedSink* shown_[2] = {nullptr, nullptr};
    bool closed_[2] = {false, false};
    bool blocked_[2] = {false, false};  // a verdict the policy blocks was given
    bool reset_ = false;
    bool released_ = false;
    uint64_t events_ = 0;
    ProtocolPolicy policy_;
    std::shared_ptr<const MessageTemplates> templates_ = MessageTemplates::builtin();
    ScanLimits limits_;
};

void SimulatedSink::mapping(size_t length) {
    FUZZ_CHECK(length <= unmapped());  // only bytes it was shown
    // Nothing of a direction moves while one of its objects awaits its
    // verdict, nor after a verdict that blocks (the flow ends with it).
    FUZZ_CHECK(length == 0 || !host_.awaits_verdict(direction_));
    FUZZ_CHECK(length == 0 || !host_.protocol_.block_ends_flow ||
               !host_.blocked_[size_t(direction_)]);
}

void SimulatedSink::pass(size_t length) {
    mapping(length);
    d_.output.append(reinterpret_cast<const char*>(d_.pending.data()) + consumed_, length);
    consumed_ += length;
}

void SimulatedSink::replace(size_t length, std::span<const uint8_t> bytes) {
    mapping(length);
    FUZZ_CHECK(bytes.empty() || !host_.awaits_verdict(direction_));
    d_.output.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    consumed_ += length;
}

class Simulator {
  public:
    Simulator(FuzzInput& in, const SimulatedProtocol& protocol)
        : in_(in), protocol_(protocol), host_(protocol_) {
        host_.limits_.max_content_size = kMaxContentSize;
    }
    FakeHost& host() { return host_; }

    // `setup(policy, byte)`: the protocol's own setup bits (5-7).
    template <typename Setup>
    void run(Setup setup_policy) {
        uint8_t setup = in_.u8();
        setup_policy(host_.policy_, setup);
        inspector_ = make_inspector(protocol_.service, host_);
        FUZZ_CHECK(inspector_ != nullptr);
        bool infected_default = (setup & 1) != 0;
        auto& fallback = host_.policy_.fallback;
        if (setup & 2) fallback[size_t(Category::ProtocolError)] = Action::Pass;
        if (setup & 4) fallback[size_t(Category::ContentSize)] = Action::Block;
        if (setup & 8) fallback[size_t(Category::OutOfResource)] = Action::Block;
        if (setup & 16) fallback[size_t(Category::Partial)] = Action::Block;
        for (int ops = 0; ops < 4096 && !in_.exhausted(); ++ops) {
            uint8_t op = in_.u8();
            switch (op & 3) {
                case 0:
                case 1: {
                    Direction d = (op & 3) == 0 ? C2S : S2C;
                    std::span<const uint8_t> bytes = in_.bytes(in_.u8());
                    SimulatedDirection& s = dirs_[size_t(d)];
                    if (s.fin_at_sender) break;
                    s.sender.insert(s.sender.end(), bytes.begin(), bytes.end());
                    take(d);
                    break;
                }
                case 2:
                    answer(op >> 4, (op >> 2) & 3, infected_default);
                    break;
                case 3: {
                    Direction d = (op & 4) ? S2C : C2S;
                    if (op & 8) {
                        show(d, Push::Stalled);
                    } else {
                        dirs_[size_t(d)].fin_at_sender = true;
                        take(d);
                    }
                    break;
                }
            }
            check_memory();
        }
        // Every verdict comes in the end; the flow closes.
        while (!host_.outstanding_.empty() && !host_.ended())
            answer(0, 0, infected_default);
        for (Direction d : {C2S, S2C}) {
            dirs_[size_t(d)].fin_at_sender = true;
            take(d);
        }
        check_memory();
        // A verdict that blocks ends the flow (block page or resets).
        FUZZ_CHECK(!protocol_.block_ends_flow || host_.ended() ||
                   !(host_.blocked_[0] || host_.blocked_[1]));
    }

  private:
    static constexpr Direction C2S = Direction::ClientToServer;
    static constexpr Direction S2C = Direction::ServerToClient;

    void check_memory() {
        // Per direction: a body below max_content_size (a vector at most
        // twice that) and a head's kept text.
        FUZZ_CHECK(inspector_->memory_bytes() <= protocol_.max_memory);
    }

    // The engine takes what the sender sent: all of it in pass mode, what
    // fits in the relay store while relaying (the sender sends no more than
    // the window it was offered; it retransmits the rest later).
    void take(Direction d) {
        SimulatedDirection& s = dirs_[size_t(d)];
        if (s.ended) return;
        size_t n = s.sender.size();
        if (s.relaying) n = std::min(n, kMaxRelay - std::min(kMaxRelay, s.pending.size()));
        if (n == 0 && !s.sender.empty()) {
            show(d, Push::Stalled);  // StreamDirection::on_segment: relay_full
            return;
        }
        s.pending.insert(s.pending.end(), s.sender.begin(), s.sender.begin() + ptrdiff_t(n));
        s.sender.erase(s.sender.begin(), s.sender.begin() + ptrdiff_t(n));
        if (s.sender.empty() && s.fin_at_sender) s.ended = true;
        show(d, Push::More);
    }

    void answer(int which, int kind, bool infected_default) {
        if (host_.ended()) return;
        uint64_t id;
        Direction direction = C2S;
        if (which == 15) {
            // A stale id: one answered already, or one never handed out.
            id = answered_.empty() ? 1000000 : answered_[in_.u8() % answered_.size()];
            if (std::any_of(host_.outstanding_.begin(), host_.outstanding_.end(),
                            [id](const FakeHost::Scan& s) { return s.id == id; }))
                return;
        } else {
            if (host_.outstanding_.empty()) return;
            auto it =
                host_.outstanding_.begin() + ptrdiff_t(size_t(which) % host_.outstanding_.size());
            id = it->id;
            direction = it->direction;
            host_.outstanding_.erase(it);
            answered_.push_back(id);
        }
        ScanVerdict v;
        switch (kind) {
            case 0:
                v = infected_default
                        ? ScanVerdict::infected({ScanEngineKind::ClamAV, "Eicar-Signature", "", {}})
                        : ScanVerdict::clean();
                break;
            case 1:
                v = ScanVerdict::infected({ScanEngineKind::Yara, "fuzz_rule", "", {}});
                break;
            case 2:
                v = ScanVerdict::failed(ScanError::Timeout, "fuzz");
                break;
            default:
                v = ScanVerdict::skipped_clean();
                break;
        }
        if (which != 15 && host_.policy_.decide(v) == Action::Block)
            host_.blocked_[size_t(direction)] = true;
        host_.in_verdict_ = direction;
        inspector_->on_verdict(id, v);
        host_.in_verdict_.reset();
        // continueReading(): both directions see their pending bytes again,
        // and the senders send what waited for room.
        for (Direction d : {C2S, S2C}) {
            const SimulatedDirection& s = dirs_[size_t(d)];
            if (!s.ended && (!s.sender.empty() || s.fin_at_sender))
                take(d);
            else
                show(d, Push::More);
        }
    }

    // The engine's feed(): show the pending bytes, drop what was mapped, and
    // map on the inspector's behalf what the contract says it must.
    // The worker's settle(): the own bytes of a call go out, then a redrive
    // shows both directions their bytes again (a few rounds at most).
    void show(Direction d, Push push) {
        ++settling_;
        show_once(d, push);
        --settling_;
        if (settling_ > 0) return;
        for (int round = 0; round < 8; ++round) {
            for (Direction x : {C2S, S2C}) {
                dirs_[size_t(x)].output += host_.own_[size_t(x)];
                host_.own_[size_t(x)].clear();
            }
            if (!host_.redrive_ || host_.ended()) return;
            host_.redrive_ = false;
            ++settling_;
            for (Direction x : {C2S, S2C})
                show_once(x, Push::More);
            --settling_;
        }
    }

    void show_once(Direction d, Push push) {
        SimulatedDirection& s = dirs_[size_t(d)];
        if (host_.ended()) {
            // send_and_close and reset_both drop both directions' input.
            s.closed = true;
            s.pending.clear();
            s.sender.clear();
            return;
        }
        if (s.ended) push = Push::End;
        if (s.pending.empty()) {
            end_relay(s);
            return;
        }
        if (host_.released_) {
            // FlowInspection without an inspector: everything, unchanged.
            FUZZ_CHECK(!host_.awaits_verdict(d));
            s.relay_requested = false;
            s.output.append(s.pending.begin(), s.pending.end());
            s.offset += s.pending.size();
            s.pending.clear();
            end_relay(s);
            return;
        }
        if (s.relaying && push == Push::More && kMaxRelay - s.pending.size() < kRelayLowWater)
            push = Push::Stalled;
        SimulatedSink sink(s, host_, d);
        host_.shown_[size_t(d)] = &sink;
        inspector_->transform(d).on_bytes(s.offset, s.pending, push, sink);
        host_.shown_[size_t(d)] = nullptr;
        size_t consumed = sink.consumed();
        size_t left = s.pending.size() - consumed;
        size_t limit = s.relaying ? kMaxRelay : kMaxPending;
        size_t forced = push == Push::End ? left : left > limit ? left - limit : 0;
        if (s.relaying && s.relay_requested) forced = 0;
        if (host_.ended()) forced = 0;
        // The engine's forced maps are the inspector's fault while an object
        // of the direction waits: it should have kept the relay on.
        FUZZ_CHECK(forced == 0 || !host_.awaits_verdict(d));
        s.output.append(s.pending.begin() + ptrdiff_t(consumed),
                        s.pending.begin() + ptrdiff_t(consumed + forced));
        consumed += forced;
        s.pending.erase(s.pending.begin(), s.pending.begin() + ptrdiff_t(consumed));
        s.offset += consumed;
        end_relay(s);
    }

    // StreamDirection::maybe_end_relay, with a receiver that acknowledges at once.
    static void end_relay(SimulatedDirection& s) {
        if (s.relaying && !s.relay_requested && s.pending.empty() && !s.ended) s.relaying = false;
    }

    FuzzInput& in_;
    const SimulatedProtocol& protocol_;
    FakeHost host_;
    int settling_ = 0;
    std::unique_ptr<Inspector> inspector_;
    SimulatedDirection dirs_[2];
    std::vector<uint64_t> answered_;
};

}  // namespace nfqscan::fuzz
