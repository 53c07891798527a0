#include "engine_set.h"

#include <yara/error.h>

#include <chrono>

#include "scan_metrics.h"
#include "zip_check.h"

namespace nfqscan {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::microseconds since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
}

ScanError error_for_yara_code(int rc) {
    switch (rc) {
        case ERROR_SCAN_TIMEOUT:
            return ScanError::Timeout;
        default:
            // Memory, too many matches, internal limits.
            return ScanError::OutOfResource;
    }
}

// Everything the engines reported about one object; decide() ranks it.
class Findings {
  public:
    void add_yara(const YaraMatch& m, std::string_view path) {
        Detection d{ScanEngineKind::Yara, m.rule, std::string(path), m.category};
        // Keep the first match of each category (the outermost layer).
        auto& slot = m.category == ThreatCategory::Virus    ? virus_
                     : m.category == ThreatCategory::Policy ? policy_
                                                            : spam_;
        if (!slot) slot = std::move(d);
    }
    void add_clamav(std::string virname, std::string path) {
        if (!virus_)
            virus_ = Detection{ScanEngineKind::ClamAV, std::move(virname), std::move(path),
                               ThreatCategory::Virus};
    }
    void add_error(ScanError e, std::string reason, std::string path) {
        if (!error_) error_ = ScanVerdict::failed(e, std::move(reason), std::move(path));
    }
    bool has_virus() const { return virus_.has_value(); }

    ScanVerdict decide() const {
        if (virus_) return ScanVerdict::infected(*virus_);
        if (policy_) return ScanVerdict::infected(*policy_);
        if (error_) return *error_;
        if (spam_) return ScanVerdict::infected(*spam_);
        return ScanVerdict::clean();
    }

  private:
    std::optional<Detection> virus_, policy_, spam_;
    std::optional<ScanVerdict> error_;
};

// Runs inside ClamAV's recursion: YARA on every extracted layer, the ZIP
// directory check, and the declared size of archive members (ClamAV trims an
// oversized member to the file-size limit without saying so).
class LayerObserver : public ClamLayerObserver {
  public:
    LayerObserver(const YaraRules* yara, const ScanLimits& limits, Findings& findings,
                  ScanMetrics& metrics)
        : yara_(yara), limits_(limits), findings_(findings), metrics_(metrics) {}

    bool on_layer(const ClamLayer& layer) override {
        if (layer.type == "CL_TYPE_ZIP" && !layer.bytes.empty() &&
            !zip_directory_intact(layer.bytes))
            findings_.add_error(ScanError::Corrupt, "ZIP central directory missing or damaged",
                                std::string(layer.path));
        // The object itself was scanned by YARA before ClamAV started.
        if (layer.depth == 0 || yara_ == nullptr || layer.bytes.empty()) return false;
        const auto start = Clock::now();
        const YaraOutcome out =
            yara_->scan(layer.bytes, {layer.name, layer.type, static_cast<int64_t>(layer.depth)},
                        limits_.max_scan_time_ms);
        metrics_.yara.record(layer.bytes.size(), since(start), out.match.has_value(),
                             out.error != 0);
        if (out.error != 0)
            findings_.add_error(error_for_yara_code(out.error),
                                "yara error " + std::to_string(out.error), std::string(layer.path));
        if (!out.match) return false;
        findings_.add_yara(*out.match, layer.path);
        // Only a virus ends the scan; spam or policy matches let ClamAV go on
        // looking for something worse.
        return out.match->category == ThreatCategory::Virus;
    }

    void on_archive_member(std::string_view container_path, std::string_view name,
                           uint64_t declared_size, bool encrypted) override {
        std::string path(container_path);
        if (!name.empty()) path += "/" + std::string(name);
        if (declared_size > limits_.max_content_size)
            findings_.add_error(ScanError::ContentSize,
                                "archive member of " + std::to_string(declared_size) +
                                    " bytes exceeds max_content_size",
                                path);
        if (encrypted) findings_.add_error(ScanError::Encrypted, "encrypted archive member", path);
    }

  private:
    const YaraRules* yara_;
    const ScanLimits& limits_;
    Findings& findings_;
    ScanMetrics& metrics_;
};

// The first element of layer paths: a base name, so that a path given as a
// name (a URL, an FTP path) cannot pose as layers.
std::string object_name(const ScanObject& object) {
    std::string_view base = object.name;
    if (const size_t slash = base.find_last_of("/\\"); slash != std::string_view::npos)
        base.remove_prefix(slash + 1);
    if (base.empty()) return "object";
    std::string name;
    for (char c : base.substr(0, 255))
        name.push_back(static_cast<unsigned char>(c) < 0x20 ? '?' : c);
    return name;
}

}  // namespace

