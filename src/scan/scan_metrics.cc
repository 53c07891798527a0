#include "scan_metrics.h"

#include <algorithm>

namespace nfqscan {

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
}

uint64_t LatencyHistogram::count() const {
    uint64_t n = 0;
    for (uint64_t c : counts)
        n += c;
    return n;
}

void AtomicHistogram::record(std::chrono::microseconds us) {
    const uint64_t v = static_cast<uint64_t>(std::max<int64_t>(0, us.count()));
    const auto it = std::lower_bound(kLatencyBucketsUs.begin(), kLatencyBucketsUs.end(), v);
    counts_[static_cast<size_t>(it - kLatencyBucketsUs.begin())].fetch_add(1, kRelaxed);
    total_us_.fetch_add(v, kRelaxed);
}

LatencyHistogram AtomicHistogram::snapshot() const {
    LatencyHistogram h;
    for (size_t i = 0; i < counts_.size(); ++i)
        h.counts[i] = counts_[i].load(kRelaxed);
    h.total_us = total_us_.load(kRelaxed);
    return h;
}

void AtomicEngineCounters::record(uint64_t bytes, std::chrono::microseconds busy, bool detection,
                                  bool error) {
    scans_.fetch_add(1, kRelaxed);
    bytes_.fetch_add(bytes, kRelaxed);
    busy_us_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, busy.count())), kRelaxed);
    if (detection) detections_.fetch_add(1, kRelaxed);
    if (error) errors_.fetch_add(1, kRelaxed);
}

void AtomicEngineCounters::add(const EngineCounters& c) {
    scans_.fetch_add(c.scans, kRelaxed);
    detections_.fetch_add(c.detections, kRelaxed);
    errors_.fetch_add(c.errors, kRelaxed);
    bytes_.fetch_add(c.bytes, kRelaxed);
    busy_us_.fetch_add(c.busy_us, kRelaxed);
}

EngineCounters AtomicEngineCounters::snapshot() const {
    return {scans_.load(kRelaxed), detections_.load(kRelaxed), errors_.load(kRelaxed),
            bytes_.load(kRelaxed), busy_us_.load(kRelaxed)};
}

void ScanMetrics::record_verdict(const ScanVerdict& verdict, uint64_t bytes, bool scanned) {
    completed_.fetch_add(1, kRelaxed);
    switch (verdict.kind) {
        case ScanVerdict::Kind::Clean:
            (verdict.skipped ? skipped_ : clean_).fetch_add(1, kRelaxed);
            break;
        case ScanVerdict::Kind::Infected:
            infected_.fetch_add(1, kRelaxed);
            break;
        case ScanVerdict::Kind::Error:
            errors_[static_cast<size_t>(verdict.error)].fetch_add(1, kRelaxed);
            break;
    }
    if (scanned) {
        bytes_.fetch_add(bytes, kRelaxed);
        scan_us_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, verdict.elapsed.count())),
                           kRelaxed);
        scan_latency_.record(verdict.elapsed);
    }
}

ScanStats ScanMetrics::snapshot() const {
    ScanStats s;
    s.submitted = submitted_.load(kRelaxed);
    s.completed = completed_.load(kRelaxed);
    s.clean = clean_.load(kRelaxed);
    s.skipped = skipped_.load(kRelaxed);
    s.infected = infected_.load(kRelaxed);
    for (size_t i = 0; i < kScanErrorCount; ++i)
        s.errors[i] = errors_[i].load(kRelaxed);
    s.bytes = bytes_.load(kRelaxed);
    s.scan_latency = scan_latency_.snapshot();
    s.queue_wait = queue_wait_.snapshot();
    s.clamav = clamav.snapshot();
    s.yara = yara.snapshot();
    s.scanner_restarts = scanner_restarts_.load(kRelaxed);
    s.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const uint64_t us = scan_us_.load(kRelaxed);
    s.throughput_mb_per_s = us > 0 ? static_cast<double>(s.bytes) / static_cast<double>(us) : 0.0;
    return s;
}

}  // namespace nfqscan
