#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "nfqscan/signature_watch.h"
#include "nfqscan/timestamp.h"
#include "nfqscan/unique_fd.h"

namespace nfqscan {
namespace {

using Clock = std::chrono::steady_clock;

// A folder's own events: files written, renamed in or out, deleted,
// touched; the folder itself deleted or renamed.
constexpr uint32_t kFolderMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                 IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |
                                 IN_MASK_ADD;
// Its parent's: the folder (or a symlink to it) created, renamed or removed.
constexpr uint32_t kParentMask =
    IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR | IN_MASK_ADD;
// A folder or parent that cannot be watched (missing, no permission) is
// tried again this often.
constexpr auto kRetry = std::chrono::seconds(5);

std::string parent_of(const std::string& folder) {
    std::filesystem::path p = std::filesystem::path(folder).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();  // "dir/" -> "dir"
    return p.parent_path().empty() ? "." : p.parent_path().string();
}

std::string name_of(const std::string& folder) {
    std::filesystem::path p = std::filesystem::path(folder).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();
    return p.filename().string();
}

}  // namespace

struct SignatureWatcher::State {
    Check check;
    UniqueFd inotify;
    UniqueFd wake;  // eventfd: configure() and the destructor

    mutable std::mutex mutex;
    Options options;  // guarded by mutex
    bool reconfigured = false;
    bool stopping = false;
    std::chrono::system_clock::time_point last_check_at{};
    std::string inotify_error;

    std::atomic<uint64_t> events{0}, inotify_checks{0}, self_checks{0};
    std::atomic<uint64_t> watched{0};
    std::thread thread;

    // Watch descriptors -> what they watch (the thread's own).
    std::map<int, std::string> folder_of;
    std::map<int, std::vector<std::string>> names_under;  // parent wd -> folder names

    void run();
    // Drops every watch and watches the current folders and their parents.
    // False when one of them could not be watched (retried later).
    bool arm(const Options& opt);
    // Reads pending events: true if one concerns the signatures; `rearm`
    // when a watched folder appeared, went or moved.
    bool drain(bool& rearm);
    void run_check(Trigger trigger);
    void signal() const {
        const uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof one);
    }
};

SignatureWatcher::SignatureWatcher(Check check) : state_(std::make_unique<State>()) {
    state_->check = std::move(check);
    state_->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!state_->wake)
        throw std::system_error(errno, std::generic_category(), "eventfd (signature watcher)");
    state_->inotify.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!state_->inotify) {
        // Without inotify the self-check still finds updates.
        state_->inotify_error = std::string("inotify_init1: ") + std::strerror(errno);
        spdlog::warn("signature folders: {}; only the periodic self-check finds updates",
                     state_->inotify_error);
    }
    state_->thread = std::thread([s = state_.get()] { s->run(); });
}

SignatureWatcher::~SignatureWatcher() {
    {
        std::lock_guard lock(state_->mutex);
        state_->stopping = true;
    }
    state_->signal();
    state_->thread.join();
}

void SignatureWatcher::configure(Options options) {
    {
        std::lock_guard lock(state_->mutex);
        state_->options = std::move(options);
        state_->reconfigured = true;
    }
    state_->signal();
}

nlohmann::json SignatureWatcher::status() const {
    std::lock_guard lock(state_->mutex);
    const Options& o = state_->options;
    const bool inotify = o.inotify && state_->inotify;
    return {
        {"inotify", inotify},
        {"inotify_error",
         state_->inotify_error.empty() ? nlohmann::json() : nlohmann::json(state_->inotify_error)},
        {"folders", o.folders.size()},
        {"watched_folders", inotify ? state_->watched.load() : 0},
        {"self_check_s", o.self_check.count()},
        {"events", state_->events.load()},
        {"checks",
         {{"inotify", state_->inotify_checks.load()}, {"self_check", state_->self_checks.load()}}},
        {"last_check_at", state_->last_check_at == std::chrono::system_clock::time_point{}
                              ? nlohmann::json()
                              : nlohmann::json(iso8601(state_->last_check_at))}};
}

bool SignatureWatcher::State::arm(const Options& opt) {
    for (const auto& [wd, _] : folder_of)
        ::inotify_rm_watch(inotify.get(), wd);
    for (const auto& [wd, _] : names_under)
        if (!folder_of.count(wd)) ::inotify_rm_watch(inotify.get(), wd);
    folder_of.clear();
    names_under.clear();
    watched = 0;
    if (!opt.inotify || !inotify) return true;
    bool complete = true;
    for (const std::string& folder : opt.folders) {
        const int wd = ::inotify_add_watch(inotify.get(), folder.c_str(), kFolderMask);
        if (wd >= 0) {
            folder_of[wd] = folder;
            ++watched;
        } else if (errno != ENOENT) {
            complete = false;
        }
        // The parent tells when the folder appears, goes or is replaced.
        const int pwd = ::inotify_add_watch(inotify.get(), parent_of(folder).c_str(), kParentMask);
        if (pwd >= 0)
            names_under[pwd].push_back(name_of(folder));
        else
            complete = false;
    }
    return complete;
}

