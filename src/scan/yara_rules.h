// libyara behind RAII: the rule files of the configured directories compiled
// once into an immutable YR_RULES, and a stock of YR_SCANNERs so that every
// concurrent caller scans with a scanner of its own. The scanners live and
// die with the rules, so a retired rule set takes its scanners with it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "load_failure.h"
#include "nfqscan/scan.h"

struct YR_RULES;
struct YR_RULE;
struct YR_SCAN_CONTEXT;

namespace nfqscan {

struct YaraMatch {
    std::string rule;
    ThreatCategory category = ThreatCategory::Virus;
};

// What a layer looks like to the rules: the external variables `filename`,
// `filetype` (ClamAV's type of the layer, empty for the object) and `depth`.
struct YaraLayer {
    std::string_view filename;
    std::string_view filetype;
    int64_t depth = 0;
};

struct YaraOutcome {
    // The most severe match (virus, then policy, then spam); a virus match ends
    // the scan at once.
    std::optional<YaraMatch> match;
    int error = 0;  // libyara ERROR_*; 0 when the scan completed
};

class YaraRules {
  public:
    struct Compiled {
        std::unique_ptr<YaraRules> rules;  // null on failure
        std::optional<LoadFailure> failure;
        std::vector<std::string> warnings;
    };
    static Compiled compile(const std::vector<std::string>& dirs);
    ~YaraRules();
    YaraRules(const YaraRules&) = delete;
    YaraRules& operator=(const YaraRules&) = delete;

    // Thread-safe.
    YaraOutcome scan(std::span<const uint8_t> bytes, const YaraLayer& layer,
                     uint32_t timeout_ms) const;

    uint64_t rule_count() const { return rule_count_; }
    const std::vector<std::string>& files() const { return files_; }
    static std::string version();

  private:
    YaraRules() = default;
    YR_SCAN_CONTEXT* acquire_scanner() const;
    void release_scanner(YR_SCAN_CONTEXT* scanner) const;

    YR_RULES* rules_ = nullptr;
    uint64_t rule_count_ = 0;
    std::vector<std::string> files_;
    std::unordered_map<const YR_RULE*, ThreatCategory> categories_;
    mutable std::mutex mutex_;
    mutable std::vector<YR_SCAN_CONTEXT*> idle_scanners_;
};

}  // namespace nfqscan