EngineSet::Built EngineSet::build(const ScanConfig& config, uint64_t generation) {
    const auto started = Clock::now();
    Built out;
    std::unique_ptr<EngineSet> set(new EngineSet());
    set->config_ = config;
    EnginesInfo& info = set->info_;
    info.generation = generation;
    info.backend = std::string(backend_name(config.engine));

    try {
        YaraRules::Compiled yara = YaraRules::compile(config.yara_rule_dirs);
        if (yara.failure) {
            out.failure = yara.failure;
            return out;
        }
        set->yara_ = std::move(yara.rules);
        info.yara_version = YaraRules::version();
        info.yara_rules = set->yara_->rule_count();
        info.yara_rule_files = set->yara_->files();
        info.warnings.insert(info.warnings.end(), yara.warnings.begin(), yara.warnings.end());

        // Beside clamd the local engine has no signatures: it only unpacks, so
        // that YARA still sees every layer and the limits still apply.
        ClamEngine::Options options;
        if (config.engine == ScanConfig::Backend::InProcess)
            options.db_dirs = config.clamav_db_dirs;
        options.limits = config.limits;
        options.temp_dir = config.temp_dir;
        options.clean_cache = config.clamav_clean_cache;
        ClamEngine::Loaded clam = ClamEngine::load(options);
        if (clam.failure) {
            out.failure = clam.failure;
            return out;
        }
        set->clam_ = std::move(clam.engine);
        info.warnings.insert(info.warnings.end(), clam.warnings.begin(), clam.warnings.end());

        if (config.engine == ScanConfig::Backend::Clamd) {
            set->clamd_.emplace(config.clamd_address,
                                std::chrono::milliseconds(config.clamd_connect_timeout_ms));
            info.clamd_address = config.clamd_address;
            // clamd may come up later; until then its scans are engine-not-ready.
            if (auto v = set->clamd_->version(
                    std::chrono::milliseconds(config.clamd_connect_timeout_ms)))
                info.clamav_version = *v;
            else
                info.warnings.push_back("clamd at " + config.clamd_address + " is not reachable");
        } else {
            info.clamav_version = ClamEngine::version();
            info.clamav_signatures = clam.signatures;
            info.clamav_db_dirs = clam.loaded_dirs;
            info.clamav_db_version = set->clam_->db_version();
            info.clamav_db_time = set->clam_->db_time();
            if (clam.signatures == 0 && info.yara_rules == 0)
                info.warnings.push_back("no ClamAV signatures and no YARA rules loaded");
        }
        set->filter_ = std::make_unique<ContentFilter>(config.profiles);
    } catch (const std::exception& e) {
        out.failure = LoadFailure{{}, 0, e.what()};
        return out;
    }

    info.loaded_at = std::chrono::system_clock::now();
    info.load_time = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    out.set = std::move(set);
    return out;
}

ScanVerdict EngineSet::scan(const ScanObject& object, ScanMetrics& metrics) const {
    const auto started = Clock::now();
    const ScanLimits& limits = config_.limits;
    const std::string name = object_name(object);

    if (object.bytes.size() > limits.max_content_size) {
        ScanVerdict v = ScanVerdict::failed(
            ScanError::ContentSize,
            "object of " + std::to_string(object.bytes.size()) + " bytes exceeds max_content_size",
            name);
        v.elapsed = since(started);
        return v;
    }
    if (!filter_->should_scan(object)) {
        ScanVerdict v = ScanVerdict::skipped_clean();
        v.elapsed = since(started);
        return v;
    }

    Findings findings;
    {
        const auto start = Clock::now();
        const YaraOutcome out = yara_->scan(object.bytes, {name, "", 0}, limits.max_scan_time_ms);
        metrics.yara.record(object.bytes.size(), since(start), out.match.has_value(),
                            out.error != 0);
        if (out.match) findings.add_yara(*out.match, name);
        if (out.error != 0)
            findings.add_error(error_for_yara_code(out.error),
                               "yara error " + std::to_string(out.error), name);
    }

    if (!findings.has_virus()) {
        const auto start = Clock::now();
        LayerObserver observer(yara_.get(), limits, findings, metrics);
        const ClamScanOutcome out = clam_->scan(object.bytes, name, &observer);
        bool detection = false, error = false;
        if (out.rc == CL_VIRUS) {
            if (auto e = error_for_clamav_signature(out.virname)) {
                findings.add_error(*e, out.virname, out.layer_path);
                error = true;
            } else if (!is_observer_virname(out.virname)) {
                findings.add_clamav(out.virname, out.layer_path);
                detection = true;
            }
        } else if (out.rc != CL_CLEAN) {
            findings.add_error(error_for_clamav_code(out.rc),
                               std::string("libclamav: ") + cl_strerror(out.rc), name);
            error = true;
        }
        // Beside clamd this pass only unpacked for YARA; clamd's work is counted below.
        if (!clamd_) metrics.clamav.record(object.bytes.size(), since(start), detection, error);
    }

    if (clamd_ && !findings.has_virus()) {
        const auto start = Clock::now();
        // clamd enforces its own MaxScanTime; allow it that and a little more
        // before calling it hung.
        const auto timeout =
            std::chrono::milliseconds(limits.max_scan_time_ms) + std::chrono::seconds(5);
        const ClamdReply reply = clamd_->scan(object.bytes, timeout);
        bool detection = false, error = true;
        switch (reply.status) {
            case ClamdReply::Status::Clean:
                error = false;
                break;
            case ClamdReply::Status::Found:
                if (auto e = error_for_clamav_signature(reply.text)) {
                    findings.add_error(*e, reply.text, name);
                } else {
                    findings.add_clamav(reply.text, name);
                    detection = true;
                    error = false;
                }
                break;
            case ClamdReply::Status::SizeLimit:
                findings.add_error(ScanError::ContentSize, "clamd: " + reply.text, name);
                break;
            case ClamdReply::Status::Timeout:
                findings.add_error(ScanError::Timeout, "clamd: " + reply.text, name);
                break;
            case ClamdReply::Status::Unreachable:
                findings.add_error(ScanError::EngineNotReady, "clamd unreachable: " + reply.text,
                                   name);
                break;
            case ClamdReply::Status::Error:
                // clamd failed on its side (memory, temp files, a limit it
                // reports as an error rather than a heuristic).
                findings.add_error(ScanError::OutOfResource, "clamd: " + reply.text, name);
                break;
        }
        metrics.clamav.record(object.bytes.size(), since(start), detection, error);
    }

    ScanVerdict verdict = findings.decide();
    verdict.elapsed = since(started);
    return verdict;
}

}  // namespace nfqscan
