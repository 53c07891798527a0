#include "scanner_process.h"
#include "scanner_sandbox.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <system_error>

#include "clamav_engine.h"
#include "engine_set.h"
#include "nfqscan/object_buffer.h"
#include "scan_metrics.h"

namespace nfqscan {
namespace {

// waitpid() for one child, through interruptions by signals.
pid_t wait_child(pid_t pid, int& status) {
    pid_t r;
    do {
        r = ::waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    return r;
}

using Clock = std::chrono::steady_clock;

// A memfd that grew past this for a large object is cut back once objects are
// small again, so one 32 MB attachment does not pin 32 MB per scanner.
constexpr uint64_t kKeepMemfdBytes = 4u << 20;

// A scanner's exit status when it could not confine itself.
constexpr int kSandboxFailed = 6;

// Set in the parent by tests, inherited by the scanners forked afterwards.
std::string g_misbehave_name;
ScannerProcess::Misbehaviour g_misbehave_how = ScannerProcess::Misbehaviour::Crash;

[[noreturn]] void throw_errno(const char* what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// How long a scanner may take before it is called hung and killed: the YARA
// pass and the ClamAV pass each have max_scan_time_ms (clamd its own plus a
// margin), so a scanner past three times that is stuck, not slow.
std::chrono::milliseconds hung_after(const ScanConfig& config) {
    return std::chrono::milliseconds(uint64_t(config.limits.max_scan_time_ms) * 3) +
           std::chrono::seconds(10);
}

uint64_t window_size(const ScanConfig& config) {
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    const uint64_t want = std::max<uint64_t>(config.limits.max_content_size, 1);
    return (want + page - 1) / page * page;
}

// One message; with `passed_fd` >= 0 that descriptor goes with it (SCM_RIGHTS).
bool send_message(int fd, const std::vector<uint8_t>& message, int passed_fd = -1) {
    iovec iov{const_cast<uint8_t*>(message.data()), message.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (passed_fd >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &passed_fd, sizeof(int));
    }
    for (;;) {
        const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(message.size())) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
}

// One message, and the first descriptor that came with it (-1 if none; any
// others are closed).
ssize_t receive_message(int fd, std::vector<char>& buffer, int& passed_fd) {
    passed_fd = -1;
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (passed_fd < 0)
                passed_fd = received;
            else
                ::close(received);
        }
    }
    return n;
}

// A passed memory file mapped read-only for one scan.
class PassedObject {
  public:
    PassedObject(int fd, uint64_t size) : fd_(fd), size_(size) {}
    ~PassedObject() {
        if (map_ != MAP_FAILED) ::munmap(map_, size_);
        ::close(fd_);
    }
    PassedObject(const PassedObject&) = delete;
    PassedObject& operator=(const PassedObject&) = delete;

    // The bytes, or nullopt with `error` (a file shorter than announced, no
    // memory for the mapping).
    std::optional<std::span<const uint8_t>> map(std::string& error) {
        if (size_ == 0) return std::span<const uint8_t>{};
        struct stat st {};
        if (::fstat(fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) < size_) {
            error = "the object's memory file is shorter than the object";
            return std::nullopt;
        }
        map_ = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
        if (map_ == MAP_FAILED) {
            error = std::string("cannot map the object: ") + std::strerror(errno);
            return std::nullopt;
        }
        return std::span<const uint8_t>{static_cast<const uint8_t*>(map_), size_};
    }

