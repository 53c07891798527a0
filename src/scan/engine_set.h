// EngineSet: one immutable snapshot of everything a scan needs (the ClamAV
// engine or the clamd client, the compiled YARA rules, the scan modes, the
// limits) and the scan of one object through it. Built off to the side by a
// reload; scans hold a shared_ptr, so a set retires only when its last scan
// ends.
#pragma once

#include <memory>
#include <optional>

#include "clamav_engine.h"
#include "clamd_client.h"
#include "content_filter.h"
#include "load_failure.h"
#include "nfqscan/scan.h"
#include "yara_rules.h"

namespace nfqscan {

class ScanMetrics;

class EngineSet {
  public:
    struct Built {
        std::unique_ptr<EngineSet> set;  // null on failure
        std::optional<LoadFailure> failure;
    };
    // Slow (loads and compiles everything); call it off the data path.
    static Built build(const ScanConfig& config, uint64_t generation);

    // Thread-safe. Runs YARA on the whole object, then ClamAV (in-process, or
    // a local unpack-only pass plus clamd) with YARA on every layer, and ranks
    // what they found: virus > policy > scan error > spam > clean.
    ScanVerdict scan(const ScanObject& object, ScanMetrics& metrics) const;

    const EnginesInfo& info() const { return info_; }
    const ScanConfig& config() const { return config_; }

  private:
    EngineSet() = default;

    ScanConfig config_;
    EnginesInfo info_;
    std::unique_ptr<ClamEngine> clam_;  // with signatures, or unpack-only beside clamd
    std::optional<ClamdClient> clamd_;
    std::unique_ptr<YaraRules> yara_;
    std::unique_ptr<ContentFilter> filter_;
};

}  // namespace nfqscan
