// ScanPool: a fixed set of threads draining a bounded FIFO of jobs. try_push()
// never blocks and refuses when the queue is full, which is how overload
// becomes a too-many-requests verdict instead of a stalled queue worker.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nfqscan {

class ScanPool {
  public:
    using Job = std::function<void()>;

    ScanPool(uint32_t threads, size_t queue_length);
    // Joins the threads after the jobs already running; queued ones are dropped.
    ~ScanPool();
    ScanPool(const ScanPool&) = delete;
    ScanPool& operator=(const ScanPool&) = delete;

    bool try_push(Job job);

    uint32_t threads() const { return static_cast<uint32_t>(threads_.size()); }
    size_t capacity() const { return capacity_; }
    size_t depth() const;
    size_t depth_max() const;

  private:
    void run();

    const size_t capacity_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> queue_;
    size_t depth_max_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace nfqscan
