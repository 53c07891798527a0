// Scan service: judges each transferred object (mail message, attachment,
// HTTP body, FTP file) with ClamAV and YARA and hands the verdict back to the
// caller's own event loop. Scans run on a fixed thread pool behind a bounded
// queue, so a queue worker never blocks; the engines (ClamAV database, YARA
// rules) form one immutable EngineSet that a reload builds off to the side and
// swaps in atomically. ClamAV runs in-process (libclamav) or in clamd; YARA
// always runs in-process, on the whole object and on every layer ClamAV
// unpacks (archives, mail parts, packed executables).
//
// Scanner processes (ScanConfig::isolation, default Process): "in-process"
// means inside nfqscand's engines, not on its threads. After a reload has
// built an EngineSet, the service forks one scanner process per pool thread;
// the compiled engines are shared with them copy-on-write. A pool thread
// copies its object into its scanner's memfd, sends a small request on a
// socketpair and waits for a compact verdict message; an object already in a
// memory file (ObjectBuffer, what inspectors hand over) is not copied: its
// descriptor goes with the request. Why:
//   - scaling: libclamav extracts layers to temp files and maps them back,
//     under a process-wide lock; in one multi-threaded process every such
//     mapping change is a TLB shootdown to the other cores. Two threads
//     reached 1.4-1.7x of one, two scanner processes reach what two separate
//     processes do (tools/bench scan);
//   - containment: a parser crash on hostile content kills one scanner, which
//     becomes an error verdict (corrupt; out-of-resource if it was killed from
//     outside, e.g. by the OOM killer) and is forked again; a scanner without
//     a verdict well past the scan time limit is killed (timeout).
// A reload forks new scanners over the new engines; scans in flight finish on
// the old scanners, which end when their last scan is done. Until the first
// engines and scanners are ready, verdicts are engine-not-ready.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nfqscan {

// ---------------------------------------------------------------------------
// Verdicts

// What a detection means to the policy (YARA rule metadata `category`).
enum class ThreatCategory : uint8_t { Virus, Spam, Policy };

// Why an object could not be judged. The policy maps each one to pass or block
// per protocol, so every limit must land in one of these rather than in a
// silent "clean".
enum class ScanError : uint8_t {
    ContentSize,      // object or an extracted file larger than the limits
    DecompressLayer,  // nesting or number of extracted files beyond the limits
    Timeout,
    Encrypted,  // password-protected archive or document
    Corrupt,    // broken archive or executable
    EngineNotReady,
    OutOfResource,
    TooManyRequests,  // scan queue full
};
inline constexpr size_t kScanErrorCount = 8;

// Rspamd: a spam engine's verdict (nfqscan/spam.h), never the scan service's.
enum class ScanEngineKind : uint8_t { ClamAV, Yara, Rspamd };

std::string_view threat_category_name(ThreatCategory c);  // "virus" | "spam" | "policy"
std::optional<ThreatCategory> threat_category_from_name(std::string_view name);
std::string_view scan_error_name(ScanError e);  // "content-size", ..., "too-many-requests"
std::optional<ScanError> scan_error_from_name(std::string_view name);
std::string_view scan_engine_name(ScanEngineKind e);  // "clamav" | "yara" | "rspamd"

struct Detection {
    ScanEngineKind engine = ScanEngineKind::ClamAV;
    std::string signature;   // ClamAV virus name or YARA rule identifier
    std::string layer_path;  // "mail/attachment.zip/inner.exe"; unnamed layers as "(msexe)"
    ThreatCategory category = ThreatCategory::Virus;
    std::optional<double> score;  // spam engines: the message's score
};

// One verdict per object. When engines or layers disagree the most severe
// finding wins: a virus, then a policy match, then a scan error, then spam.
struct ScanVerdict {
    enum class Kind : uint8_t { Clean, Infected, Error };
    Kind kind = Kind::Clean;
    bool skipped = false;  // Clean only: the profile's scan mode excluded the object
    Detection detection;   // Infected only
    ScanError error = ScanError::EngineNotReady;  // Error only
    std::string reason;      // Error only: what tripped, e.g. "Heuristics.Encrypted.Zip"
    std::string layer_path;  // Error only: where, when known
    std::chrono::microseconds elapsed{0};  // time spent scanning (queue wait excluded)
    // Clean or Infected only: the verdict came from the verdict cache (an
    // identical object judged by the same engines), nothing was scanned.
    bool cached = false;

    static ScanVerdict clean();
    static ScanVerdict skipped_clean();
    static ScanVerdict infected(Detection detection);
    static ScanVerdict failed(ScanError error, std::string reason, std::string layer_path = {});

    bool is_clean() const { return kind == Kind::Clean; }
    bool is_infected() const { return kind == Kind::Infected; }
    bool is_error() const { return kind == Kind::Error; }
};

