// QueueWorker: one thread per NFQUEUE, shared-nothing. It owns its queue
// socket, flow table, nDPI module and classifier, and runs an epoll loop over
// the queue, a task eventfd (requests from other threads, e.g. status) and a
// 1 s housekeeping timer. Other threads never touch its state directly: they
// post tasks and wait for the answer (call()).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/flow_stream.h"
#include "nfqscan/ftp_expectations.h"
#include "nfqscan/inspector.h"
#include "nfqscan/nfqueue.h"
#include "nfqscan/relay_device.h"
#include "nfqscan/scan.h"
#include "nfqscan/scan_event_log.h"

namespace nfqscan {

struct LabelCount {
    uint64_t active = 0;
    uint64_t total = 0;
};

class FlowStream;

// Stream engine totals (flows whose bytes an inspector may rewrite or relay).
struct StreamTotals {
    uint64_t active = 0, memory_bytes = 0;
    uint64_t memory_limit = 0;       // [stream] memory_limit, this worker's share
    uint64_t overflow_bypassed = 0;  // flows not inspected: the memory cap was reached
    uint64_t overflow_dropped = 0;   // packets dropped by overflow = "drop"
    uint64_t memory_refused = 0;     // segments of admitted flows dropped at the memory cap
    uint64_t memory_resets = 0;      // flows reset: over the cap and not progressing
    uint64_t held_now = 0;           // packets held for a gap right now
    uint64_t relaying_now = 0;
    uint64_t rewritten_packets = 0, injected_packets = 0;
    uint64_t sack_acks = 0;  // ACKs with SACK blocks sent to senders for held data
    uint64_t conflicts = 0, held_overflow = 0, stalls = 0;
    uint64_t tails_acknowledged = 0;  // kept input before a gap nfqscand acknowledged
    uint64_t relays = 0;              // directions that went into store-and-forward
    uint64_t relay_acks = 0;          // ACKs sent to senders for data the relay took
    uint64_t relay_segments = 0, relay_retransmissions = 0, relay_timeouts = 0;
    uint64_t relay_full = 0;           // segments dropped: relay buffer full
    uint64_t relay_gso_frames = 0;     // frames of several segments through the relay device
    uint64_t relay_device_frames = 0;  // all frames written to the relay device
    uint64_t relay_device_errors = 0;  // failed writes to it
    uint64_t relay_device_queued = 0;  // its frames the ruleset queued (mark rule missing)
    uint64_t inject_failed = 0;        // raw socket sends refused (injector.h)
    uint64_t inject_busy = 0;          // raw socket sends dropped: send buffer full
    uint64_t resets = 0;               // RSTs sent to peers
    uint64_t nat_flows = 0;            // flows whose own segments carry NAT addresses (conntrack)
    uint64_t engine_marked = 0;        // flows given the engine mark (engine_mark.h)
    // Of those, by the very packet after which they needed the engine.
    uint64_t engine_mark_carried = 0;
    PeerCheckCounters peer_checks;  // packets of the peers refused (flow_stream.h)
    // The counters (not the gauges) of one flow's stream.
    void add_counters(const FlowStream& stream);
    StreamTotals& operator+=(const StreamTotals& o);
};

// What a worker made of the packets it read, beyond the flows they belong to.
struct PacketCounters {
    uint64_t tcp = 0, udp = 0, other = 0;
    uint64_t malformed = 0;  // the decoder refused them (packet.h)
    // Of those, dropped: they named a flow in the stream engine, which never
    // saw their bytes (an evasion, or a desync of its sequence numbers).
    uint64_t malformed_dropped = 0;
    // TCP segments with a wrong checksum (one the kernel had not verified):
    // never classified nor taken into a stream; dropped for engine flows.
    uint64_t bad_checksum = 0;
    // Queued again with the release mark (the ruleset lacks the rule that
    // saves it): accepted, since NF_REPEAT would loop forever.
    uint64_t repeat_marked = 0;
    // Carrying the engine mark on a flow whose engine state is lost
    // (engine_mark.h): dropped; and the RSTs and probes that answered them.
    uint64_t engine_orphans = 0;
    uint64_t orphan_answers = 0;
    // Of a flow given the engine mark, without it (the ruleset lacks its
    // rules; a few can be queued just before the mark is saved).
    uint64_t engine_mark_missing = 0;
    // Handling that threw (a bug), and the packets dropped for it (those
    // not answered before the throw; nfqueue.h PacketGuard).
    uint64_t handling_errors = 0;
    uint64_t errors_dropped = 0;

