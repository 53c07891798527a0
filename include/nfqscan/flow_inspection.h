// FlowInspection: the InspectorHost of one TCP flow in the stream engine.
// It owns the flow's inspector (created when the flow is claimed for a
// protocol that has one), gives the flow's FlowStream one transform per
// direction that stays valid for the flow's life (bytes pass unchanged while
// the flow is being classified, after it is released, or when its protocol
// has no inspector), and turns what the inspector asks for into scan
// requests, event log lines and counters.
//
// What changes the flow's packets (a close with a message, resets, a release)
// is not done inside the inspector's call, which runs in the middle of the
// stream engine's own work: it is collected as Requests, and the worker
// carries it out on the flow's stream right after (take_requests()).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/flow.h"
#include "nfqscan/inspector.h"
#include "nfqscan/quarantine.h"
#include "nfqscan/scan_event_log.h"

namespace nfqscan {

// What a worker offers the inspections of its flows.
class InspectionContext {
  public:
    virtual ~InspectionContext() = default;
    virtual const Config& config() const = 0;
    // Queues `object` for the scan service; the verdict comes back to the
    // worker, which hands it to inspection `inspection_id` (if it still
    // exists) as FlowInspection::on_verdict(object_id, ...).
    virtual void submit(uint64_t inspection_id, uint64_t object_id, ScanObject object) = 0;
    // Queues `query` for the spam engine; its verdict comes back as
    // FlowInspection::on_spam_verdict(object_id, ...). False: no engine.
    virtual bool check_spam(uint64_t inspection_id, uint64_t object_id, SpamQuery query) {
        (void)inspection_id;
        (void)object_id;
        (void)query;
        return false;
    }
    virtual void log(const ScanEvent& event) = 0;
    // Hands a sender notification to the daemon's Notifier (if any).
    virtual void notify(Notification notification) = 0;
    virtual InspectionCounters& counters(Service service) = 0;
    // A new event id, unique across workers and restarts in practice.
    virtual std::string next_event_id() = 0;
    // The worker's monotonic clock (milliseconds).
    virtual uint64_t now_ms() const = 0;
    // Hands a blocked object's original to the quarantine; false when it is
    // not kept (no quarantine, queue full, too big). Never blocks.
    virtual bool quarantine(QuarantineEntry entry, std::shared_ptr<const ObjectBuffer> bytes) {
        (void)entry;
        (void)bytes;
        return false;
    }
    virtual bool quarantining() const { return false; }
    // The daemon's FTP expectations (nullptr: none).
    virtual FtpExpectations* ftp_expectations() { return nullptr; }
    // The next ordered bytes of direction d of a flow still being decided
    // (FlowClassifier::observe_bytes()); a claim attaches the flow's
    // inspector (attach()) before this returns.
    virtual void classify(Flow& flow, Direction d, std::span<const uint8_t> bytes) {
        (void)flow, (void)d, (void)bytes;
    }
    // A callable for any thread: the worker redrives inspection
    // `inspection_id`'s flow on its own thread, if it still exists.
    virtual std::function<void()> waker(uint64_t inspection_id) {
        (void)inspection_id;
        return {};
    }
};

class FlowInspection final : public InspectorHost {
  public:
    FlowInspection(uint64_t id, Flow& flow, InspectionContext& context);
    ~FlowInspection() override;
    FlowInspection(const FlowInspection&) = delete;
    FlowInspection& operator=(const FlowInspection&) = delete;

    uint64_t id() const { return id_; }
    Flow& flow() const { return flow_; }
    // The transform of direction d for the flow's FlowStream.
    StreamTransform* transform(Direction d) { return &dispatch_[size_t(d)]; }

    // The flow was claimed for `service`: its inspector takes over, if the
    // service has one and [protocols.<name>] scan is on (otherwise the flow
    // is released: reason scan-false). Returns whether one inspects it now.
    bool attach(Service service);
    // An inspector inspects the flow (false: bytes pass unchanged).
    bool inspecting() const { return inspector_ && !released_; }
    // The inspector let go of the flow (release()).
    bool released() const { return released_; }