// The one JSON shape of a verdict, everywhere (`nfqscanctl scan --json`, the
// event log, `detections --json`), each with "elapsed_ms":
// {"verdict":"infected","engine":"clamav","name":..,"layer":..,"category":"virus"}
// {"verdict":"error","category":"timeout","reason":..,"layer":..}
// {"verdict":"clean","skipped":false}
// plus "cached" (true for a verdict cache hit).
void to_json(nlohmann::json& j, const ScanVerdict& v);

// ---------------------------------------------------------------------------
// Configuration (a plain struct: the daemon's config module fills it from TOML)

struct ScanLimits {
    // Largest object scanned; bigger ones are content-size without scanning.
    // Also the largest file ClamAV extracts (CL_ENGINE_MAX_FILESIZE).
    uint64_t max_content_size = 32ull << 20;
    // Bytes ClamAV may read across all layers of one object (CL_ENGINE_MAX_SCANSIZE).
    uint64_t max_scan_size = 128ull << 20;
    // Nesting depth (CL_ENGINE_MAX_RECURSION); ClamAV's and clamd's default, so
    // that both backends judge alike out of the box.
    uint32_t max_layers = 17;
    uint32_t max_files = 10000;         // files extracted from one object (CL_ENGINE_MAX_FILES)
    uint32_t max_scan_time_ms = 30000;  // CL_ENGINE_MAX_SCANTIME; YARA and clamd too
};

// Which objects a profile scans. Listed: only those whose name has a listed
// extension, or whose declared MIME type or content-sniffed type (libmagic)
// matches a listed type ("application/zip", "application/*"). Either signal
// suffices, because a declared type or a name alone is easy to fake.
struct ScanProfile {
    enum class Mode : uint8_t { All, Listed };
    Mode mode = Mode::All;
    std::vector<std::string> extensions;  // without the dot, case-insensitive
    std::vector<std::string> mime_types;
};

struct ScanConfig {
    enum class Backend : uint8_t { InProcess, Clamd };
    Backend engine = Backend::InProcess;
    // clamd: a unix socket path (starts with '/') or "host:port" / "[v6]:port".
    std::string clamd_address = "/run/clamav/clamd.ctl";
    uint32_t clamd_connect_timeout_ms = 1000;

    // Every directory is loaded as a whole (official .cvd/.cld plus .ndb,
    // .hdb, .ldb, ...). A missing or empty directory is a warning, a broken
    // file an error.
    std::vector<std::string> clamav_db_dirs = {"/var/lib/clamav", "/etc/nfqscan/clamav"};
    std::vector<std::string> yara_rule_dirs = {"/etc/nfqscan/yara"};  // *.yar, *.yara
    std::string temp_dir;  // where ClamAV extracts layers; empty: $TMPDIR or /tmp

    ScanLimits limits;
    // Profile name -> scan mode. Objects name their profile; an unknown or empty
    // name uses "default", and a missing "default" scans everything.
    std::map<std::string, ScanProfile> profiles;

    // Verdicts kept by the verdict cache (least recently used evicted beyond
    // it); 0 turns the cache off. Applies at reload, which also empties it.
    // Not used with engine = Clamd: clamd updates its signatures without
    // nfqscand knowing, so a generation would not tell a stale verdict.
    uint32_t cache_entries = 100000;
    // libclamav's own clean-file cache, off: a cached layer's children are
    // not unpacked again and YARA would not see them. Not a configuration
    // key; nfqscan-scanbench turns it on to measure what it saves.
    bool clamav_clean_cache = false;

    uint32_t pool_threads = 0;    // 0: one per CPU
    uint32_t queue_length = 256;  // objects waiting for a thread, beyond that too-many-requests

    // Where the engines run. Process: each pool thread hands its objects to a
    // scanner process forked from the service once the engines are built
    // (engines shared copy-on-write; see "Scanner processes" below). Thread:
    // on the pool threads themselves, in this process.
    enum class Isolation : uint8_t { Process, Thread };
    Isolation isolation = Isolation::Process;
    // The user scanner processes switch to when the daemon runs as root
    // ("" = keep the daemon's uid; capabilities are dropped either way).
    std::string scanner_user = "nobody";

    // How a reload switches engines. Concurrent: the new set is built while
    // the old one keeps scanning (memory for two sets during the switch).
    // Blocking: the old set is freed first and objects are engine-not-ready
    // until the new one is in (clamd's ConcurrentDatabaseReload no); a
    // broken update then leaves no engines until it is fixed.
    enum class ReloadMode : uint8_t { Concurrent, Blocking };
    ReloadMode reload = ReloadMode::Concurrent;
    // Signature updates (clamav_db_dirs, yara_rule_dirs) are picked up by
    // nfqscand itself: inotify on the directories (watch_signatures) and a
    // check of every file's size and mtime each self_check_s seconds
    // (0: never), as clamd's SelfCheck.
    bool watch_signatures = true;
    uint32_t self_check_s = 600;
};