    // Every counter with its name, for sums and status output.
    static constexpr std::pair<const char*, uint64_t PacketCounters::*> kFields[] = {
        {"tcp", &PacketCounters::tcp},
        {"udp", &PacketCounters::udp},
        {"other", &PacketCounters::other},
        {"malformed", &PacketCounters::malformed},
        {"malformed_dropped", &PacketCounters::malformed_dropped},
        {"bad_checksum", &PacketCounters::bad_checksum},
        {"repeat_marked", &PacketCounters::repeat_marked},
        {"engine_orphans", &PacketCounters::engine_orphans},
        {"orphan_answers", &PacketCounters::orphan_answers},
        {"engine_mark_missing", &PacketCounters::engine_mark_missing},
        {"handling_errors", &PacketCounters::handling_errors},
        {"errors_dropped", &PacketCounters::errors_dropped},
    };
    PacketCounters& operator+=(const PacketCounters& o) {
        for (const auto& [name, field] : kFields)
            this->*field += o.*field;
        return *this;
    }
};

struct WorkerSnapshot {
    uint16_t queue = 0;
    QueueCounters queue_counters;
    bool fail_open = false;  // in force now (suspended while flows are in the stream engine)
    PacketCounters packets;
    uint64_t released_verdicts = 0;  // packets answered with the release mark
    uint64_t flows_active = 0, flows_created = 0, flows_expired = 0, flows_evicted = 0;
    uint64_t flows_claimed = 0, flows_released = 0;  // decisions taken so far
    uint64_t max_flows = 0;
    uint64_t memory_bytes = 0;  // flow table plus classification state (nDPI)
    StreamTotals streams;
    std::map<std::string, LabelCount> dpi_protocols;
    std::map<std::string, LabelCount> services;
    std::array<InspectionCounters, kServiceCount> protocols;  // by Service
};

// Where one direction of a flow in the stream engine stands (offsets from
// the start of that direction's data): for looking into a stalled transfer.
struct StreamDirectionInfo {
    uint64_t in_next = 0, in_mapped = 0;                 // input taken, and mapped by the inspector
    uint64_t out_acked = 0, out_sent = 0, out_next = 0;  // output acknowledged, sent, produced
    uint64_t held_segments = 0, held_bytes = 0;          // out of order, behind a gap
    bool relaying = false;
};

struct FlowInfo {
    uint16_t queue = 0;
    std::string protocol;  // "tcp" / "udp"
    std::string client, server;
    uint16_t client_port = 0, server_port = 0;
    std::string state, dpi, service, disposition, claimed_by;
    bool midstream = false;
    uint64_t packets_c2s = 0, packets_s2c = 0, bytes_c2s = 0, bytes_s2c = 0;
    double age_s = 0, idle_s = 0;
    std::optional<std::array<StreamDirectionInfo, 2>> stream;  // c2s, s2c
};

// The daemon's services a worker's inspectors use (borrowed: they outlive
// the workers' threads).
class Quarantine;

struct WorkerServices {
    ScanService* scan = nullptr;  // nullptr: objects get engine-not-ready
    std::function<std::shared_ptr<EventLog>()> event_log;
    Notifier* notifier = nullptr;  // nullptr: notifications are dropped
    // The FTP data connections every worker's control inspectors predict
    // (nullptr: none are predicted).
    FtpExpectations* ftp = nullptr;
    // Besides the event log: every event as it is logged (a replay's report).
    std::function<void(const ScanEvent&)> on_event;
    // The spam engine's callers ([spam]; nullptr: no mail is asked about).
    SpamChecker* spam = nullptr;
    // Where blocked objects are kept (nullptr: [quarantine] dir is "").
    Quarantine* quarantine = nullptr;
};

// A worker's queue of the relay device, when nfqscand has one.
struct WorkerRelayDevice {
    std::unique_ptr<TunQueue> queue;
    GsoOutput families;  // what the device carries
    int ifindex = 0;
};

class QueueWorker {
  public:
    // Binds the queue now (errors surface to the caller); the thread starts
    // with start().
    QueueWorker(uint16_t queue, std::shared_ptr<const Config> config,
                WorkerRelayDevice relay_device = {}, WorkerServices services = {});
    ~QueueWorker();
    QueueWorker(const QueueWorker&) = delete;
    QueueWorker& operator=(const QueueWorker&) = delete;

