// Signature updates picked up by nfqscand itself (issue 15): a snapshot of
// the files the scan engines load (SignatureSnapshot) and what changed
// between two (SignatureChanges), a debouncer that turns a burst of file
// events (freshclam's renames) into one rebuild, and the watcher thread
// (inotify plus a periodic self-check, like clamd's SelfCheck) that asks for
// a check when something may have changed. Deciding to rebuild is the
// caller's (Daemon): it compares snapshots and asks its engine loader.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nfqscan/scan.h"

namespace nfqscan {

// What identifies a version of a file without reading it: a rename over it
// changes the inode, an edit in place the size or the mtime.
struct SignatureFileStamp {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t inode = 0;
    bool operator==(const SignatureFileStamp&) const = default;
};

struct SignatureChanges {
    std::vector<std::string> added, modified, removed;  // paths, sorted
    bool empty() const { return added.empty() && modified.empty() && removed.empty(); }
    // "added x.ndb; modified daily.cld, main.cvd" with at most `names` names
    // per kind ("and N more").
    std::string summary(size_t names = 5) const;
};

// The signature files in a ScanConfig's folders: what libclamav's cl_load()
// reads from clamav_db_dirs (by extension; none with engine = clamd, whose
// own signatures nfqscand does not load) and the *.yar/*.yara files under
// yara_rule_dirs (recursive, as the YARA loader reads them). Missing folders
// are simply empty.
class SignatureSnapshot {
  public:
    static SignatureSnapshot take(const ScanConfig& config);

    const std::map<std::string, SignatureFileStamp>& files() const { return files_; }
    // The folders to watch: the configured ones and the subfolders of the
    // YARA folders, whether they exist or not.
    const std::vector<std::string>& folders() const { return folders_; }
    bool operator==(const SignatureSnapshot& other) const { return files_ == other.files_; }

    // For tests: a snapshot of given files.
    static SignatureSnapshot of(std::map<std::string, SignatureFileStamp> files);

  private:
    std::map<std::string, SignatureFileStamp> files_;
    std::vector<std::string> folders_;
};

SignatureChanges compare(const SignatureSnapshot& before, const SignatureSnapshot& after);

// Fires once after a burst of events: `quiet` after the last one, but no
// later than `max_delay` after the first (a folder that never stops changing
// is still picked up). Pure logic, the caller passes the time.
class Debouncer {
  public:
    using Clock = std::chrono::steady_clock;
    Debouncer(Clock::duration quiet, Clock::duration max_delay)
        : quiet_(quiet), max_delay_(max_delay) {}

    void event(Clock::time_point now);
    bool pending() const { return first_.has_value(); }
    // When it fires; nullopt when nothing is pending.
    std::optional<Clock::time_point> deadline() const;
    // True (once per burst) when the deadline has passed; resets.
    bool fire(Clock::time_point now);

  private:
    Clock::duration quiet_, max_delay_;
    std::optional<Clock::time_point> first_, last_;
};

// A thread that calls `check` (on itself) when the signature folders may
// have changed: a burst of inotify events in them has settled, or the
// self-check interval has passed. Folders that are missing, deleted,
// replaced or renamed are watched again as they reappear (their parent is
// watched for that).
class SignatureWatcher {
  public:
    enum class Trigger : uint8_t { Inotify, SelfCheck };
    struct Options {
        std::vector<std::string> folders;  // SignatureSnapshot::folders()
        bool inotify = true;
        std::chrono::seconds self_check{600};  // 0: never
        std::chrono::milliseconds quiet{2000};
        std::chrono::milliseconds max_delay{30000};
    };
    using Check = std::function<void(Trigger)>;

    explicit SignatureWatcher(Check check);
    ~SignatureWatcher();
    SignatureWatcher(const SignatureWatcher&) = delete;
    SignatureWatcher& operator=(const SignatureWatcher&) = delete;

    // Applies at once (from any thread): folders are watched anew.
    void configure(Options options);
    // {"inotify": .., "watched_folders": .., "self_check_s": .., "events": ..,
    //  "checks": {"inotify": .., "self_check": ..}, "last_check_at": ..}
    nlohmann::json status() const;

  private:
    struct State;
    std::unique_ptr<State> state_;
};

std::string_view trigger_name(SignatureWatcher::Trigger t);  // "inotify" | "self-check"

}  // namespace nfqscan
