// QueueWorker: one thread per NFQUEUE, shared-nothing. It owns its queue
// socket, flow table, nDPI module and classifier, and runs an epoll loop over
// the queue, a task eventfd (requests from other threads, e.g. status) and a
// 1 s housekeeping timer. Other threads never touch its state directly: they
// post tasks and wait for the answer (call()).
#pragma once

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
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/nfqueue.h"

namespace nfqscan {

struct LabelCount {
    uint64_t active = 0;
    uint64_t total = 0;
};

struct WorkerSnapshot {
    uint16_t queue = 0;
    QueueCounters queue_counters;
    uint64_t packets_tcp = 0, packets_udp = 0, packets_other = 0, packets_malformed = 0;
    uint64_t released_verdicts = 0;  // packets answered with the release mark
    uint64_t flows_active = 0, flows_created = 0, flows_expired = 0, flows_evicted = 0;
    uint64_t flows_claimed = 0, flows_released = 0;  // decisions taken so far
    uint64_t max_flows = 0;
    uint64_t memory_bytes = 0;  // flow table plus classification state (nDPI)
    // Stream engine (flows whose bytes an inspector may rewrite).
    uint64_t streams_active = 0, stream_memory_bytes = 0;
    uint64_t stream_rewritten_packets = 0, stream_injected_packets = 0, stream_held_now = 0;
    uint64_t stream_conflicts = 0, stream_held_overflow = 0, stream_stalls = 0;
    uint64_t stream_sack_acks = 0;  // ACKs with SACK blocks sent to senders for held data
    std::map<std::string, LabelCount> dpi_protocols;
    std::map<std::string, LabelCount> services;
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
};

class QueueWorker {
  public:
    // Binds the queue now (errors surface to the caller); the thread starts
    // with start().
    QueueWorker(uint16_t queue, std::shared_ptr<const Config> config);
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
    class Loop;  // the thread's state: flow table, classifier, counters
    void run();

    uint16_t queue_number_;
    std::shared_ptr<const Config> config_;
    std::unique_ptr<NfQueue> nfqueue_;
    int task_fd_ = -1;
    std::mutex tasks_mutex_;
    std::vector<std::function<void()>> tasks_;
    Loop* loop_ = nullptr;  // set while the thread runs; used only on it
    std::atomic<bool> running_{false};
    std::thread thread_;
};

}  // namespace nfqscan
