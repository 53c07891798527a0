// The HTTP inspector (make_inspector(Service::Http, host)) between a fake
// InspectorHost and a small simulator of the stream engine's contract: a
// pending buffer per direction that the inspector maps a prefix of, the
// relay flag, the engine's forced maps (End, the pending and relay limits),
// and scan verdicts answered later, after which both directions are shown
// their pending bytes again (inspector.h, "The life of an object").
// Checked: the inspector maps only bytes it was shown; scan ids are unique
// and every object handed over is non-null; on_verdict comes only for a
// scanned id, once; nothing is asked of the host after reset_both(); the
// inspector's own memory stays bounded by what it was given.
//
// Input layout (make_corpus.py): u8 setup (bit 0: infected verdicts by
// default), then operations, each an op byte (low 2 bits: kind):
//   0 client bytes: u8 length, bytes      1 server bytes: u8 length, bytes
//   2 verdict for the oldest outstanding scan: op bits 2-3: clean, infected,
//     error, skipped
//   3 end of a direction (op bit 2: server) (FIN); op bit 3: a Stalled push
//     instead of the FIN
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "nfqscan/inspector.h"

namespace {

using namespace nfqscan;
using nfqscan::fuzz::FuzzInput;

constexpr size_t kMaxPending = 4096;
constexpr size_t kMaxRelay = 64 * 1024;

// One direction as the engine shows it to the inspector.
struct SimulatedDirection {
    std::vector<uint8_t> pending;
    uint64_t offset = 0;  // input offset of pending[0]
    bool relay = false;
    bool ended = false;   // FIN seen
    bool closed = false;  // send_and_close / reset: nothing more is shown
    std::string output;   // what the receiver gets (not checked, kept for debugging)
};

class SimulatedSink : public StreamSink {
  public:
    SimulatedSink(SimulatedDirection& d, size_t shown) : d_(d), shown_(shown) {}
    void pass(size_t length) override {
        FUZZ_CHECK(length <= shown_ - consumed_);  // only bytes it was shown
        d_.output.append(reinterpret_cast<const char*>(d_.pending.data()) + consumed_, length);
        consumed_ += length;
    }
    void replace(size_t length, std::span<const uint8_t> bytes) override {
        FUZZ_CHECK(length <= shown_ - consumed_);
        d_.output.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        consumed_ += length;
    }
    void relay(bool on) override { d_.relay = on; }
    size_t consumed() const { return consumed_; }

  private:
    SimulatedDirection& d_;
    size_t shown_;
    size_t consumed_ = 0;
};

class FakeHost : public InspectorHost {
  public:
    void scan(uint64_t id, const ObjectInfo& info,
              std::shared_ptr<const std::vector<uint8_t>> bytes) override {
        FUZZ_CHECK(!reset_);
        FUZZ_CHECK(bytes != nullptr);
        FUZZ_CHECK(info.protocol == Service::Http);
        FUZZ_CHECK(scanned_.insert(id).second);  // ids are unique
        outstanding_.push_back(id);
        scanned_bytes_ += bytes->size();
    }
    std::string record(const ObjectInfo& info, const ScanVerdict&,
                       std::string_view action) override {
        FUZZ_CHECK(info.protocol == Service::Http && !action.empty());
        return "event-" + std::to_string(++events_);
    }
    std::string record_fallback(const ObjectInfo& info, Category, std::string_view reason,
                                std::string_view action) override {
        FUZZ_CHECK(info.protocol == Service::Http && !action.empty() && !reason.empty());
        return "event-" + std::to_string(++events_);
    }
    void send_and_close(Direction d, std::span<const uint8_t>) override {
        FUZZ_CHECK(!reset_);
        closed_[size_t(d)] = true;
    }
    void reset_both() override { reset_ = true; }
    void note_allowlisted(const ObjectInfo& info) override {
        FUZZ_CHECK(info.protocol == Service::Http);
    }
    void release(ReleaseReason) override { released_ = true; }
    const ProtocolPolicy& policy() const override { return policy_; }
    const MessageTemplates& messages() const override { return *templates_; }
    const ScanLimits& limits() const override { return limits_; }
    std::string render_message(std::string_view name, const MessageFields& f) const override {
        return templates_->render(name, f);
    }
    MessageFields message_fields() const override {
        MessageFields f;
        f.client = "192.0.2.1:40000";
        f.server = "198.51.100.1:80";
        f.protocol = "http";
        f.host = "fuzz";
        return f;
    }
    uint64_t now_ms() const override { return now_ms_; }
    void want_ticks(bool on) override { ticks_ = on; }