bool SignatureWatcher::State::drain(bool& rearm) {
    alignas(inotify_event) char buf[16384];
    bool relevant = false;
    for (;;) {
        const ssize_t n = ::read(inotify.get(), buf, sizeof buf);
        if (n <= 0) break;
        for (ssize_t off = 0; off < n;) {
            const auto* e = reinterpret_cast<const inotify_event*>(buf + off);
            off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
            const std::string_view name = e->len ? std::string_view(e->name) : std::string_view{};
            if (e->mask & IN_Q_OVERFLOW) {  // events lost: look at everything
                relevant = rearm = true;
                continue;
            }
            if (auto p = names_under.find(e->wd);
                p != names_under.end() && !name.empty() &&
                std::find(p->second.begin(), p->second.end(), name) != p->second.end()) {
                relevant = rearm = true;
            }
            auto f = folder_of.find(e->wd);
            if (f == folder_of.end()) continue;  // a parent's other entries, or a dropped watch
            if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                relevant = rearm = true;
            } else if (e->mask & IN_ISDIR) {
                relevant = true;
                rearm =
                    rearm || (e->mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) !=
                                 0;  // a YARA subfolder
            } else if (is_clamav_database_name(name) || is_yara_rule_name(name)) {
                relevant = true;
            }
        }
    }
    if (relevant) ++events;
    return relevant;
}

void SignatureWatcher::State::run_check(Trigger trigger) {
    ++(trigger == Trigger::Inotify ? inotify_checks : self_checks);
    {
        std::lock_guard lock(mutex);
        last_check_at = std::chrono::system_clock::now();
    }
    try {
        check(trigger);
    } catch (const std::exception& e) {
        spdlog::error("signature check ({}): {}", trigger_name(trigger), e.what());
    }
}

void SignatureWatcher::State::run() {
    pthread_setname_np(pthread_self(), "nfq-sigwatch");
    Options opt;
    Debouncer burst(opt.quiet, opt.max_delay);
    bool rearm = false;
    std::optional<Clock::time_point> next_self_check, retry_at;
    for (;;) {
        {
            std::lock_guard lock(mutex);
            if (stopping) return;
            if (reconfigured) {
                reconfigured = false;
                opt = options;
                burst = Debouncer(opt.quiet, opt.max_delay);
                rearm = true;
                next_self_check.reset();
                if (opt.self_check.count() > 0) next_self_check = Clock::now() + opt.self_check;
            }
        }
        if (rearm) {
            rearm = false;
            retry_at.reset();
            if (!arm(opt)) retry_at = Clock::now() + kRetry;
        }
        std::optional<Clock::time_point> wake_at = burst.deadline();
        for (const auto& t : {next_self_check, retry_at})
            if (t && (!wake_at || *t < *wake_at)) wake_at = t;
        int timeout_ms = -1;
        if (wake_at)
            timeout_ms = static_cast<int>(std::clamp<int64_t>(
                std::chrono::ceil<std::chrono::milliseconds>(*wake_at - Clock::now()).count(), 0,
                60'000));
        pollfd fds[2] = {{wake.get(), POLLIN, 0}, {inotify.get(), POLLIN, 0}};
        const int nfds = inotify ? 2 : 1;
        if (::poll(fds, nfds, timeout_ms) < 0 && errno != EINTR) {
            spdlog::error("signature watcher: poll: {}", std::strerror(errno));
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
        if (fds[0].revents & POLLIN) {
            uint64_t count;
            [[maybe_unused]] ssize_t n = ::read(wake.get(), &count, sizeof count);
        }
        if (nfds == 2 && (fds[1].revents & POLLIN) && drain(rearm)) burst.event(Clock::now());
        const auto now = Clock::now();
        if (retry_at && now >= *retry_at) {
            // What was not there may have appeared meanwhile: look.
            rearm = true;
            burst.event(now);
        }
        if (burst.fire(now)) run_check(Trigger::Inotify);
        if (next_self_check && Clock::now() >= *next_self_check) {
            run_check(Trigger::SelfCheck);
            next_self_check = Clock::now() + opt.self_check;
        }
    }
}

std::string_view trigger_name(SignatureWatcher::Trigger t) {
    return t == SignatureWatcher::Trigger::SelfCheck ? "self-check" : "inotify";
}

}  // namespace nfqscan
