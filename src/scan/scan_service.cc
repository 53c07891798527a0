#include <fcntl.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "engine_set.h"
#include "nfqscan/object_buffer.h"
#include "nfqscan/scan.h"
#include "nfqscan/sha256.h"
#include "nfqscan/unique_fd.h"
#include "scan_metrics.h"
#include "scan_pool.h"
#include "scanner_process.h"
#include "verdict_cache.h"

namespace nfqscan {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

// One reload's engines and, with process isolation, the scanner processes
// forked over them. Scans hold it by shared_ptr; the last one out retires it.
struct ScanGeneration {
    std::unique_ptr<const EngineSet> set;
    std::unique_ptr<ScannerGroup> scanners;  // declared last: ends before the set
};

namespace {

// Freeing an engine set can take a second or more with the official ClamAV
// databases. The last scan holding a retired set would pay for it on a pool
// thread; instead the set's deleter hands it to this thread.
class EngineRetirer {
  public:
    EngineRetirer() : thread_([this] { run(); }) {}
    ~EngineRetirer() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }
    void retire(const ScanGeneration* generation) {
        {
            std::lock_guard lock(mutex_);
            if (!stopping_) {
                retired_.push_back(generation);
                wake_.notify_one();
                return;
            }
        }
        destroy(generation);
    }
    // Once `old` is destroyed, the scanners of `current` are forked again
    // (ScannerGroup::refork): they were forked while `old` was in memory.
    void refresh_after(const ScanGeneration* old, std::weak_ptr<const ScanGeneration> current) {
        std::lock_guard lock(mutex_);
        refresh_.push_back({old, std::move(current)});
    }
    // Returns once every generation handed over so far is destroyed.
    void wait_idle() {
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [this] { return retired_.empty() && !destroying_; });
    }

  private:
    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return stopping_ || !retired_.empty(); });
            while (!retired_.empty()) {
                const ScanGeneration* generation = retired_.back();
                retired_.pop_back();
                destroying_ = true;
                lock.unlock();
                destroy(generation);
                lock.lock();
                destroying_ = false;
                refresh_scanners(generation, lock);
            }
            idle_.notify_all();
            if (stopping_) return;
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    bool destroying_ = false;
    // The scanners go first (killed and reaped); the engines are freed under
    // the fork lock, so no scanner is forked while libclamav or libyara
    // runs teardown code that may hold one of their global locks.
    static void destroy(const ScanGeneration* generation) {
        auto* g = const_cast<ScanGeneration*>(generation);
        g->scanners.reset();
        {
            std::lock_guard lock(ScannerProcess::fork_mutex());
            g->set.reset();
        }
        delete g;
        // The engines' memory goes back to the system now, not whenever
        // malloc gets round to it: a blocking reload counts on it, and the
        // daemon's RSS shows what the running set takes.
        ::malloc_trim(0);
    }

    void refresh_scanners(const ScanGeneration* destroyed, std::unique_lock<std::mutex>& lock) {
        for (auto it = refresh_.begin(); it != refresh_.end(); ++it) {
            if (it->first != destroyed) continue;
            std::weak_ptr<const ScanGeneration> current = std::move(it->second);
            refresh_.erase(it);
            lock.unlock();
            if (auto g = current.lock(); g && g->scanners) g->scanners->refork();
            lock.lock();  // `g` may have been the last holder: retired above
            return;
        }
    }

    std::vector<const ScanGeneration*> retired_;
    // Destroyed generation (compared, never dereferenced) -> the one whose
    // scanners are forked again then.
    std::vector<std::pair<const ScanGeneration*, std::weak_ptr<const ScanGeneration>>> refresh_;
    bool stopping_ = false;
    std::thread thread_;
};

// Whether `object` goes through the verdict cache. An object over the size
// limit is content-size at once and is not hashed.
bool cache_applies(const VerdictCache& cache, const ScanGeneration& generation,
                   const ScanObject& object) {
    return cache.capacity() > 0 &&
           object.bytes.size() <= generation.set->config().limits.max_content_size;
}