  private:
    int fd_;
    uint64_t size_;
    void* map_ = MAP_FAILED;
};

void close_all_but(int a, int b) {
    if (a > b) std::swap(a, b);
    if (a > 3) ::close_range(3, static_cast<unsigned>(a - 1), 0);
    if (b > a + 1) ::close_range(static_cast<unsigned>(a + 1), static_cast<unsigned>(b - 1), 0);
    ::close_range(static_cast<unsigned>(b + 1), ~0u, 0);
}

// The child. It only ever leaves through _exit: it runs on a copy of a pool
// (or reload) thread's stack, and nothing of the parent may be unwound or
// destroyed here. It takes no lock another parent thread could have held at
// the fork (no logging; libclamav's messages are dropped).
[[noreturn]] void run_scanner(const EngineSet& set, const ScannerSandbox& sandbox, int socket,
                              int memfd) {
    silence_clamav_messages();
    ::prctl(PR_SET_NAME, "nfqscan-scanner", 0, 0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // The daemon's terminal signals are the daemon's to handle; the scanner
    // ends when the daemon closes its socket (or dies, which does the same).
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGTERM, SIG_DFL);
    close_all_but(socket, memfd);
    // libclamav names its temp files from rand(); every scanner starts with
    // the parent's state, and the same names would collide (O_EXCL) between
    // scanners.
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    std::srand(static_cast<unsigned>(::getpid()) * 2654435761u ^
               static_cast<unsigned>(now.tv_nsec));

    const uint64_t window = window_size(set.config());
    void* map = ::mmap(nullptr, window, PROT_READ, MAP_SHARED, memfd, 0);
    if (map == MAP_FAILED) ::_exit(3);
    const auto* bytes = static_cast<const uint8_t*>(map);
    // Confined before the first object: a scanner that cannot be does not scan.
    if (sandbox.enter() != nullptr) ::_exit(kSandboxFailed);

    std::vector<char> buffer(kScannerWireMaxMessage);
    for (;;) {
        int passed_fd = -1;
        const ssize_t n = receive_message(socket, buffer, passed_fd);
        if (n == 0) ::_exit(0);  // the service let go of this scanner
        if (n < 0) {
            if (errno == EINTR) continue;
            ::_exit(4);
        }
        const std::optional<ScannerRequest> request =
            decode_request({buffer.data(), static_cast<size_t>(n)});
        if (!request || request->in_passed_fd != (passed_fd >= 0) ||
            (!request->in_passed_fd && request->size > window))
            ::_exit(5);
        if (!g_misbehave_name.empty() && request->name == g_misbehave_name) {
            switch (g_misbehave_how) {
                case ScannerProcess::Misbehaviour::Crash:
                    ::signal(SIGSEGV, SIG_DFL);
                    ::raise(SIGSEGV);
                    break;
                case ScannerProcess::Misbehaviour::Hang:
                    for (;;)
                        ::pause();
                case ScannerProcess::Misbehaviour::Slow:
                    ::sleep(1);
                    break;
                case ScannerProcess::Misbehaviour::OpenNetlink:
                    if (::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER) >= 0)
                        ::_exit(ScannerProcess::kEscaped);
                    break;
                case ScannerProcess::Misbehaviour::Exec: {
                    char sh[] = "/bin/sh";
                    char* argv[] = {sh, nullptr};
                    ::execve(sh, argv, nullptr);
                    break;  // refused: scan on
                }
                case ScannerProcess::Misbehaviour::WriteOutside:
                    if (::open("/etc/nfqscan-scanner-escape", O_CREAT | O_WRONLY | O_CLOEXEC,
                               0644) >= 0)
                        ::_exit(ScannerProcess::kEscaped);
                    break;
                case ScannerProcess::Misbehaviour::ReadShadow:
                    if (::open("/etc/shadow", O_RDONLY | O_CLOEXEC) >= 0)
                        ::_exit(ScannerProcess::kEscaped);
                    break;
                case ScannerProcess::Misbehaviour::RaiseLimit: {
                    const rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
                    if (::setrlimit(RLIMIT_AS, &unlimited) == 0) ::_exit(ScannerProcess::kEscaped);
                    break;
                }
            }
        }
        ScanObject object;
        if (!request->in_passed_fd) object.bytes = {bytes, request->size};
        object.name = request->name;
        object.mime_type = request->mime_type;
        object.profile = request->profile;
        ScannerReply reply;
        {
            // Unmapped and closed once the verdict is in.
            std::optional<PassedObject> passed;
            std::string map_error;
            std::optional<std::span<const uint8_t>> mapped;
            if (request->in_passed_fd) {
                passed.emplace(passed_fd, request->size);
                mapped = passed->map(map_error);
                if (mapped) object.bytes = *mapped;
            }
            ScanMetrics metrics;
            try {
                reply.verdict = request->in_passed_fd && !mapped
                                    ? ScanVerdict::failed(ScanError::OutOfResource, map_error)
                                    : set.scan(object, metrics);
            } catch (const std::bad_alloc&) {
                reply.verdict = ScanVerdict::failed(ScanError::OutOfResource, "out of memory");
            }
            reply.clamav = metrics.clamav.snapshot();
            reply.yara = metrics.yara.snapshot();
        }
        if (!send_message(socket, encode(reply))) ::_exit(0);
    }
}

std::string describe_status(int status) {
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        const char* name = ::sigdescr_np(sig);
        return "signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == kSandboxFailed)
        return "exit status " + std::to_string(kSandboxFailed) + " (could not enter its sandbox)";
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    return "status " + std::to_string(status);
}

}  // namespace

