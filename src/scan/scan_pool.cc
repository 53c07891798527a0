#include "scan_pool.h"

#include <pthread.h>

#include <algorithm>
#include <string>

namespace nfqscan {

ScanPool::ScanPool(uint32_t threads, size_t queue_length) : capacity_(queue_length) {
    threads = std::max<uint32_t>(threads, 1);
    threads_.reserve(threads);
    for (uint32_t i = 0; i < threads; ++i) {
        threads_.emplace_back([this] { run(); });
        const std::string name = "nfqscan-scan" + std::to_string(i);
        pthread_setname_np(threads_.back().native_handle(), name.substr(0, 15).c_str());
    }
}

ScanPool::~ScanPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        queue_.clear();
    }
    wake_.notify_all();
    for (std::thread& t : threads_)
        t.join();
}

bool ScanPool::try_push(Job job) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_ || queue_.size() >= capacity_) return false;
        queue_.push_back(std::move(job));
        depth_max_ = std::max(depth_max_, queue_.size());
    }
    wake_.notify_one();
    return true;
}

size_t ScanPool::depth() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
}

size_t ScanPool::depth_max() const {
    std::lock_guard lock(mutex_);
    return depth_max_;
}

void ScanPool::run() {
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        job();
    }
}

}  // namespace nfqscan