VerdictCacheKey cache_key(const ScanGeneration& generation, const Sha256Digest& digest,
                          const ScanObject& object) {
    const ScanConfig& config = generation.set->config();
    // As ContentFilter picks it: the object's profile, else "default", else none.
    auto it = config.profiles.find(object.profile);
    if (it == config.profiles.end()) it = config.profiles.find("default");
    const ScanProfile* profile = it == config.profiles.end() ? nullptr : &it->second;
    return verdict_cache_key(digest, generation.set->info().generation, object, profile,
                             config.limits);
}

uint32_t pool_threads(const ScanConfig& config) {
    if (config.pool_threads > 0) return config.pool_threads;
    return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

struct ScanService::State {
    ScanMetrics metrics;
    VerdictCache cache{0};  // off until the first engines say otherwise
    std::shared_ptr<EngineRetirer> retirer = std::make_shared<EngineRetirer>();

    ScanConfig::Isolation isolation = ScanConfig::Isolation::Process;
    mutable std::mutex current_mutex;
    std::shared_ptr<const ScanGeneration> current;
    uint64_t generation = 0;  // guarded by reload_mutex

    std::mutex reload_mutex;  // one build at a time
    std::mutex background_mutex;
    std::thread background;  // the running start_reload(), if any
    bool background_busy = false;

    // Declared last: destroyed first, so no pool thread outlives the state.
    std::unique_ptr<ScanPool> pool;
};

ScanService::ScanService(const ScanConfig& config) : state_(std::make_unique<State>()) {
    state_->isolation = config.isolation;
    state_->pool = std::make_unique<ScanPool>(pool_threads(config), config.queue_length);
}

ScanService::~ScanService() {
    {
        std::lock_guard lock(state_->background_mutex);
        if (state_->background.joinable()) state_->background.join();
    }
    state_->pool.reset();
    std::lock_guard lock(state_->current_mutex);
    state_->current.reset();
}

std::shared_ptr<const ScanGeneration> ScanService::current() const {
    std::lock_guard lock(state_->current_mutex);
    return state_->current;
}

bool ScanService::ready() const {
    return current() != nullptr;
}

std::optional<EnginesInfo> ScanService::engines_info() const {
    const auto generation = current();
    if (!generation) return std::nullopt;
    return generation->set->info();
}

ReloadResult ScanService::reload(const ScanConfig& config) {
    std::lock_guard reload_lock(state_->reload_mutex);
    ReloadResult result;
    const bool processes = state_->isolation == ScanConfig::Isolation::Process;
    auto fail = [&](const LoadFailure& failure) {
        result.error = failure.to_string();
        result.file = failure.file;
        result.line = failure.line;
        if (auto info = engines_info()) result.engines = *info;
        spdlog::error("scan engines not reloaded: {}", result.error);
        return result;
    };
    if (config.reload == ScanConfig::ReloadMode::Blocking) release_engines();
    EngineSet::Built built;
    {
        // No scanner may be forked while libclamav/libyara load (see fork_mutex()).
        std::unique_lock fork_lock(ScannerProcess::fork_mutex(), std::defer_lock);
        if (processes) fork_lock.lock();
        built = EngineSet::build(config, state_->generation + 1);
    }
    // Loading leaves freed scratch memory in malloc's free lists; the
    // scanners forked next would each keep a copy of those pages alive.
    ::malloc_trim(0);
    if (!built.set) return fail(built.failure.value_or(LoadFailure{{}, 0, "unknown failure"}));

    auto generation = std::make_unique<ScanGeneration>();
    generation->set = std::move(built.set);
    if (processes) {
        try {
            generation->scanners = std::make_unique<ScannerGroup>(
                *generation->set, state_->pool->threads(), state_->metrics);
        } catch (const std::system_error& e) {
            return fail(
                LoadFailure{{}, 0, std::string("cannot start scanner processes: ") + e.what()});
        }
    }
    ++state_->generation;
    std::shared_ptr<const ScanGeneration> fresh(
        generation.release(),
        [retirer = state_->retirer](const ScanGeneration* g) { retirer->retire(g); });
    result.ok = true;
    result.engines = fresh->set->info();
    for (const std::string& w : result.engines.warnings)
        spdlog::warn("scan engines: {}", w);
    spdlog::info("scan engines generation {} ready in {} ms: {} ClamAV signatures, {} YARA rules",
                 result.engines.generation, result.engines.load_time.count(),
                 result.engines.clamav_signatures, result.engines.yara_rules);
    // New engines judge anew: nothing cached so far can be hit again. With
    // clamd the generation would not tell (clamd reloads its signatures on
    // its own), so no cache.
    const uint64_t cache_entries =
        config.engine == ScanConfig::Backend::Clamd ? 0 : config.cache_entries;
    ObjectBuffer::set_hashing(cache_entries > 0);
    std::shared_ptr<const ScanGeneration> old;
    {
        std::lock_guard lock(state_->current_mutex);
        state_->cache.start_generation(result.engines.generation, cache_entries);
        old = std::exchange(state_->current, fresh);
    }
    if (old && fresh->scanners) state_->retirer->refresh_after(old.get(), fresh);
    return result;  // `old` goes to the retirer once its last scan is done
}

void ScanService::release_engines() {
    std::shared_ptr<const ScanGeneration> old;
    {
        std::lock_guard lock(state_->current_mutex);
        old = std::exchange(state_->current, nullptr);
    }
    if (!old) return;
    const auto start = Clock::now();
    spdlog::info(
        "scan engines generation {}: freed before the reload (reload = \"blocking\"); "
        "objects are engine-not-ready until the new engines are in",
        old->set->info().generation);
    // Scans in flight still hold it; each ends within its scan time limit
    // (a hung scanner is killed).
    const std::weak_ptr<const ScanGeneration> watch = old;
    old.reset();
    while (!watch.expired())
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    state_->retirer->wait_idle();
    spdlog::info(
        "scan engines freed in {} ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

bool ScanService::start_reload(ScanConfig config, std::shared_ptr<CompletionSink> sink,
                               std::function<void(ReloadResult)> done) {
    std::lock_guard lock(state_->background_mutex);
    if (state_->background_busy) return false;
    if (state_->background.joinable()) state_->background.join();
    state_->background_busy = true;
    state_->background = std::thread([this, config = std::move(config), sink = std::move(sink),
                                      done = std::move(done)]() mutable {
        ReloadResult result = reload(config);
        {
            std::lock_guard lock(state_->background_mutex);
            state_->background_busy = false;
        }
        if (sink && done)
            sink->post([done = std::move(done), result = std::move(result)]() mutable {
                done(std::move(result));
            });
    });
    return true;
}

bool ScanService::submit(ScanObject object, std::shared_ptr<CompletionSink> sink,
                         ScanCallback done) {
    ScanMetrics& metrics = state_->metrics;
    metrics.record_submitted();
    auto answer_now = [&](ScanVerdict verdict) {
        metrics.record_verdict(verdict, object.bytes.size(), false);
        sink->post([done = std::move(done), verdict = std::move(verdict)]() mutable {
            done(std::move(verdict));
        });
    };
    const auto generation = current();
    if (!generation) {
        answer_now(
            ScanVerdict::failed(ScanError::EngineNotReady, "scan engines are not loaded yet"));
        return false;
    }
    // An object whose bytes were hashed as they arrived is looked up here:
    // a hit costs neither the queue nor a scanner.
    std::optional<Sha256Digest> digest;
    if (object.file && cache_applies(state_->cache, *generation, object)) {
        digest = object.file->sha256();
        if (digest) {
            if (auto hit = state_->cache.find(cache_key(*generation, *digest, object),
                                              VerdictCache::Tally::HitOnly)) {
                answer_now(std::move(*hit));
                return true;
            }
        }
    }
    // The job owns everything it needs; the bytes stay alive through `owner`.
    auto job = [this, object, sink, done, digest, queued = Clock::now()]() mutable {
        ScanMetrics& m = state_->metrics;
        m.record_queue_wait(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - queued));
        ScanVerdict verdict = judge(object, digest);
        sink->post([done = std::move(done), verdict = std::move(verdict)]() mutable {
            done(std::move(verdict));
        });
    };
    if (state_->pool->try_push(std::move(job))) return true;
    answer_now(ScanVerdict::failed(ScanError::TooManyRequests, "scan queue is full"));
    return false;
}

ScanVerdict ScanService::judge(const ScanObject& object, std::optional<Sha256Digest> digest) {
    const auto generation = current();
    if (!generation || !cache_applies(state_->cache, *generation, object))
        return scan_on(generation.get(), object);
    // Looked up again even if it missed at submission: an identical object
    // may have been judged while this one waited. The engines may be newer
    // than at submission; the key is that of the engines that scan it.
    if (!digest) digest = Sha256::of(object.bytes);
    const VerdictCacheKey key = cache_key(*generation, *digest, object);
    if (auto hit = state_->cache.find(key, VerdictCache::Tally::HitOrMiss)) {
        state_->metrics.record_verdict(*hit, object.bytes.size(), false);
        return std::move(*hit);
    }
    ScanVerdict verdict = scan_on(generation.get(), object);
    state_->cache.insert(key, verdict, generation->set->info().generation);
    return verdict;
}

ScanVerdict ScanService::scan(const ScanObject& object) {
    const auto generation = current();
    return scan_on(generation.get(), object);
}

ScanVerdict ScanService::scan_on(const ScanGeneration* generation, const ScanObject& object) {
    ScanMetrics& metrics = state_->metrics;
    if (!generation) {
        ScanVerdict v =
            ScanVerdict::failed(ScanError::EngineNotReady, "scan engines are not loaded yet");
        metrics.record_verdict(v, object.bytes.size(), false);
        return v;
    }
    ScanVerdict verdict;
    try {
        verdict = generation->scanners ? generation->scanners->scan(object)
                                       : generation->set->scan(object, metrics);
    } catch (const std::bad_alloc&) {
        verdict = ScanVerdict::failed(ScanError::OutOfResource, "out of memory");
    }
    metrics.record_verdict(verdict, object.bytes.size(), true);
    return verdict;
}

ScanObject ScanService::map_file(const std::string& path, const std::string& profile) {
    // A file the operator cannot read is not a verdict about its content.
    const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw std::system_error(errno, std::generic_category(), "open " + path);
    return map_fd(fd.get(), path, profile);
}

ScanObject ScanService::map_fd(int fd, const std::string& name, const std::string& profile) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw std::system_error(errno, std::generic_category(), "stat " + name);
    if (!S_ISREG(st.st_mode))
        throw std::system_error(EINVAL, std::generic_category(), name + " is not a regular file");
    ScanObject object;
    object.name = std::filesystem::path(name).filename().string();
    object.profile = profile;
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size > 0) {
        void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED)
            throw std::system_error(errno, std::generic_category(), "mmap " + name);
        object.bytes = {static_cast<const uint8_t*>(map), size};
        object.owner = std::shared_ptr<const void>(
            map, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
    }
    return object;
}

ScanVerdict ScanService::scan_file(const std::string& path, const std::string& profile) {
    const auto generation = current();
    if (!generation) return scan(ScanObject{});  // engine-not-ready, counted
    const ScanObject object = map_file(path, profile);
    const uint64_t size = object.bytes.size();
    if (size > generation->set->config().limits.max_content_size) {
        // Same verdict as scanning it would give, without reading it.
        ScanVerdict v = ScanVerdict::failed(
            ScanError::ContentSize,
            "object of " + std::to_string(size) + " bytes exceeds max_content_size", object.name);
        state_->metrics.record_verdict(v, size, false);
        return v;
    }
    return scan(object);
}

ScanStats ScanService::stats() const {
    ScanStats s = state_->metrics.snapshot();
    s.threads = state_->pool->threads();
    s.isolation = std::string(isolation_name(state_->isolation));
    if (const auto generation = current(); generation && generation->scanners)
        s.scanner_pids = generation->scanners->pids();
    s.queue_capacity = state_->pool->capacity();
    s.queue_depth = state_->pool->depth();
    s.queue_depth_max = state_->pool->depth_max();
    s.cache = state_->cache.stats();
    return s;
}

}  // namespace nfqscan