    void on_verdict(uint64_t object_id, const ScanVerdict& verdict);
    // The spam engine's verdict (check_spam()): to the inspector, not
    // counted as a scan.
    void on_spam_verdict(uint64_t object_id, const ScanVerdict& verdict);
    // The inspector asked for ticks (want_ticks()) and still inspects.
    bool wants_ticks() const { return ticks_ && inspecting(); }
    // A tick of the worker's timer: true if the flow's stream must be shown
    // its pending bytes again (redrive).
    bool on_tick(uint64_t now_ms);

    struct Requests {
        std::optional<Direction> close;  // send_and_close(): the direction that ends
        std::vector<uint8_t> message;    // what its receiver gets before the FIN
        bool reset = false;              // reset_both()
        // send(): own bytes for the receiver of each direction, in order.
        std::array<std::vector<uint8_t>, 2> own;
        bool redrive = false;  // redrive()
        bool empty() const {
            return !close && !reset && own[0].empty() && own[1].empty() && !redrive;
        }
    };
    Requests take_requests() { return std::exchange(requests_, {}); }
    size_t memory_bytes() const;

    // InspectorHost
    void scan(uint64_t id, const ObjectInfo& info,
              std::shared_ptr<const ObjectBuffer> bytes) override;
    bool check_spam(uint64_t id, SpamQuery query) override;
    std::string record(const ObjectInfo& info, const ScanVerdict& verdict,
                       std::string_view action) override;
    std::string record_fallback(const ObjectInfo& info, Category category, std::string_view reason,
                                std::string_view action) override;
    void send_and_close(Direction d, std::span<const uint8_t> bytes) override;
    void reset_both() override;
    void send(Direction d, std::span<const uint8_t> bytes) override;
    void redrive() override { requests_.redrive = true; }
    void notify(Notification n) override { context_.notify(std::move(n)); }
    void count(std::string_view name, uint64_t n) override;
    void note_allowlisted(const ObjectInfo& info) override;
    void release(ReleaseReason reason) override;
    bool quarantining() const override { return context_.quarantining(); }
    const ProtocolPolicy& policy() const override;
    const MessageTemplates& messages() const override;
    const ScanLimits& limits() const override;
    MessageFields message_fields() const override;
    std::string render_message(std::string_view name, const MessageFields& fields) const override;
    uint64_t now_ms() const override { return context_.now_ms(); }
    void want_ticks(bool on) override { ticks_ = on; }
    bool ended(Direction d) const override;
    FlowAddresses addresses() const override;
    FtpExpectations* ftp_expectations() override { return context_.ftp_expectations(); }
    std::shared_ptr<FtpSession> ftp_data() const override { return flow_.ftp_data; }
    std::function<void()> waker() override { return context_.waker(id_); }

  private:
    // Hands the bytes to the inspector of the flow, or passes them.
    class Dispatch final : public StreamTransform {
      public:
        Dispatch(FlowInspection& owner, Direction d) : owner_(owner), direction_(d) {}
        void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                      StreamSink& sink) override;

      private:
        FlowInspection& owner_;
        Direction direction_;
    };

    void count_action(std::string_view action);
    // One event log line (and its action counted); returns its id.
    std::string log_event(const ObjectInfo& info, const ScanVerdict& verdict,
                          std::string_view category, std::string_view action);
    // The quarantine hook: keeps info.original when `action` blocks (see
    // quarantine.h); returns the entry id, or "".
    std::string keep_original(const ObjectInfo& info, const ScanEvent& event);
    std::string flow_text() const;

    uint64_t id_;
    Flow& flow_;
    InspectionContext& context_;
    Service service_ = Service::None;
    std::array<Dispatch, 2> dispatch_;
    std::unique_ptr<Inspector> inspector_;
    bool released_ = false;
    bool ticks_ = false;
    Requests requests_;
};

}  // namespace nfqscan
