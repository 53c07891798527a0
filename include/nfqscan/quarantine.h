// Quarantine (issue 11): the original bytes of every object nfqscand blocked
// or replaced, kept in a folder with their metadata so that an administrator
// can list, show, export, release (SMTP) and delete them (`nfqscanctl
// quarantine`).
//
// Where it is fed: FlowInspection::log_event(), the one place every
// inspector's verdict becomes an action in the event log. When the action
// keeps the object from its receiver as it was sent (kKeptActions) and the
// inspector attached the object's bytes (ObjectInfo::original), the entry is
// queued here and the event line carries its id.
//
// Why a thread of its own: writing (and fsyncing) tens of MiB can take long,
// and a full or failing disk must never stall traffic. A worker only queues
// a reference to the object's ObjectBuffer (the memory file the scanner read:
// immutable once shared, so no copy is made) with the metadata, bounded in
// count and bytes; the quarantine thread writes it. A full queue, a full disk
// or any write error costs the entry (counted, logged at most once a minute),
// never a packet. The control commands run on the same thread, so the folder
// has one writer and needs no lock.
//
// On disk, per entry ID (= the event id, [0-9A-Za-z_-]{1,64}): ID.data (the
// bytes) and ID.json (the metadata), each written to a temporary file,
// fsynced and renamed without replacing; the metadata is renamed last, so an
// entry exists exactly when its ID.json does, and the folder is fsynced
// after. Files are 0600, the folder 0700, owned by the daemon's account;
// only root (and that account) can read them. Leftovers of a crash (.tmp-*,
// data without metadata) are removed when the store opens.
//
// Limits: max_size (bytes of all data files) and max_age_days; the oldest
// entries are removed first to make room, and entries past the age are
// removed at every write and hourly.
// Tests: tests/unit/quarantine/quarantine_store_test.cc, tests/lab/test_quarantine.py.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "nfqscan/object_buffer.h"
#include "nfqscan/quarantine_config.h"

namespace nfqscan {

// `quarantine list --since`: "2026-12-06", "2026-12-06T10:00",
// "2026-12-06T10:00:00Z" (UTC), or an age ("90s", "30m", "12h", "7d") before
// `now_ms`; milliseconds since 1970. Throws std::invalid_argument.
int64_t parse_quarantine_since(std::string_view text, int64_t now_ms);

// An ID is safe as a file name: 1 to 64 of [0-9A-Za-z_-] (no dot, no slash).
bool valid_quarantine_id(std::string_view id);

// The metadata of one entry (ID.json).
struct QuarantineEntry {
    std::string id;
    std::chrono::system_clock::time_point time;
    std::string protocol;   // "smtp", "http", ...
    std::string flow;       // "client:port -> server:port"
    std::string direction;  // "upload" | "download"
    std::string object;     // URL, FTP path, or the mail's name
    std::string file_name;
    std::string sender;
    std::vector<std::string> recipients;
    std::string subject;
    nlohmann::json verdict = nlohmann::json::object();  // the event line's verdict fields
    std::string action;
    std::string event_id;
    uint64_t size = 0;  // bytes of ID.data
};
nlohmann::json quarantine_entry_json(const QuarantineEntry& e);
// Parses ID.json; nullopt for anything malformed (not JSON, a field of the
// wrong type, an invalid id, a size or time out of range).
std::optional<QuarantineEntry> parse_quarantine_entry(std::string_view text);

struct QuarantineCounters {
    uint64_t entries = 0, bytes = 0;  // gauges: what the folder holds
    uint64_t queued = 0;              // accepted for writing
    uint64_t written = 0;
    uint64_t evicted = 0;         // removed for max_size or max_age_days
    uint64_t write_failures = 0;  // the disk refused (full, I/O error, ...)
    uint64_t dropped = 0;         // not written: the queue was full, or the daemon stopped
    uint64_t too_big = 0;         // larger than max_size on its own
    uint64_t corrupt = 0;         // metadata files the store could not read (left in place)
    uint64_t released = 0, release_failures = 0, deleted = 0, exported = 0;
};
void to_json(nlohmann::json& j, const QuarantineCounters& c);

// The folder; single-threaded (the Quarantine's thread, or a test).
class QuarantineStore {
  public:
    // Creates `config.dir` (0700) if missing; indexes what is there.
    // Throws std::system_error when the folder cannot be made or read.
    explicit QuarantineStore(QuarantineConfig config);