    void start();
    void stop();
    uint16_t queue() const { return queue_number_; }

    // Runs `task` on the worker thread. Never blocks the worker.
    void post(std::function<void()> task);

    // Runs `task` on the worker thread and waits for its result.
    template <class R>
    std::optional<R> call(std::function<R()> task, std::chrono::milliseconds timeout) {
        auto promise = std::make_shared<std::promise<R>>();
        std::future<R> future = promise->get_future();
        post([promise, task = std::move(task)] { promise->set_value(task()); });
        if (future.wait_for(timeout) != std::future_status::ready) return std::nullopt;
        return future.get();
    }

    // Everything, walking the flow table (per-label counts): for `status`.
    std::optional<WorkerSnapshot> snapshot(std::chrono::milliseconds timeout);
    // Counters only, no walk: cheap enough for a periodic status line.
    struct Brief {
        uint64_t flows_active = 0;
        uint64_t packets = 0;
    };
    std::optional<Brief> brief(std::chrono::milliseconds timeout);
    std::optional<std::vector<FlowInfo>> flows(size_t limit, std::chrono::milliseconds timeout);
    void apply_config(std::shared_ptr<const Config> config);

  private:
    friend class OfflineWorker;
    class Loop;      // the thread's state: flow table, classifier, counters
    class TaskSink;  // scan completions, posted to this worker's loop
    void run();

    uint16_t queue_number_;
    std::shared_ptr<const Config> config_;
    WorkerRelayDevice relay_device_;  // handed to the thread's Loop
    WorkerServices services_;
    std::shared_ptr<TaskSink> completions_;
    std::unique_ptr<NfQueue> nfqueue_;
    int task_fd_ = -1;
    std::mutex tasks_mutex_;
    std::vector<std::function<void()>> tasks_;
    Loop* loop_ = nullptr;  // set while the thread runs; used only on it
    std::atomic<bool> running_{false};
    std::thread thread_;
};

// What stands in for the live world around a worker's packet handling when
// it runs offline (nfqscand --replay, replay.h): the clock it reads, and
// where the segments it would send go. Conntrack is never asked.
struct OfflineWorld {
    std::function<uint64_t()> clock;                 // milliseconds, the capture's time
    std::function<void(const PacketVerdict&)> sent;  // Inject / InjectFrame, never sent
};

// A worker's packet handling (QueueWorker's Loop: the same flow table,
// classifier, stream engine, inspectors and policy) without its thread,
// queue socket, raw sockets and relay device, driven by the caller.
class OfflineWorker {
  public:
    OfflineWorker(VerdictQueue& queue, std::shared_ptr<const Config> config,
                  WorkerServices services, std::shared_ptr<CompletionSink> completions,
                  OfflineWorld world);
    ~OfflineWorker();
    OfflineWorker(const OfflineWorker&) = delete;
    OfflineWorker& operator=(const OfflineWorker&) = delete;

    // As the queue hands packets over: a throw drops the packet (PacketGuard).
    void on_packet(const QueuedPacket& packet);
    // The end of a batch of packets or tasks: deferred output goes out.
    void end_batch();
    // The worker's 1 s tick: expiry, inspector ticks, memory accounting.
    void housekeeping();
    // The relays' retransmission timers; whether any relay is still active.
    bool relay_timers();
    // Objects handed to the scan service whose verdict has not come back.
    uint64_t scans_in_flight() const;
    WorkerSnapshot snapshot();

  private:
    std::unique_ptr<QueueWorker::Loop> loop_;
};

}  // namespace nfqscan