std::mutex& ScannerProcess::fork_mutex() {
    static std::mutex mutex;
    return mutex;
}

void ScannerProcess::misbehave_on_object_for_tests(std::string name, Misbehaviour how) {
    g_misbehave_name = std::move(name);
    g_misbehave_how = how;
}

std::unique_ptr<ScannerProcess> ScannerProcess::spawn(const EngineSet& set) {
    // Built here, in the parent: the child may only make plain system calls.
    ScannerSandbox sandbox;
    try {
        sandbox = ScannerSandbox::for_config(set.config());
    } catch (const std::runtime_error& e) {
        throw std::system_error(EINVAL, std::generic_category(), e.what());
    }
    const int memfd = ::memfd_create("nfqscan-object", MFD_CLOEXEC);
    if (memfd < 0) throw_errno("memfd_create");
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        const int err = errno;
        ::close(memfd);
        throw std::system_error(err, std::generic_category(), "socketpair");
    }
    pid_t pid;
    {
        std::lock_guard lock(fork_mutex());
        pid = ::fork();
    }
    if (pid == 0) run_scanner(set, sandbox, pair[1], memfd);
    ::close(pair[1]);
    if (pid < 0) {
        const int err = errno;
        ::close(pair[0]);
        ::close(memfd);
        throw std::system_error(err, std::generic_category(), "fork");
    }
    return std::unique_ptr<ScannerProcess>(new ScannerProcess(pid, pair[0], memfd));
}

ScannerProcess::~ScannerProcess() {
    if (!reaped_) {
        ::kill(pid_, SIGKILL);
        reap();
    }
    ::close(socket_);
    ::close(memfd_);
}

std::string ScannerProcess::reap() {
    int status = 0;
    pid_t r = wait_child(pid_, status);
    reaped_ = true;
    if (r < 0) return "ended (not reapable: " + std::string(std::strerror(errno)) + ")";
    return describe_status(status);
}

bool ScannerProcess::copy_in(std::span<const uint8_t> bytes, std::string& error) {
    const uint64_t size = bytes.size();
    if (size > memfd_size_ || (memfd_size_ > kKeepMemfdBytes && size < memfd_size_ / 4)) {
        const uint64_t target = std::max(size, std::min(memfd_size_, kKeepMemfdBytes));
        if (::ftruncate(memfd_, static_cast<off_t>(target)) != 0) {
            error = std::string("cannot size the object buffer: ") + std::strerror(errno);
            return false;
        }
        memfd_size_ = target;
    }
    uint64_t done = 0;
    while (done < size) {
        const ssize_t n =
            ::pwrite(memfd_, bytes.data() + done, size - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = std::string("cannot copy the object: ") + std::strerror(errno);
            return false;
        }
        done += static_cast<uint64_t>(n);
    }
    copied_bytes_ += size;
    return true;
}

