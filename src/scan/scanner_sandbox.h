// Scanner sandbox: what a scanner process gives up after its fork and before
// it touches the first object. libclamav and libyara parse hostile files and
// have a CVE history; an exploit in one of them should find itself in a
// process that can scan and answer, and do nothing else:
//   - an unprivileged uid/gid ([scan] scanner_user) when the daemon is root,
//     and no capabilities in any case (an exploit cannot rewrite the
//     firewall over netlink or send raw packets);
//   - PR_SET_NO_NEW_PRIVS, then a seccomp filter that allows the system calls
//     scanning needs and kills the process on any other (no socket(), no
//     exec, no ptrace, no mount...). A killed scanner is a crash like any
//     other: the object gets an error verdict, the scanner is replaced;
//   - RLIMIT_AS (what it has at the fork plus a budget from the scan limits),
//     RLIMIT_FSIZE (no temp file larger than what ClamAV may extract), a core
//     size of 0, and a lower CPU priority so scanners never starve the queue
//     workers.
// Everything that may allocate or take a lock (user lookup, building the BPF
// program with libseccomp) happens in the parent: after a fork only
// async-signal-safe calls are made.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nfqscan/scan.h"

namespace nfqscan {

struct ScannerSandbox {
    // Switch to these ids (only when running as root).
    std::optional<uid_t> uid;
    gid_t gid = 0;
    // Added to the scanner's address space at the fork for RLIMIT_AS.
    uint64_t address_space_budget = 0;
    uint64_t file_size_limit = 0;
    int nice = 10;
    // The seccomp filter as a BPF program; empty = none (tests only).
    std::vector<sock_filter> filter;

    // Resolves the user and builds the filter. Throws std::runtime_error
    // naming what failed (an unknown user, libseccomp).
    static ScannerSandbox for_config(const ScanConfig& config);

    // In the child, after the fork: confines the calling process. Returns
    // nullptr, or the step that failed (the child must then exit: a scanner
    // that is not confined does not scan).
    const char* enter() const;
};

// For tests: the filter's system calls by name (to show what it allows).
std::vector<std::string> scanner_allowed_syscalls(ScanConfig::Backend backend);

}  // namespace nfqscan
