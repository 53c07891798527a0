// Quarantine: the store on its own thread, and releasing a kept mail
// (quarantine.h).
#include "nfqscan/quarantine.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <cerrno>
#include <cstring>

#include "nfqscan/notifier.h"
#include "nfqscan/smtp_submit.h"
#include "nfqscan/unique_fd.h"

namespace nfqscan {

namespace {

constexpr auto kExpireInterval = std::chrono::hours(1);
constexpr auto kWarningInterval = std::chrono::seconds(60);
// Entries waiting for the disk, at most (their bytes are bounded apart).
constexpr size_t kQueueEntries = 256;

// A read-only mapping of a whole file, for the release.
class MappedFile {
  public:
    explicit MappedFile(int fd) {
        struct stat st {};
        if (fstat(fd, &st) != 0) throw std::runtime_error(std::strerror(errno));
        size_ = size_t(st.st_size);
        if (size_ == 0) return;
        void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) throw std::runtime_error(std::strerror(errno));
        data_ = static_cast<const uint8_t*>(p);
    }
    ~MappedFile() {
        if (data_) munmap(const_cast<uint8_t*>(data_), size_);
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    std::span<const uint8_t> bytes() const { return {data_, size_}; }

  private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

std::optional<std::chrono::system_clock::time_point> parse_since(const nlohmann::json& j) {
    auto it = j.find("since_ms");
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_number_integer() || it->get<int64_t>() < 0)
        throw std::runtime_error("quarantine list: \"since_ms\" must be milliseconds since 1970");
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(it->get<int64_t>()));
}

}  // namespace

std::string smtp_deliver(const std::string& relay, const std::string& sender,
                         const std::vector<std::string>& recipients,
                         std::span<const uint8_t> message, std::chrono::milliseconds timeout,
                         uint32_t mark) {
    if (recipients.empty()) return "the entry has no recipients";
    for (const std::string& r : recipients)
        if (!valid_mail_address(r)) return "recipient \"" + r + "\" is not a plain address";
    std::string_view from = sender;
    if (from.size() >= 2 && from.front() == '<' && from.back() == '>')
        from = from.substr(1, from.size() - 2);
    if (!from.empty() && !valid_mail_address(from))
        return "sender \"" + sender + "\" is not a plain address";
    return smtp_submit(
        {.relay = relay,
         .helo_name = "nfqscan",
         .from = from,
         .recipients = recipients,
         .message = std::string_view(reinterpret_cast<const char*>(message.data()), message.size()),
         .connect_timeout = timeout,
         .transfer_timeout = timeout,
         .mark = mark});
}

Quarantine::Quarantine(QuarantineConfig config, QuarantineRelease release)
    : dir_(config.dir),
      release_(std::move(release)),
      store_(std::make_unique<QuarantineStore>(config)),
      max_size_(config.max_size),
      queue_bytes_(config.queue_bytes) {
    store_->expire();
    refresh_gauges();
    counters_.corrupt = store_->corrupt();
    if (store_->corrupt() > 0)
        spdlog::warn("quarantine {}: {} entries with unreadable metadata left in place", dir_,
                     store_->corrupt());
    thread_ = std::thread([this] { run(); });
}

Quarantine::~Quarantine() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    for (const Job& job : queue_)
        if (!job.task) ++counters_.dropped;
}

bool Quarantine::submit(QuarantineEntry entry, std::shared_ptr<const ObjectBuffer> bytes) {
    const uint64_t size = bytes ? bytes->size() : 0;
    if (size > max_size_) {
        ++counters_.too_big;
        return false;
    }
    {
        std::lock_guard lock(mutex_);
        if (stopping_ || queue_.size() >= kQueueEntries || queued_bytes_ + size > queue_bytes_) {
            ++counters_.dropped;
            return false;
        }
        queued_bytes_ += size;
        queue_.push_back(Job{std::move(entry), std::move(bytes), nullptr});
    }
    ++counters_.queued;
    wake_.notify_one();
    return true;
}

void Quarantine::post(std::function<void()> task) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) throw std::runtime_error("the quarantine is stopping");
        // Commands are few (the control socket bounds them) and not counted
        // against the entries' bound.
        queue_.push_back(Job{{}, nullptr, std::move(task)});
    }
    wake_.notify_one();
}

void Quarantine::warn(const std::string& what) {
    const auto now = std::chrono::steady_clock::now();
    if (last_warning_ != std::chrono::steady_clock::time_point{} &&
        now - last_warning_ < kWarningInterval) {
        ++warnings_suppressed_;
        return;
    }
    spdlog::warn("quarantine {}: {}{}", dir_, what,
                 warnings_suppressed_
                     ? fmt::format(" ({} more since the last such message)", warnings_suppressed_)
                     : std::string());
    last_warning_ = now;
    warnings_suppressed_ = 0;
}