ScannerProcess::Outcome ScannerProcess::scan(const ScanObject& object,
                                             std::chrono::milliseconds deadline) {
    Outcome out;
    // An object in a memory file is mapped by the scanner itself; anything
    // else is copied into the scanner's memfd.
    const ObjectBuffer* file = object.file.get();
    const bool pass_file = file && file->fd() >= 0 && file->bytes().data() == object.bytes.data() &&
                           file->size() == object.bytes.size();
    if (!pass_file && !copy_in(object.bytes, out.what)) {
        out.status = Outcome::Status::CopyFailed;
        return out;
    }
    ScannerRequest request{object.bytes.size(), object.name, object.mime_type, object.profile,
                           pass_file};
    if (!send_message(socket_, encode(request), pass_file ? file->fd() : -1)) {
        // EPIPE/ECONNRESET: it died while idle (not this object's doing).
        ::kill(pid_, SIGKILL);
        out.status = Outcome::Status::Gone;
        out.what = reap();
        return out;
    }
    const auto until = Clock::now() + deadline;
    std::vector<char> buffer(kScannerWireMaxMessage);
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
        pollfd p{socket_, POLLIN, 0};
        const int ready = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
            ::kill(pid_, SIGKILL);
            reap();
            out.status = Outcome::Status::Hung;
            out.what = "scanner process gave no verdict within " +
                       std::to_string(deadline.count()) + " ms and was killed";
            return out;
        }
        const ssize_t n = ::recv(socket_, buffer.data(), buffer.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        std::optional<ScannerReply> reply;
        if (n > 0) reply = decode_reply({buffer.data(), static_cast<size_t>(n)});
        if (reply) {
            out.reply = std::move(*reply);
            return out;
        }
        // EOF (it is exiting, with its own status), an error or a garbled
        // answer (it is killed): this scanner is finished.
        if (n != 0) ::kill(pid_, SIGKILL);
        int status = 0;
        pid_t r = wait_child(pid_, status);
        reaped_ = true;
        out.status = Outcome::Status::Died;
        out.killed_by_sigkill =
            n == 0 && r == pid_ && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        out.what = n > 0   ? "scanner process sent a garbled verdict"
                   : r < 0 ? "scanner process died"
                           : "scanner process died (" + describe_status(status) + ")";
        return out;
    }
}

// ---------------------------------------------------------------------------

ScannerGroup::ScannerGroup(const EngineSet& set, uint32_t count, ScanMetrics& metrics,
                           std::optional<std::chrono::milliseconds> hung)
    : set_(set), metrics_(metrics), deadline_(hung.value_or(hung_after(set.config()))) {
    count = std::max<uint32_t>(count, 1);
    for (uint32_t i = 0; i < count; ++i) {
        auto slot = std::make_unique<Slot>();
        try {
            slot->process = ScannerProcess::spawn(set_);
        } catch (const std::system_error& e) {
            // The first one must start; later ones are retried on use.
            if (i == 0) throw;
            spdlog::warn("scanner process {} not started: {}", i, e.what());
        }
        idle_.push_back(slot.get());
        slots_.push_back(std::move(slot));
    }
}

ScannerGroup::~ScannerGroup() = default;  // each ScannerProcess kills and reaps its child

std::vector<int> ScannerGroup::pids() const {
    std::lock_guard lock(mutex_);
    std::vector<int> out;
    for (const auto& slot : slots_)
        if (slot->process) out.push_back(slot->process->pid());
    return out;
}

ScannerGroup::Slot* ScannerGroup::borrow() {
    std::unique_lock lock(mutex_);
    freed_.wait(lock, [this] { return !idle_.empty(); });
    Slot* slot = idle_.back();
    idle_.pop_back();
    return slot;
}

