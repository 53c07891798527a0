// The stream engine as the inspector fuzz targets model it (tcp_stream.h,
// StreamDirection::feed), shared by inspector_simulator.h (http, pop3, imap)
// and smtp_inspector_fuzz.cc: the limits, one direction's state, how the
// engine takes what a sender sent (all of it in pass mode, what fits in the
// relay store while relaying, Stalled when nothing fits), which push an
// inspector is shown, the maps the engine makes on the inspector's behalf,
// when a relay ends; and how a fuzzed verdict is picked and made.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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
struct EngineDirection {
    std::vector<uint8_t> sender;   // sent, not taken yet (no room in the relay store)
    bool fin_at_sender = false;    // the FIN follows `sender`
    std::vector<uint8_t> pending;  // taken, not mapped
    uint64_t offset = 0;           // input offset of pending[0]
    bool relay_requested = false;
    bool relaying = false;  // the engine's store and forward (ends once caught up)
    bool ended = false;     // FIN taken
    std::string output;     // what the receiver gets

    // How many sender bytes the engine takes now: all in pass mode, what
    // fits in the relay store while relaying (the sender sends no more than
    // the window it was offered; it retransmits the rest later). 0 with
    // bytes waiting: the inspector is told Stalled (on_segment: relay_full).
    size_t takeable() const {
        size_t n = sender.size();
        if (relaying) n = std::min(n, kMaxRelay - std::min(kMaxRelay, pending.size()));
        return n;
    }
    bool stalled() const { return takeable() == 0 && !sender.empty(); }
    // Takes `n` sender bytes (the FIN with the last of them).
    void take(size_t n) {
        pending.insert(pending.end(), sender.begin(), sender.begin() + ptrdiff_t(n));
        sender.erase(sender.begin(), sender.begin() + ptrdiff_t(n));
        if (sender.empty() && fin_at_sender) ended = true;
    }
    // Something waits at the sender: continueReading() takes it.
    bool sender_waits() const { return !ended && (!sender.empty() || fin_at_sender); }
    // The push the inspector is shown for `push`.
    Push shown(Push push) const {
        if (ended) return Push::End;
        if (relaying && push == Push::More && kMaxRelay - pending.size() < kRelayLowWater)
            return Push::Stalled;
        return push;
    }
    // What the engine maps on the inspector's behalf after it mapped
    // `consumed` of `pending`: every byte at the End, beyond the pending
    // limit (or the relay store) the oldest, unless the inspector relays.
    size_t forced(Push push, size_t consumed) const {
        size_t left = pending.size() - consumed;
        size_t limit = relaying ? kMaxRelay : kMaxPending;
        size_t n = push == Push::End ? left : left > limit ? left - limit : 0;
        return relaying && relay_requested ? 0 : n;
    }
    // StreamDirection::maybe_end_relay, with a receiver that acknowledges at once.
    void end_relay() {
        if (relaying && !relay_requested && pending.empty() && !ended) relaying = false;
    }
};

// The StreamSink the engine hands the inspector for one direction: relay()
// as the engine takes it, and what was mapped so far; pass() and replace()
// are the target's (its checks).
class EngineSink : public StreamSink {
  public:
    explicit EngineSink(EngineDirection& d) : d_(d) {}
    void relay(bool on) override {
        d_.relay_requested = on;
        if (on) d_.relaying = true;
    }
    size_t consumed() const { return consumed_; }
    size_t unmapped() const { return d_.pending.size() - consumed_; }
    uint64_t at() const { return d_.offset + consumed_; }
    std::span<const uint8_t> shown() const { return d_.pending; }

  protected:
    EngineDirection& d_;
    size_t consumed_ = 0;
};

// The scan a fuzzed verdict answers: op bits 4-7 `which` pick an
// outstanding one (modulo their number, 0 the oldest; it is taken out of
// `outstanding` and remembered in `answered`), 15 a stale id (one answered
// already, or one never handed out; nothing when it is outstanding after
// all). `Scan` has an `id`.
template <typename Scan>
std::optional<Scan> pick_scan(int which, std::deque<Scan>& outstanding,
                              std::vector<uint64_t>& answered, FuzzInput& in) {
    if (which == 15) {
        Scan stale{};
        stale.id = answered.empty() ? 1000000 : answered[in.u8() % answered.size()];
        if (std::any_of(outstanding.begin(), outstanding.end(),
                        [&](const Scan& s) { return s.id == stale.id; }))
            return std::nullopt;
        return stale;
    }
    if (outstanding.empty()) return std::nullopt;
    auto it = outstanding.begin() + ptrdiff_t(size_t(which) % outstanding.size());
    Scan picked = *it;
    outstanding.erase(it);
    answered.push_back(picked.id);
    return picked;
}

// A fuzzed verdict: op bits 2-3 `kind`: clean (or `detection` when
// infected_default), `detection`, a timeout error, skipped.
inline ScanVerdict fuzz_verdict(int kind, bool infected_default, const Detection& detection) {
    switch (kind) {
        case 0:
            return infected_default ? ScanVerdict::infected(detection) : ScanVerdict::clean();
        case 1:
            return ScanVerdict::infected(detection);
        case 2:
            return ScanVerdict::failed(ScanError::Timeout, "fuzz");
        default:
            return ScanVerdict::skipped_clean();
    }
}

// What a fuzz target's host answers the same way whatever it checks: the
// policy, templates and limits it was set up with, a clock that stands
// still (trickling is driven by its unit tests), the flow's addresses.
class FuzzHostBase : public InspectorHost {
  public:
    const ProtocolPolicy& policy() const override { return policy_; }
    const MessageTemplates& messages() const override { return *templates_; }
    std::string render_message(std::string_view name, const MessageFields& fields) const override {
        return templates_->render(name, fields);
    }
    const ScanLimits& limits() const override { return limits_; }
    uint64_t now_ms() const override { return 1'000'000; }
    void want_ticks(bool) override {}
    MessageFields message_fields() const override {
        MessageFields f;
        f.client = "192.0.2.1:40000";
        f.server = "198.51.100.1:" + std::to_string(server_port_);
        f.protocol = protocol_name_;
        f.host = "fuzz";
        return f;
    }

    ProtocolPolicy policy_;
    std::shared_ptr<const MessageTemplates> templates_ = MessageTemplates::builtin();
    ScanLimits limits_;

  protected:
    FuzzHostBase(std::string protocol_name, uint16_t server_port)
        : protocol_name_(std::move(protocol_name)), server_port_(server_port) {}

  private:
    std::string protocol_name_;
    uint16_t server_port_;
};

}  // namespace nfqscan::fuzz
