// Detection event log: one JSON object per line for every detection and every
// scan-error fallback (time, flow, protocol, object, verdict, action), appended
// to a file that `nfqscanctl detections` reads back from the end.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "nfqscan/scan.h"

namespace nfqscan {

struct ScanEvent {
    std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
    std::string id;         // quoted by the messages users see (block page, notices)
    std::string flow;       // "192.0.2.1:40000 -> 198.51.100.2:25"
    std::string protocol;   // "smtp", "http", ...
    std::string direction;  // "download" (server to client) | "upload"; empty: not a transfer
    std::string object;     // what was scanned: attachment name, URL, FTP path
    ScanVerdict verdict;
    // An error category the scan service does not know ("partial",
    // "protocol-error"): replaces the verdict's own category.
    std::string category;
    std::string action;      // what the policy did: "replace", "reject", "pass", ...
    std::string quarantine;  // the quarantine entry of the object kept ("": none)
};

// {"time":"2024-05-01T12:00:00.123Z","id":..,"flow":..,"protocol":..,"direction":..,"object":..,
//  "verdict":"infected","engine":..,"name":..,"layer":..,"category":..,
//  "elapsed_ms":..,"action":..}: the verdict's own JSON fields (scan.h), inline.
std::string format_scan_event(const ScanEvent& event);

class EventLog {
  public:
    // Opens (creating it 0640 if needed) for appending. Throws std::system_error.
    explicit EventLog(std::string path);
    ~EventLog();
    EventLog(const EventLog&) = delete;
    EventLog& operator=(const EventLog&) = delete;

    // One write() per line on an O_APPEND descriptor, so lines from several
    // threads or processes never interleave. Returns false on a write error
    // (counted, never thrown: the data path must not fail because of a log).
    bool append(const ScanEvent& event);
    // Reopens the path, e.g. after logrotate moved the file.
    void reopen();

    const std::string& path() const { return path_; }
    uint64_t written() const;
    uint64_t failed() const;

  private:
    std::string path_;
    mutable std::mutex mutex_;
    int fd_ = -1;
    uint64_t written_ = 0;
    uint64_t failed_ = 0;
};

// The last `count` lines of the log, oldest first, reading at most `max_bytes`
// from the end of the file (a partial first line is dropped). A missing file
// yields no lines; other errors throw std::system_error.
std::vector<std::string> read_last_events(const std::string& path, size_t count,
                                          size_t max_bytes = 4u << 20);

}  // namespace nfqscan