void Quarantine::run() {
    pthread_setname_np(pthread_self(), "nfq-quarantine");
    auto next_expiry = std::chrono::steady_clock::now() + kExpireInterval;
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            busy_ = false;
            idle_.notify_all();
            wake_.wait_until(lock, next_expiry, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            if (queue_.empty()) {
                lock.unlock();
                store_->expire();
                next_expiry = std::chrono::steady_clock::now() + kExpireInterval;
                refresh_gauges();
                continue;
            }
            job = std::move(queue_.front());
            queue_.pop_front();
            if (job.bytes) queued_bytes_ -= job.bytes->size();
            busy_ = true;
        }
        if (job.task) {
            job.task();
        } else {
            const std::string id = job.entry.id;
            std::span<const uint8_t> bytes;
            if (job.bytes) bytes = job.bytes->bytes();
            std::string error = store_->put(std::move(job.entry), bytes);
            // The gauges first: whoever sees `written` move sees the entry.
            refresh_gauges();
            if (error.empty()) {
                ++counters_.written;
            } else {
                ++counters_.write_failures;
                warn("entry " + id + " not kept: " + error);
            }
        }
    }
}

bool Quarantine::wait_idle(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return idle_.wait_for(lock, timeout, [&] { return queue_.empty() && !busy_; });
}

QuarantineCounters Quarantine::counters() const {
    QuarantineCounters c;
    c.entries = counters_.entries;
    c.bytes = counters_.bytes;
    c.queued = counters_.queued;
    c.written = counters_.written;
    c.evicted = counters_.evicted;
    c.write_failures = counters_.write_failures;
    c.dropped = counters_.dropped;
    c.too_big = counters_.too_big;
    c.corrupt = counters_.corrupt;
    c.released = counters_.released;
    c.release_failures = counters_.release_failures;
    c.deleted = counters_.deleted;
    c.exported = counters_.exported;
    return c;
}

void Quarantine::command(Done done, std::function<nlohmann::json()> work) {
    post([this, done = std::move(done), work = std::move(work)] {
        nlohmann::json result;
        std::string error;
        try {
            result = work();
        } catch (const std::exception& e) {
            error = e.what();
        }
        // Before the answer: a caller that reads status next sees the change.
        refresh_gauges();
        done(error.empty() ? std::move(result) : nlohmann::json(), error);
    });
}

void Quarantine::refresh_gauges() {
    counters_.entries = store_->entries();
    counters_.bytes = store_->bytes();
    counters_.evicted = store_->evicted();
}

void Quarantine::list(nlohmann::json request, Done done) {
    if (!request.is_object()) request = nlohmann::json::object();
    command(std::move(done), [this, request = std::move(request)] {
        const std::string protocol = request.value("protocol", std::string());
        const size_t limit = request.value("limit", size_t(1000));
        nlohmann::json out = nlohmann::json::array();
        for (const QuarantineEntry& e : store_->list(protocol, parse_since(request), limit))
            out.push_back(quarantine_entry_json(e));
        return out;
    });
}

void Quarantine::show(std::string id, Done done) {
    command(std::move(done),
            [this, id = std::move(id)] { return quarantine_entry_json(store_->show(id)); });
}

void Quarantine::export_to(std::string id, int fd, Done done) {
    command(std::move(done), [this, id = std::move(id), fd] {
        UniqueFd data(store_->open_data(id));
        uint64_t copied = 0;
        std::vector<char> buffer(64 << 10);
        for (;;) {
            ssize_t n = ::read(data.get(), buffer.data(), buffer.size());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw std::runtime_error(std::string("read: ") + std::strerror(errno));
            if (n == 0) break;
            for (ssize_t written = 0; written < n;) {
                ssize_t w = ::write(fd, buffer.data() + written, size_t(n - written));
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0)
                    throw std::runtime_error(std::string("write to the export file: ") +
                                             std::strerror(w < 0 ? errno : ENOSPC));
                written += w;
            }
            copied += uint64_t(n);
        }
        ++counters_.exported;
        return nlohmann::json{{"id", id}, {"bytes", copied}};
    });
}

void Quarantine::release(std::string id, Done done) {
    command(std::move(done), [this, id = std::move(id)] {
        const QuarantineEntry e = store_->show(id);
        if (e.protocol != "smtp")
            throw std::runtime_error("quarantine entry " + e.id + " is " + e.protocol +
                                     ": only SMTP mail can be released (export it instead)");
        UniqueFd data(store_->open_data(id));
        MappedFile file(data.get());
        std::string error = smtp_deliver(release_.relay, e.sender, e.recipients, file.bytes(),
                                         release_.timeout, release_.mark);
        if (!error.empty()) {
            ++counters_.release_failures;
            spdlog::warn("quarantine: release of {} to {} through {} failed: {}", e.id,
                         fmt::join(e.recipients, ", "), release_.relay, error);
            throw std::runtime_error("release of " + e.id + " failed: " + error);
        }
        ++counters_.released;
        spdlog::info("quarantine: {} released: from {} to {} through {} ({} bytes)", e.id, e.sender,
                     fmt::join(e.recipients, ", "), release_.relay, e.size);
        return nlohmann::json{{"id", e.id},
                              {"relay", release_.relay},
                              {"sender", e.sender},
                              {"recipients", e.recipients},
                              {"bytes", e.size}};
    });
}

void Quarantine::remove(std::string id, Done done) {
    command(std::move(done), [this, id = std::move(id)] {
        store_->remove(id);
        ++counters_.deleted;
        spdlog::info("quarantine: {} deleted", id);
        return nlohmann::json{{"id", id}, {"deleted", true}};
    });
}

}  // namespace nfqscan
