// Scanner processes: the engines of one EngineSet run in child processes
// forked from the service once the set is built, so the compiled engines are
// shared copy-on-write and every scanner has a single-threaded address space
// of its own.
//
// Why processes: libclamav writes each extracted layer to a temp file and maps
// it back (an anonymous mapping filled with pread, unmapped at the end of the
// layer), under a process-wide lock. In one multi-threaded process every such
// mapping change is a TLB shootdown sent to the other cores running the
// process, and the lock serializes part of the work: two pool threads reached
// 1.4-1.7x of one, two separate processes 1.93x (tests/bench/bench_scan.py).
// In a single-threaded scanner process the same unmaps flush one core only.
// A crash in a parser (attacker-controlled content) also costs one scanner
// and one verdict instead of the daemon.
//
// One request at a time per scanner: the caller sends a small request on a
// SOCK_SEQPACKET socketpair; the child scans and answers with the verdict and
// its engine counters (scanner_wire.h). The bytes: an object in an
// ObjectBuffer (ScanObject::file, what inspectors hand over) is not copied
// again: its memory file's descriptor goes with the request (SCM_RIGHTS) and
// the child maps it read-only for that scan. Any other object is copied into
// the scanner's own memfd (mapped read-only by the child once, at its largest
// possible size).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nfqscan/scan.h"
#include "scanner_wire.h"

namespace nfqscan {

class EngineSet;
class ScanMetrics;

class ScannerProcess {
  public:
    // Forks a scanner over `set` (which must outlive it). Throws
    // std::system_error when the memfd, socketpair or fork fails.
    static std::unique_ptr<ScannerProcess> spawn(const EngineSet& set);
    // Kills and reaps the child (an idle scanner holds nothing worth a
    // graceful exit; a busy one is being given up on).
    ~ScannerProcess();
    ScannerProcess(const ScannerProcess&) = delete;
    ScannerProcess& operator=(const ScannerProcess&) = delete;

    struct Outcome {
        enum class Status : uint8_t {
            Done,       // `reply` holds the verdict
            Gone,       // the scanner was dead before it got the object: try another
            Died,       // it died while scanning this object
            Hung,       // no answer by the deadline: killed
            CopyFailed  // the object could not be handed over (memory)
        };
        Status status = Status::Done;
        ScannerReply reply;
        std::string what;                // Died / Hung / CopyFailed: for the verdict's reason
        bool killed_by_sigkill = false;  // Died: by someone else (the OOM killer)
    };
    // Hands the object over and waits for the verdict until `deadline`.
    Outcome scan(const ScanObject& object, std::chrono::milliseconds deadline);

    pid_t pid() const { return pid_; }
    // Object bytes copied into this scanner's own memfd so far (objects that
    // were not in an ObjectBuffer).
    uint64_t copied_bytes() const { return copied_bytes_; }

    // Forks and builds happen under this lock: a child forked while another
    // thread is inside libclamav/libyara loading code could inherit one of
    // their global locks held, and would hang on it.
    static std::mutex& fork_mutex();

    // Tests only: scanners forked after this call crash, hang, or take a
    // second longer when they get an object of this name. Empty: off.
    // Crash, Hang, Slow: a broken parser. The others try what an exploit
    // would; the sandbox must stop each (scanner_sandbox.h): a scanner that
    // got through exits with kEscaped instead of scanning.
    enum class Misbehaviour : uint8_t {
        Crash,
        Hang,
        Slow,
        OpenNetlink,   // socket(AF_NETLINK): the firewall's interface
        Exec,          // execve("/bin/sh")
        WriteOutside,  // create a file in /etc
        ReadShadow,    // open /etc/shadow
        RaiseLimit,    // lift its own RLIMIT_AS
    };
    static constexpr int kEscaped = 42;
    static void misbehave_on_object_for_tests(std::string name, Misbehaviour how);

  private:
    ScannerProcess(pid_t pid, int socket, int memfd) : pid_(pid), socket_(socket), memfd_(memfd) {}
    bool copy_in(std::span<const uint8_t> bytes, std::string& error);
    std::string reap();  // waits for the (dead or killed) child; describes how it ended

    pid_t pid_ = -1;
    int socket_ = -1;
    int memfd_ = -1;
    uint64_t memfd_size_ = 0;
    uint64_t copied_bytes_ = 0;
    bool reaped_ = false;
};

// The scanners of one EngineSet: as many as the pool has threads. Pool threads
// and direct scans borrow an idle one for each object; a scanner that dies is
// replaced (forked again from this set) and its object gets an error verdict.
class ScannerGroup {
  public:
    // Forks `count` scanners. Throws std::system_error if none can be started.
    // A scanner without a verdict after `hung_after` is killed (timeout);
    // default: three times the scan time limit plus 10 s.
    ScannerGroup(const EngineSet& set, uint32_t count, ScanMetrics& metrics,
                 std::optional<std::chrono::milliseconds> hung_after = std::nullopt);
    ~ScannerGroup();
    ScannerGroup(const ScannerGroup&) = delete;
    ScannerGroup& operator=(const ScannerGroup&) = delete;

    // Blocks until a scanner is free (never long: one per pool thread).
    ScanVerdict scan(const ScanObject& object);

    std::vector<int> pids() const;

    // Replaces every scanner with a fresh fork: idle ones now, busy ones
    // when their scan is done. A scanner forked while an older engine set was
    // still in nfqscand's memory keeps that set's pages (copy-on-write) after
    // nfqscand has freed it; forked again, it holds only this set.
    void refork();

  private:
    struct Slot {
        std::unique_ptr<ScannerProcess> process;  // null: to be forked on next use
        uint64_t epoch = 0;                       // refork() count when it was forked
    };
    void replace(Slot& slot);
    Slot* borrow();
    void give_back(Slot* slot);
    bool ensure_running(Slot& slot, std::string& error);

    const EngineSet& set_;
    ScanMetrics& metrics_;
    const std::chrono::milliseconds deadline_;
    mutable std::mutex mutex_;
    std::condition_variable freed_;
    std::vector<std::unique_ptr<Slot>> slots_;
    std::vector<Slot*> idle_;
    uint64_t epoch_ = 0;  // guarded by mutex_
};

}  // namespace nfqscan