    std::deque<uint64_t> outstanding_;
    std::set<uint64_t> scanned_;
    bool closed_[2] = {false, false};
    bool reset_ = false;
    bool released_ = false;
    bool ticks_ = false;
    uint64_t now_ms_ = 1'000'000;
    uint64_t events_ = 0;
    uint64_t scanned_bytes_ = 0;
    ProtocolPolicy policy_;
    std::shared_ptr<const MessageTemplates> templates_ = MessageTemplates::builtin();
    ScanLimits limits_;
};

class Simulator {
  public:
    explicit Simulator(FuzzInput& in) : in_(in) {
        host_.limits_.max_content_size = 16 * 1024;  // small enough to be reached
        host_.policy_.allow_hosts = {".allowed.example"};
        inspector_ = make_inspector(Service::Http, host_);
    }

    void run() {
        FUZZ_CHECK(inspector_ != nullptr);
        uint8_t setup = in_.u8();
        bool infected_default = (setup & 1) != 0;
        if (setup & 2) host_.policy_.trickle_after_s = 1;
        for (int ops = 0; ops < 2048 && !in_.exhausted(); ++ops) {
            uint8_t op = in_.u8();
            switch (op & 3) {
                case 0:
                case 1: {
                    Direction d =
                        (op & 3) == 0 ? Direction::ClientToServer : Direction::ServerToClient;
                    std::span<const uint8_t> bytes = in_.bytes(in_.u8());
                    given_ += bytes.size();
                    SimulatedDirection& s = dirs_[size_t(d)];
                    if (s.ended || s.closed || host_.reset_) break;
                    s.pending.insert(s.pending.end(), bytes.begin(), bytes.end());
                    show(d, StreamTransform::Push::More);
                    break;
                }
                case 2:
                    if (op & 0x80)
                        tick(1000 * (1 + ((op >> 2) & 3)));
                    else
                        answer_oldest((op >> 2) & 3, infected_default);
                    break;
                case 3: {
                    Direction d = (op & 4) ? Direction::ServerToClient : Direction::ClientToServer;
                    if (op & 8) {
                        show(d, StreamTransform::Push::Stalled);
                    } else {
                        dirs_[size_t(d)].ended = true;
                        show(d, StreamTransform::Push::End);
                    }
                    break;
                }
            }
            FUZZ_CHECK(inspector_->memory_bytes() <= 2 * given_ + 64 * 1024);
        }
        // Every verdict comes in the end; the flow closes.
        while (!host_.outstanding_.empty() && !host_.reset_)
            answer_oldest(0, infected_default);
        for (Direction d : {Direction::ClientToServer, Direction::ServerToClient}) {
            dirs_[size_t(d)].ended = true;
            show(d, StreamTransform::Push::End);
        }
    }

  private:
    // The host's clock advances; an inspector that asked for ticks gets one,
    // and both directions are shown their bytes again if it says so.
    void tick(uint64_t ms) {
        host_.now_ms_ += ms;
        if (!host_.ticks_ || host_.reset_ || !inspector_->on_tick(host_.now_ms_)) return;
        show(Direction::ClientToServer, StreamTransform::Push::More);
        show(Direction::ServerToClient, StreamTransform::Push::More);
    }

    void answer_oldest(int kind, bool infected_default) {
        if (host_.outstanding_.empty() || host_.reset_) return;
        uint64_t id = host_.outstanding_.front();
        host_.outstanding_.pop_front();
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
        inspector_->on_verdict(id, v);
        // continueReading(): both directions see their pending bytes again.
        show(Direction::ClientToServer, StreamTransform::Push::More);
        show(Direction::ServerToClient, StreamTransform::Push::More);
    }

    // The engine's feed(): show the pending bytes, drop what was mapped, and
    // map on the inspector's behalf what the contract says it must.
    void show(Direction d, StreamTransform::Push push) {
        SimulatedDirection& s = dirs_[size_t(d)];
        if (s.closed || host_.closed_[size_t(d)] || host_.reset_) {
            s.closed = true;
            s.pending.clear();
            return;
        }
        if (s.ended) push = StreamTransform::Push::End;
        if (s.pending.empty()) return;
        SimulatedSink sink(s, s.pending.size());
        inspector_->transform(d).on_bytes(s.offset, s.pending, push, sink);
        size_t consumed = sink.consumed();
        size_t left = s.pending.size() - consumed;
        size_t limit = s.relay ? kMaxRelay : kMaxPending;
        if (push == StreamTransform::Push::End)
            consumed += left;
        else if (left > limit)
            consumed += left - limit;
        s.pending.erase(s.pending.begin(), s.pending.begin() + ptrdiff_t(consumed));
        s.offset += consumed;
    }

    FuzzInput& in_;
    FakeHost host_;
    std::unique_ptr<Inspector> inspector_;
    SimulatedDirection dirs_[2];
    uint64_t given_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzInput in(data, size);
    Simulator(in).run();
    return 0;
}
