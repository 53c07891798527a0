// Names and JSON forms of the scan module's public types.
#include <nlohmann/json.hpp>

#include <array>
#include <cstring>

#include "nfqscan/object_buffer.h"
#include "nfqscan/scan.h"
#include "nfqscan/timestamp.h"

namespace nfqscan {
namespace {

constexpr std::array<std::string_view, 3> kCategoryNames = {"virus", "spam", "policy"};
constexpr std::array<std::string_view, kScanErrorCount> kErrorNames = {
    "content-size", "decompress-layer", "timeout",         "encrypted",
    "corrupt",      "engine-not-ready", "out-of-resource", "too-many-requests"};

nlohmann::json histogram_json(const LatencyHistogram& h) {
    nlohmann::json buckets = nlohmann::json::array();
    for (size_t i = 0; i < h.counts.size(); ++i) {
        nlohmann::json b;
        if (i < kLatencyBucketsUs.size())
            b["le_us"] = kLatencyBucketsUs[i];
        else
            b["le_us"] = "inf";
        b["count"] = h.counts[i];
        buckets.push_back(b);
    }
    const uint64_t n = h.count();
    return {{"count", n},
            {"total_us", h.total_us},
            {"mean_us", n > 0 ? h.total_us / n : 0},
            {"buckets", buckets}};
}

nlohmann::json engine_json(const EngineCounters& c) {
    return {{"scans", c.scans},
            {"detections", c.detections},
            {"errors", c.errors},
            {"bytes", c.bytes},
            {"busy_us", c.busy_us}};
}

}  // namespace

std::string_view threat_category_name(ThreatCategory c) {
    return kCategoryNames[static_cast<size_t>(c)];
}

std::optional<ThreatCategory> threat_category_from_name(std::string_view name) {
    for (size_t i = 0; i < kCategoryNames.size(); ++i)
        if (kCategoryNames[i] == name) return static_cast<ThreatCategory>(i);
    return std::nullopt;
}

std::string_view scan_error_name(ScanError e) {
    return kErrorNames[static_cast<size_t>(e)];
}

std::optional<ScanError> scan_error_from_name(std::string_view name) {
    for (size_t i = 0; i < kErrorNames.size(); ++i)
        if (kErrorNames[i] == name) return static_cast<ScanError>(i);
    return std::nullopt;
}

std::string_view scan_engine_name(ScanEngineKind e) {
    switch (e) {
        case ScanEngineKind::ClamAV:
            return "clamav";
        case ScanEngineKind::Yara:
            return "yara";
        case ScanEngineKind::Rspamd:
            return "rspamd";
    }
    return "clamav";
}

std::string_view backend_name(ScanConfig::Backend b) {
    return b == ScanConfig::Backend::Clamd ? "clamd" : "inprocess";
}

std::optional<ScanConfig::Backend> backend_from_name(std::string_view name) {
    if (name == "inprocess") return ScanConfig::Backend::InProcess;
    if (name == "clamd") return ScanConfig::Backend::Clamd;
    return std::nullopt;
}

std::string_view isolation_name(ScanConfig::Isolation i) {
    return i == ScanConfig::Isolation::Thread ? "thread" : "process";
}

std::optional<ScanConfig::Isolation> isolation_from_name(std::string_view name) {
    if (name == "process") return ScanConfig::Isolation::Process;
    if (name == "thread") return ScanConfig::Isolation::Thread;
    return std::nullopt;
}

std::string_view reload_mode_name(ScanConfig::ReloadMode m) {
    return m == ScanConfig::ReloadMode::Blocking ? "blocking" : "concurrent";
}

std::optional<ScanConfig::ReloadMode> reload_mode_from_name(std::string_view name) {
    if (name == "concurrent") return ScanConfig::ReloadMode::Concurrent;
    if (name == "blocking") return ScanConfig::ReloadMode::Blocking;
    return std::nullopt;
}

ScanVerdict ScanVerdict::clean() {
    return {};
}

ScanVerdict ScanVerdict::skipped_clean() {
    ScanVerdict v;
    v.skipped = true;
    return v;
}

ScanVerdict ScanVerdict::infected(Detection detection) {
    ScanVerdict v;
    v.kind = Kind::Infected;
    v.detection = std::move(detection);
    return v;
}

ScanVerdict ScanVerdict::failed(ScanError error, std::string reason, std::string layer_path) {
    ScanVerdict v;
    v.kind = Kind::Error;
    v.error = error;
    v.reason = std::move(reason);
    v.layer_path = std::move(layer_path);
    return v;
}

ScanObject ScanObject::copy_of(std::string_view bytes, std::string name) {
    auto buffer = std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
    return sharing(std::move(buffer), std::move(name));
}

ScanObject ScanObject::sharing(std::shared_ptr<const std::vector<uint8_t>> buffer,
                               std::string name) {
    ScanObject o;
    if (buffer) o.bytes = {buffer->data(), buffer->size()};
    o.owner = std::move(buffer);
    o.name = std::move(name);
    return o;
}

ScanObject ScanObject::in_file(std::shared_ptr<const ObjectBuffer> buffer, std::string name) {
    ScanObject o;
    if (buffer) o.bytes = buffer->bytes();
    o.owner = buffer;
    o.file = std::move(buffer);
    o.name = std::move(name);
    return o;
}

void to_json(nlohmann::json& j, const ScanVerdict& v) {
    switch (v.kind) {
        case ScanVerdict::Kind::Clean:
            j = {{"verdict", "clean"}, {"skipped", v.skipped}};
            break;
        case ScanVerdict::Kind::Infected:
            j = {{"verdict", "infected"},
                 {"engine", scan_engine_name(v.detection.engine)},
                 {"name", v.detection.signature},
                 {"layer", v.detection.layer_path},
                 {"category", threat_category_name(v.detection.category)}};
            if (v.detection.score) j["score"] = *v.detection.score;
            break;
        case ScanVerdict::Kind::Error:
            j = {{"verdict", "error"},
                 {"category", scan_error_name(v.error)},
                 {"reason", v.reason},
                 {"layer", v.layer_path}};
            break;
    }
    if (!v.is_error()) j["cached"] = v.cached;
    j["elapsed_ms"] = double(v.elapsed.count()) / 1000.0;
}

void to_json(nlohmann::json& j, const EnginesInfo& info) {
    j = {{"generation", info.generation},
         {"backend", info.backend},
         {"clamav",
          {{"version", info.clamav_version},
           {"db_version", info.clamav_db_version},
           {"db_time", info.clamav_db_time},
           {"signatures", info.clamav_signatures},
           {"db_dirs", info.clamav_db_dirs},
           {"clamd_address", info.clamd_address}}},
         {"yara",
          {{"version", info.yara_version},
           {"rules", info.yara_rules},
           {"rule_files", info.yara_rule_files}}},
         {"loaded_at", iso8601(info.loaded_at)},
         {"load_time_ms", info.load_time.count()},
         {"warnings", info.warnings}};
}

void to_json(nlohmann::json& j, const ReloadResult& r) {
    j = {{"ok", r.ok}, {"engines", r.engines}};
    if (!r.ok) {
        j["error"] = r.error;
        j["file"] = r.file;
        j["line"] = r.line;
    }
}

void to_json(nlohmann::json& j, const ScanStats& s) {
    nlohmann::json errors = nlohmann::json::object();
    for (size_t i = 0; i < kScanErrorCount; ++i)
        errors[std::string(kErrorNames[i])] = s.errors[i];
    j = {{"threads", s.threads},
         {"isolation", s.isolation},
         {"scanner_pids", s.scanner_pids},
         {"scanner_restarts", s.scanner_restarts},
         {"queue",
          {{"capacity", s.queue_capacity},
           {"depth", s.queue_depth},
           {"depth_max", s.queue_depth_max}}},
         {"submitted", s.submitted},
         {"completed", s.completed},
         {"clean", s.clean},
         {"skipped", s.skipped},
         {"infected", s.infected},
         {"errors", errors},
         {"bytes", s.bytes},
         {"scan_latency", histogram_json(s.scan_latency)},
         {"queue_wait", histogram_json(s.queue_wait)},
         {"engines", {{"clamav", engine_json(s.clamav)}, {"yara", engine_json(s.yara)}}},
         {"cache",
          {{"capacity", s.cache.capacity},
           {"entries", s.cache.entries},
           {"memory_bytes", s.cache.memory_bytes},
           {"hits", s.cache.hits},
           {"misses", s.cache.misses},
           {"inserts", s.cache.inserts},
           {"evictions", s.cache.evictions},
           {"invalidated", s.cache.invalidated}}},
         {"uptime_s", s.uptime_s},
         {"throughput_mb_per_s", s.throughput_mb_per_s}};
}

}  // namespace nfqscan
