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

#include "engine_model.h"
#include "fuzz_check.h"
#include "fuzz_input.h"
#include "nfqscan/inspector.h"

namespace nfqscan::fuzz {

// One direction: the engine's state (engine_model.h), and whether the flow
// was closed.
struct SimulatedDirection : EngineDirection {
    bool closed = false;  // send_and_close / reset: nothing more is shown
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

class SimulatedSink : public EngineSink {
  public:
    SimulatedSink(SimulatedDirection& d, const FakeHost& host, Direction direction)
        : EngineSink(d), host_(host), direction_(direction) {}
    void pass(size_t length) override;
    void replace(size_t length, std::span<const uint8_t> bytes) override;

  private:
    void mapping(size_t length);

    const FakeHost& host_;
    Direction direction_;
};

class FakeHost : public FuzzHostBase {
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

    bool ended() const { return reset_ || closed_[0] || closed_[1]; }
    bool awaits_verdict(Direction d) const {
        return std::any_of(outstanding_.begin(), outstanding_.end(),
                           [d](const Scan& s) { return s.direction == d; });
    }

    explicit FakeHost(const SimulatedProtocol& protocol)
        : FuzzHostBase(std::string(service_name(protocol.service)),
                       protocol.service == Service::Pop3   ? 110
                       : protocol.service == Service::Imap ? 143
                                                           : 80),
          protocol_(protocol) {}

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

    // The engine takes what the sender sent (EngineDirection::takeable).
    void take(Direction d) {
        SimulatedDirection& s = dirs_[size_t(d)];
        if (s.ended) return;
        if (s.stalled()) {
            show(d, Push::Stalled);  // StreamDirection::on_segment: relay_full
            return;
        }
        s.take(s.takeable());
        show(d, Push::More);
    }

    void answer(int which, int kind, bool infected_default) {
        if (host_.ended()) return;
        std::optional<FakeHost::Scan> scan = pick_scan(which, host_.outstanding_, answered_, in_);
        if (!scan) return;
        const uint64_t id = scan->id;
        const Direction direction = scan->direction;  // a stale id: C2S
        // A YARA rule when infected by kind, EICAR by ClamAV otherwise.
        ScanVerdict v =
            fuzz_verdict(kind, infected_default,
                         kind == 1 ? Detection{ScanEngineKind::Yara, "fuzz_rule", "", {}}
                                   : Detection{ScanEngineKind::ClamAV, "Eicar-Signature", "", {}});
        if (which != 15 && host_.policy_.decide(v) == Action::Block)
            host_.blocked_[size_t(direction)] = true;
        host_.in_verdict_ = direction;
        inspector_->on_verdict(id, v);
        host_.in_verdict_.reset();
        // continueReading(): both directions see their pending bytes again,
        // and the senders send what waited for room.
        for (Direction d : {C2S, S2C}) {
            if (dirs_[size_t(d)].sender_waits())
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
        push = s.shown(push);
        if (s.pending.empty()) {
            s.end_relay();
            return;
        }
        if (host_.released_) {
            // FlowInspection without an inspector: everything, unchanged.
            FUZZ_CHECK(!host_.awaits_verdict(d));
            s.relay_requested = false;
            s.output.append(s.pending.begin(), s.pending.end());
            s.offset += s.pending.size();
            s.pending.clear();
            s.end_relay();
            return;
        }
        SimulatedSink sink(s, host_, d);
        host_.shown_[size_t(d)] = &sink;
        inspector_->transform(d).on_bytes(s.offset, s.pending, push, sink);
        host_.shown_[size_t(d)] = nullptr;
        size_t consumed = sink.consumed();
        size_t forced = host_.ended() ? 0 : s.forced(push, consumed);
        // The engine's forced maps are the inspector's fault while an object
        // of the direction waits: it should have kept the relay on.
        FUZZ_CHECK(forced == 0 || !host_.awaits_verdict(d));
        s.output.append(s.pending.begin() + ptrdiff_t(consumed),
                        s.pending.begin() + ptrdiff_t(consumed + forced));
        consumed += forced;
        s.pending.erase(s.pending.begin(), s.pending.begin() + ptrdiff_t(consumed));
        s.offset += consumed;
        s.end_relay();
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
