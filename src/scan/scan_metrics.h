// The scan module's counters: verdicts by kind and category, latency
// histograms, per-engine work. Lock-free (relaxed atomics) because every pool
// thread records into them; summed into a ScanStats only when asked.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "nfqscan/scan.h"

namespace nfqscan {

class AtomicHistogram {
  public:
    void record(std::chrono::microseconds us);
    LatencyHistogram snapshot() const;

  private:
    std::array<std::atomic<uint64_t>, kLatencyBucketsUs.size() + 1> counts_{};
    std::atomic<uint64_t> total_us_{0};
};

class AtomicEngineCounters {
  public:
    void record(uint64_t bytes, std::chrono::microseconds busy, bool detection, bool error);
    // Counts recorded elsewhere (a scanner process) added to these.
    void add(const EngineCounters& c);
    EngineCounters snapshot() const;

  private:
    std::atomic<uint64_t> scans_{0}, detections_{0}, errors_{0}, bytes_{0}, busy_us_{0};
};

class ScanMetrics {
  public:
    ScanMetrics() : started_(std::chrono::steady_clock::now()) {}

    void record_submitted() { submitted_.fetch_add(1, std::memory_order_relaxed); }
    void record_queue_wait(std::chrono::microseconds us) { queue_wait_.record(us); }
    // A scanner process replaced after it died or hung.
    void record_scanner_restart() { scanner_restarts_.fetch_add(1, std::memory_order_relaxed); }
    // Every verdict handed out, with the object size and, when it was
    // actually scanned, the scan time.
    void record_verdict(const ScanVerdict& verdict, uint64_t bytes, bool scanned);

    AtomicEngineCounters clamav;
    AtomicEngineCounters yara;

    // Pool fields (threads, queue) are filled in by the caller.
    ScanStats snapshot() const;

  private:
    std::chrono::steady_clock::time_point started_;
    std::atomic<uint64_t> submitted_{0}, completed_{0}, clean_{0}, skipped_{0}, infected_{0};
    std::array<std::atomic<uint64_t>, kScanErrorCount> errors_{};
    std::atomic<uint64_t> bytes_{0}, scan_us_{0};
    std::atomic<uint64_t> scanner_restarts_{0};
    AtomicHistogram scan_latency_;
    AtomicHistogram queue_wait_;
};

}  // namespace nfqscan
