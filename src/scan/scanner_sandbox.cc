#include "scanner_sandbox.h"

#include "nfqscan/unique_fd.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <seccomp.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>

namespace nfqscan {
namespace {

// What a scanner does: receive a request and maybe an object's memory file,
// map it, let libclamav write and map back each extracted layer in its temp
// dir, let libyara read, answer. Measured with strace over the scan tests and
// the lab (archives, mail, office, PDF), plus what glibc may call on its own
// (malloc's mremap and madvise, time, signal handling for a crash).
constexpr const char* kScanningSyscalls[] = {
    // files: the object, libclamav's temp files and folders, its databases
    "read", "write", "pread64", "pwrite64", "readv", "writev", "lseek", "close", "close_range",
    "openat", "open", "newfstatat", "fstat", "stat", "lstat", "statx", "fstatfs", "statfs",
    "access", "faccessat", "faccessat2", "getdents64", "mkdir", "mkdirat", "rmdir", "unlink",
    "unlinkat", "rename", "renameat", "renameat2", "chmod", "fchmod", "fchmodat", "ftruncate",
    "fsync", "fdatasync", "readlink", "readlinkat", "getcwd", "fcntl", "dup", "dup3", "umask",
    // memory
    "mmap", "munmap", "mremap", "mprotect", "brk", "madvise",
    // the socket to the service (requests, replies, passed memory files)
    "recvmsg", "sendmsg", "recvfrom", "sendto",
    // process, time, signals
    "futex", "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getrandom",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",
    "sched_yield", "sched_getaffinity", "uname", "sysinfo", "getrlimit", "prlimit64",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "tgkill", "pause", "exit",
    "exit_group", "restart_syscall"};

// With the clamd backend a scanner talks to clamd over a unix or TCP socket
// (the address may need a name lookup); still no netlink, raw or packet
// socket.
constexpr const char* kClamdSyscalls[] = {"connect",     "poll",       "ppoll",
                                          "setsockopt",  "getsockopt", "getsockname",
                                          "getpeername", "shutdown",   "bind"};

struct SeccompContext {
    scmp_filter_ctx ctx;
    explicit SeccompContext(uint32_t default_action) : ctx(seccomp_init(default_action)) {
        if (ctx == nullptr) throw std::runtime_error("seccomp_init failed");
    }
    ~SeccompContext() { seccomp_release(ctx); }
    SeccompContext(const SeccompContext&) = delete;
    SeccompContext& operator=(const SeccompContext&) = delete;
};

void allow(scmp_filter_ctx ctx, const char* name) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;  // not on this architecture (e.g. "open" on arm64)
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0); rc != 0)
        throw std::runtime_error(std::string("seccomp rule for ") + name + ": " +
                                 std::strerror(-rc));
}

std::vector<sock_filter> build_filter(ScanConfig::Backend backend) {
    SeccompContext seccomp(SCMP_ACT_KILL_PROCESS);
    for (const char* name : kScanningSyscalls)
        allow(seccomp.ctx, name);
    // isatty() on stdio, nothing else of ioctl.
    if (seccomp_rule_add(seccomp.ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                         SCMP_A1(SCMP_CMP_EQ, TCGETS)) != 0)
        throw std::runtime_error("seccomp rule for ioctl");
    if (backend == ScanConfig::Backend::Clamd) {
        for (const char* name : kClamdSyscalls)
            allow(seccomp.ctx, name);
        for (int family : {AF_UNIX, AF_INET, AF_INET6})
            if (seccomp_rule_add(seccomp.ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                 SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))) != 0)
                throw std::runtime_error("seccomp rule for socket");
    }
    // libseccomp 2.5 exports to a descriptor only: a memory file, read back.
    const UniqueFd memory(memfd_create("nfqscan-seccomp", MFD_CLOEXEC));
    if (!memory) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
    const int fd = memory.get();
    if (int rc = seccomp_export_bpf(seccomp.ctx, fd); rc != 0)
        throw std::runtime_error(std::string("seccomp_export_bpf: ") + std::strerror(-rc));
    const off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
        throw std::runtime_error("seccomp_export_bpf wrote no program");
    std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
    if (pread(fd, program.data(), static_cast<size_t>(size), 0) != size)
        throw std::runtime_error("cannot read the seccomp program back");
    return program;
}