    // Writes an entry (entry.size is set here). Returns "" or why not.
    std::string put(QuarantineEntry entry, std::span<const uint8_t> bytes,
                    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
    // Removes entries older than max_age_days.
    void expire(std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

    // Newest first; `protocol` "" = any; entries at or after `since`.
    std::vector<QuarantineEntry> list(
        std::string_view protocol = {},
        std::optional<std::chrono::system_clock::time_point> since = {},
        size_t limit = SIZE_MAX) const;
    // Throws std::runtime_error for an invalid or unknown id.
    QuarantineEntry show(std::string_view id) const;
    // The data file opened for reading; throws as show().
    int open_data(std::string_view id) const;
    // Throws as show().
    void remove(std::string_view id);

    uint64_t entries() const { return index_.size(); }
    uint64_t bytes() const { return bytes_; }
    uint64_t evicted() const { return evicted_; }
    uint64_t corrupt() const { return corrupt_; }
    const QuarantineConfig& config() const { return config_; }

  private:
    struct Indexed {
        int64_t time_ms;
        uint64_t size;
    };
    void load();
    void erase(const std::string& id);
    void evict_for(uint64_t incoming);
    std::string path(std::string_view id, std::string_view suffix) const;
    const std::string& known(std::string_view id) const;

    QuarantineConfig config_;
    std::map<std::string, Indexed, std::less<>> index_;
    std::set<std::pair<int64_t, std::string>> by_age_;  // (time_ms, id), oldest first
    uint64_t bytes_ = 0;
    uint64_t evicted_ = 0;
    uint64_t corrupt_ = 0;
};

// The relay release() delivers through ([notify] relay, "host:port").
struct QuarantineRelease {
    std::string relay;
    // The connection carries [marks] inject (SO_MARK), as the engine's own
    // packets do: a ruleset that queues the gateway's own traffic never
    // hands a released message back to nfqscand to be blocked again.
    uint32_t mark = 0;
    std::chrono::milliseconds timeout{30000};
};

// The store on a thread of its own, fed by the workers and the control
// commands.
class Quarantine {
  public:
    // Opens the store (throws as QuarantineStore) and starts the thread.
    Quarantine(QuarantineConfig config, QuarantineRelease release);
    ~Quarantine();  // entries still queued are dropped (counted)
    Quarantine(const Quarantine&) = delete;
    Quarantine& operator=(const Quarantine&) = delete;

    // From a worker: queues the entry; false when it is not kept (queue
    // full, too big, stopping; counted). Never blocks on the disk.
    bool submit(QuarantineEntry entry, std::shared_ptr<const ObjectBuffer> bytes);

    // Control commands, run on the quarantine thread; `done` gets the result
    // or the error (exactly one of them non-empty/non-null), on that thread.
    using Done = std::function<void(nlohmann::json result, std::string error)>;
    void list(nlohmann::json request, Done done);
    void show(std::string id, Done done);
    // Copies the bytes into `fd` (a file the client opened and passed).
    void export_to(std::string id, int fd, Done done);
    // SMTP only: delivers the original to its recipients through the relay.
    void release(std::string id, Done done);
    void remove(std::string id, Done done);

    QuarantineCounters counters() const;
    const std::string& dir() const { return dir_; }
    // Until nothing is queued (tests, the lab's status checks).
    bool wait_idle(std::chrono::milliseconds timeout) const;

  private:
    struct Job {
        QuarantineEntry entry;
        std::shared_ptr<const ObjectBuffer> bytes;
        std::function<void()> task;  // a control command instead of an entry
    };
    void run();
    void post(std::function<void()> task);
    // Runs `work` on the thread; its result, or its exception's text, to `done`.
    void command(Done done, std::function<nlohmann::json()> work);
    void warn(const std::string& what);
    void refresh_gauges();  // entries, bytes, evicted from the store

    const std::string dir_;
    const QuarantineRelease release_;
    std::unique_ptr<QuarantineStore> store_;  // the thread's alone once it runs
    mutable std::mutex mutex_;
    mutable std::condition_variable wake_, idle_;
    std::deque<Job> queue_;
    uint64_t queued_bytes_ = 0;
    bool busy_ = false;
    bool stopping_ = false;
    uint64_t max_size_;
    uint64_t queue_bytes_;
    struct AtomicCounters {
        std::atomic<uint64_t> entries{0}, bytes{0}, queued{0}, written{0}, evicted{0},
            write_failures{0}, dropped{0}, too_big{0}, corrupt{0}, released{0}, release_failures{0},
            deleted{0}, exported{0};
    } counters_;
    std::chrono::steady_clock::time_point last_warning_{};
    uint64_t warnings_suppressed_ = 0;
    std::thread thread_;  // last
};

// Delivers `message` (not dot-stuffed, CRLF) from `sender` to `recipients`
// through `relay` ("host:port"): checks the envelope, then smtp_submit()
// (smtp_submit.h). Returns "" or the error.
// `mark`: SO_MARK of the connection (0: none).
std::string smtp_deliver(const std::string& relay, const std::string& sender,
                         const std::vector<std::string>& recipients,
                         std::span<const uint8_t> message, std::chrono::milliseconds timeout,
                         uint32_t mark = 0);

}  // namespace nfqscan