std::string_view backend_name(ScanConfig::Backend b);  // "inprocess" | "clamd"
std::optional<ScanConfig::Backend> backend_from_name(std::string_view name);
std::string_view isolation_name(ScanConfig::Isolation i);  // "process" | "thread"
std::optional<ScanConfig::Isolation> isolation_from_name(std::string_view name);
std::string_view reload_mode_name(ScanConfig::ReloadMode m);  // "concurrent" | "blocking"
std::optional<ScanConfig::ReloadMode> reload_mode_from_name(std::string_view name);
// Whether libclamav's cl_load() picks `filename` up from a database
// directory (by its extension), and whether a YARA rule directory does.
bool is_clamav_database_name(std::string_view filename);
bool is_yara_rule_name(std::string_view filename);

// ---------------------------------------------------------------------------
// Objects and completions

class ObjectBuffer;  // nfqscan/object_buffer.h

struct ScanObject {
    // The bytes to scan; `owner` keeps them alive until the scan is done, so an
    // inspector can hand its relay buffer over without a copy.
    std::span<const uint8_t> bytes;
    std::shared_ptr<const void> owner;
    // Set when the bytes are an ObjectBuffer's (then `bytes` is its bytes()):
    // a scanner process maps its memory file instead of getting a copy.
    // Without it (mapped files, copies) the bytes are copied into the
    // scanner's own memfd.
    std::shared_ptr<const ObjectBuffer> file;
    std::string name;       // file name if known (its base name starts layer paths)
    std::string mime_type;  // declared by the protocol (Content-Type), may be empty
    std::string profile;    // scan mode profile; empty: "default"

    static ScanObject copy_of(std::string_view bytes, std::string name = {});
    static ScanObject sharing(std::shared_ptr<const std::vector<uint8_t>> buffer,
                              std::string name = {});
    // The bytes of `buffer`, which the object keeps alive (owner and file).
    static ScanObject in_file(std::shared_ptr<const ObjectBuffer> buffer, std::string name = {});
};

// The caller's event loop. Completions are posted here from pool threads (or,
// for immediate answers such as too-many-requests, from the submitting thread)
// and run on the loop's own thread, never inside submit().
class CompletionSink {
  public:
    virtual ~CompletionSink() = default;
    virtual void post(std::function<void()> task) = 0;
};

using ScanCallback = std::function<void(ScanVerdict)>;

// ---------------------------------------------------------------------------
// Engines and statistics

struct EnginesInfo {
    uint64_t generation = 0;                  // 1 for the first set, +1 per successful reload
    std::string backend;                      // "inprocess" | "clamd"
    std::string clamav_version;               // libclamav, or clamd's VERSION answer
    uint32_t clamav_db_version = 0;           // of daily/main when official databases are loaded
    int64_t clamav_db_time = 0;               // unix time of that database, 0 if none
    uint64_t clamav_signatures = 0;           // 0 with clamd (not reported by it)
    std::vector<std::string> clamav_db_dirs;  // the directories that contributed
    std::string clamd_address;
    std::string yara_version;
    uint64_t yara_rules = 0;
    std::vector<std::string> yara_rule_files;
    std::chrono::system_clock::time_point loaded_at{};
    std::chrono::milliseconds load_time{0};
    std::vector<std::string> warnings;  // e.g. a configured directory that is missing
};
void to_json(nlohmann::json& j, const EnginesInfo& info);

struct ReloadResult {
    bool ok = false;
    std::string error;  // "file:line: message" when a file is to blame
    std::string file;
    uint32_t line = 0;
    EnginesInfo engines;  // the set now in use (the old one on failure, if any)
};
void to_json(nlohmann::json& j, const ReloadResult& r);

// Upper bounds (microseconds) of the latency histogram buckets; one more
// bucket counts everything slower.
inline constexpr std::array<uint64_t, 14> kLatencyBucketsUs = {
    500,    1000,   2000,   5000,    10000,   20000,   50000,
    100000, 200000, 500000, 1000000, 2000000, 5000000, 10000000};

struct LatencyHistogram {
    std::array<uint64_t, kLatencyBucketsUs.size() + 1> counts{};
    uint64_t total_us = 0;
    uint64_t count() const;
};

struct EngineCounters {
    uint64_t scans = 0;  // objects (ClamAV) or layers (YARA) scanned
    uint64_t detections = 0;
    uint64_t errors = 0;
    uint64_t bytes = 0;
    uint64_t busy_us = 0;
};