// The process's address space now, from /proc/self/statm (no allocation).
uint64_t address_space_now() {
    const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[64] = {};
    const ssize_t n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    if (n <= 0) return 0;
    uint64_t pages = 0;
    for (ssize_t i = 0; i < n && text[i] >= '0' && text[i] <= '9'; ++i)
        pages = pages * 10 + static_cast<uint64_t>(text[i] - '0');
    return pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

std::vector<std::string> scanner_allowed_syscalls(ScanConfig::Backend backend) {
    std::vector<std::string> names(std::begin(kScanningSyscalls), std::end(kScanningSyscalls));
    names.emplace_back("ioctl(TCGETS)");
    if (backend == ScanConfig::Backend::Clamd) {
        names.insert(names.end(), std::begin(kClamdSyscalls), std::end(kClamdSyscalls));
        names.emplace_back("socket(AF_UNIX|AF_INET|AF_INET6)");
    }
    return names;
}

ScannerSandbox ScannerSandbox::for_config(const ScanConfig& config) {
    ScannerSandbox sandbox;
    if (!config.scanner_user.empty() && ::geteuid() == 0) {
        passwd entry{};
        passwd* found = nullptr;
        std::vector<char> buffer(16384);
        if (getpwnam_r(config.scanner_user.c_str(), &entry, buffer.data(), buffer.size(), &found) !=
                0 ||
            found == nullptr)
            throw std::runtime_error("[scan] scanner_user: no user named " + config.scanner_user);
        if (found->pw_uid == 0)
            throw std::runtime_error("[scan] scanner_user: " + config.scanner_user + " is root");
        sandbox.uid = found->pw_uid;
        sandbox.gid = found->pw_gid;
    }
    const ScanLimits& limits = config.limits;
    // A scan holds the object, libclamav's copies of a few layers and YARA's
    // scratch; 1 GiB beyond that is far above what a sane scan uses.
    sandbox.address_space_budget =
        2 * limits.max_scan_size + 4 * limits.max_content_size + (1ull << 30);
    // libclamav writes each extracted file to its temp dir, up to
    // max_content_size (CL_ENGINE_MAX_FILESIZE); a little over that for
    // headers it adds.
    sandbox.file_size_limit = limits.max_content_size + (1ull << 20);
    sandbox.filter = build_filter(config.engine);
    return sandbox;
}

const char* ScannerSandbox::enter() const {
    // Priority first: it only lowers, and needs nothing.
    if (::setpriority(PRIO_PROCESS, 0, nice) != 0) return "setpriority";
    const rlimit no_core{0, 0};
    if (::setrlimit(RLIMIT_CORE, &no_core) != 0) return "RLIMIT_CORE";
    // A write past the limit fails with EFBIG instead of killing the scanner.
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit file_size{file_size_limit, file_size_limit};
    if (file_size_limit != 0 && ::setrlimit(RLIMIT_FSIZE, &file_size) != 0) return "RLIMIT_FSIZE";
    if (address_space_budget != 0) {
        const uint64_t now = address_space_now();
        if (now == 0) return "reading /proc/self/statm";
        const rlimit as{now + address_space_budget, now + address_space_budget};
        if (::setrlimit(RLIMIT_AS, &as) != 0) return "RLIMIT_AS";
    }
    if (uid) {
        // From root: no supplementary groups, the user's group, the user;
        // setuid from 0 to non-0 clears every capability set.
        if (::setgroups(0, nullptr) != 0) return "setgroups";
        if (::setresgid(gid, gid, gid) != 0) return "setresgid";
        if (::setresuid(*uid, *uid, *uid) != 0) return "setresuid";
    }
    // Not root (a daemon started as its own user keeps CAP_NET_ADMIN and
    // CAP_NET_RAW): drop every capability explicitly, ambient ones too.
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return "clearing ambient capabilities";
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[2] = {};
    if (::capset(&header, none) != 0) return "capset";
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return "PR_SET_NO_NEW_PRIVS";
    if (!filter.empty()) {
        sock_fprog program{static_cast<unsigned short>(filter.size()),
                           const_cast<sock_filter*>(filter.data())};
        if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0) return "seccomp";
    }
    return nullptr;
}

}  // namespace nfqscan