void ScannerGroup::give_back(Slot* slot) {
    bool stale;
    {
        std::lock_guard lock(mutex_);
        stale = slot->epoch != epoch_;
    }
    if (stale) replace(*slot);
    {
        std::lock_guard lock(mutex_);
        idle_.push_back(slot);
    }
    freed_.notify_one();
}

void ScannerGroup::replace(Slot& slot) {
    std::unique_ptr<ScannerProcess> old;
    {
        std::lock_guard lock(mutex_);
        old = std::move(slot.process);
        slot.epoch = epoch_;
    }
    old.reset();  // killed and reaped: it was idle
    // A failed fork leaves the slot empty: forked again on its next use.
    std::string error;
    if (!ensure_running(slot, error))
        spdlog::warn("scanner process not forked again after a reload: {}", error);
}

void ScannerGroup::refork() {
    std::vector<Slot*> idle;
    {
        std::lock_guard lock(mutex_);
        ++epoch_;
        idle = std::exchange(idle_, {});
    }
    // Busy ones are replaced by give_back() when their scan is done.
    for (Slot* slot : idle)
        give_back(slot);
}

bool ScannerGroup::ensure_running(Slot& slot, std::string& error) {
    if (slot.process) return true;
    try {
        auto process = ScannerProcess::spawn(set_);
        std::lock_guard lock(mutex_);  // pids() reads the slots
        slot.process = std::move(process);
        return true;
    } catch (const std::system_error& e) {
        error = e.what();
        return false;
    }
}

ScanVerdict ScannerGroup::scan(const ScanObject& object) {
    const ScanConfig& config = set_.config();
    // Answered without scanning: no need to copy it anywhere.
    if (object.bytes.size() > config.limits.max_content_size) return set_.scan(object, metrics_);

    const auto started = Clock::now();
    // Verdicts about the scanner rather than from it; they took this long.
    auto failed = [&](ScanError error, std::string reason) {
        ScanVerdict v = ScanVerdict::failed(error, std::move(reason), object.name);
        v.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
        return v;
    };
    Slot* slot = borrow();
    struct GiveBack {
        ScannerGroup& group;
        Slot* slot;
        ~GiveBack() { group.give_back(slot); }
    } give_back{*this, slot};

    auto retire = [&](const std::string& why) {
        {
            std::lock_guard lock(mutex_);
            slot->process.reset();  // reaped already; closes its descriptors
        }
        metrics_.record_scanner_restart();
        spdlog::warn("scan of {}: {}; starting a new scanner process", object.name, why);
    };

    // One retry, for a scanner that had died while idle.
    for (int attempt = 0; attempt < 2; ++attempt) {
        std::string error;
        if (!ensure_running(*slot, error))
            return failed(ScanError::OutOfResource, "cannot start a scanner process: " + error);
        ScannerProcess::Outcome out = slot->process->scan(object, deadline_);
        switch (out.status) {
            case ScannerProcess::Outcome::Status::Done:
                metrics_.clamav.add(out.reply.clamav);
                metrics_.yara.add(out.reply.yara);
                return std::move(out.reply.verdict);
            case ScannerProcess::Outcome::Status::CopyFailed:
                return failed(ScanError::OutOfResource, out.what);
            case ScannerProcess::Outcome::Status::Gone:
                retire("scanner process had ended (" + out.what + ")");
                continue;
            case ScannerProcess::Outcome::Status::Hung: {
                retire(out.what);
                std::string ignored;
                ensure_running(*slot, ignored);  // ready for the next object
                return failed(ScanError::Timeout, out.what);
            }
            case ScannerProcess::Outcome::Status::Died: {
                retire(out.what);
                std::string ignored;
                ensure_running(*slot, ignored);
                // Killed from outside: most likely the OOM killer. Otherwise
                // the content broke a parser; nothing was judged either way.
                return failed(out.killed_by_sigkill ? ScanError::OutOfResource : ScanError::Corrupt,
                              out.what);
            }
        }
    }
    return failed(ScanError::OutOfResource, "scanner processes keep ending");
}

}  // namespace nfqscan