// The verdict cache (ScanConfig::cache_entries). Every object submitted while
// it is on counts one hit or one miss, except those over max_content_size.
struct VerdictCacheStats {
    uint64_t capacity = 0;  // cache_entries in force; 0: off
    uint64_t entries = 0;
    uint64_t memory_bytes = 0;  // entries, index and strings (estimate)
    uint64_t hits = 0, misses = 0;
    uint64_t inserts = 0;
    uint64_t evictions = 0;    // least recently used, dropped beyond capacity
    uint64_t invalidated = 0;  // dropped by a reload (new engines)
};

struct ScanStats {
    uint32_t threads = 0;
    std::string isolation;          // "process" | "thread"
    std::vector<int> scanner_pids;  // process isolation: the current engines' scanners
    uint64_t scanner_restarts = 0;  // scanners replaced after dying or hanging
    uint64_t queue_capacity = 0, queue_depth = 0, queue_depth_max = 0;
    uint64_t submitted = 0;  // through submit(), including rejected ones
    uint64_t completed = 0;  // verdicts produced (pool and direct scans)
    uint64_t clean = 0, skipped = 0, infected = 0;
    std::array<uint64_t, kScanErrorCount> errors{};  // by ScanError
    uint64_t bytes = 0;                              // object bytes scanned
    LatencyHistogram scan_latency;                   // per object, scan only
    LatencyHistogram queue_wait;                     // submit to start of scan
    EngineCounters clamav, yara;
    VerdictCacheStats cache;
    double uptime_s = 0;
    // Object bytes (10^6) per second of scan time, i.e. per busy thread.
    double throughput_mb_per_s = 0;
};
void to_json(nlohmann::json& j, const ScanStats& s);

// ---------------------------------------------------------------------------
// The service

struct ScanGeneration;  // src/scan/scan_service.cc: an EngineSet and its scanners

class ScanService {
  public:
    // Starts the pool (threads and queue length are fixed for its lifetime).
    // No engines yet: verdicts are engine-not-ready until a reload succeeds.
    explicit ScanService(const ScanConfig& config);
    // Stops the pool; scans still queued are dropped without completion.
    ~ScanService();
    ScanService(const ScanService&) = delete;
    ScanService& operator=(const ScanService&) = delete;

    // Builds a new EngineSet on the calling thread (seconds with the official
    // ClamAV databases) and swaps it in; scans in flight finish on the old one.
    // On failure the running set stays. Reloads are serialized. The pool's
    // size and queue length stay those given to the constructor. With
    // config.reload = Blocking the running set is freed first (objects are
    // engine-not-ready meanwhile, and a failure leaves no engines).
    ReloadResult reload(const ScanConfig& config);
    // The same on a background thread; `done` is posted to `sink`. Returns false
    // (and posts nothing) if a reload is already running.
    bool start_reload(ScanConfig config, std::shared_ptr<CompletionSink> sink,
                      std::function<void(ReloadResult)> done);

    // Queues a scan; never blocks. `done` is posted to `sink` (non-null) exactly
    // once while the service lives: immediately with too-many-requests (queue full) or
    // engine-not-ready (no engines yet), immediately with the cached verdict when the
    // verdict cache has the object (its bytes already hashed: an ObjectBuffer's), otherwise
    // when the scan finishes (an object without a digest is hashed on the pool thread and
    // may still be answered from the cache there). Returns false when the object was refused
    // (too-many-requests, engine-not-ready).
    bool submit(ScanObject object, std::shared_ptr<CompletionSink> sink, ScanCallback done);

    // Scans bypassing the queue and the verdict cache, waiting on the calling
    // thread (tests, tools): in a free scanner process (waiting for one if all
    // are busy), or on this thread with thread isolation.
    ScanVerdict scan(const ScanObject& object);
    // Maps the file (only if within the content-size limit) and scans it like
    // an object named after its base name. Throws std::system_error when the
    // file cannot be read (missing, not a regular file).
    ScanVerdict scan_file(const std::string& path, const std::string& profile = {});
    // The file as an object for submit(): mapped read-only (nothing is read
    // yet; an object over the content-size limit is answered without reading
    // it), named after its base name. Throws std::system_error as scan_file().
    static ScanObject map_file(const std::string& path, const std::string& profile = {});
    // The same for a file the caller opened (a descriptor it passed over the
    // control socket): `name` is what events show. The descriptor stays the
    // caller's.
    static ScanObject map_fd(int fd, const std::string& name, const std::string& profile = {});

    bool ready() const;
    std::optional<EnginesInfo> engines_info() const;
    ScanStats stats() const;

  private:
    std::shared_ptr<const ScanGeneration> current() const;
    // reload = "blocking": takes the running engines out of service and
    // returns once their scans are done and they are freed.
    void release_engines();
    // A pool job: the verdict cache, then a scan on the current engines.
    ScanVerdict judge(const ScanObject& object, std::optional<std::array<uint8_t, 32>> digest);
    ScanVerdict scan_on(const ScanGeneration* generation, const ScanObject& object);

    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace nfqscan
