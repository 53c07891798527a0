#include "nfqscan/ftp_expectations.h"

#include <nlohmann/json.hpp>

namespace nfqscan {

void to_json(nlohmann::json& j, const FtpCounters& c) {
    j = {{"sessions", c.sessions.load()},
         {"expectations", c.expectations.load()},
         {"claimed", c.claimed.load()},
         {"expired", c.expired.load()},
         {"evicted", c.evicted.load()},
         {"refused_addresses", c.refused_addresses.load()},
         {"downloads", c.downloads.load()},
         {"uploads", c.uploads.load()},
         {"listings", c.listings.load()},
         {"files_scanned", c.files_scanned.load()},
         {"files_blocked", c.files_blocked.load()},
         {"replies_replaced", c.replies_replaced.load()},
         {"resumed", c.resumed.load()},
         {"aborted", c.aborted.load()},
         {"data_unseen", c.data_unseen.load()},
         {"tls", c.tls.load()},
         {"protocol_errors", c.protocol_errors.load()}};
}

// -- FtpSession ----------------------------------------------------------------

namespace {
// Transfers kept per session: the current one and a few whose completion
// reply has not gone out yet (FTP runs one transfer at a time).
constexpr size_t kMaxTransfers = 8;
}  // namespace

FtpSession::FtpSession(std::function<void()> wake, FtpCounters* counters)
    : wake_(std::move(wake)), counters_(counters) {}

FtpTransfer* FtpSession::find(uint64_t number) {
    for (FtpTransfer& t : transfers_)
        if (t.number == number) return &t;
    return nullptr;
}

const FtpTransfer* FtpSession::find(uint64_t number) const {
    for (const FtpTransfer& t : transfers_)
        if (t.number == number) return &t;
    return nullptr;
}

uint64_t FtpSession::begin(FtpTransfer transfer) {
    std::lock_guard lock(mutex_);
    transfer.number = next_number_++;
    transfer.state = FtpTransfer::State::Waiting;
    while (transfers_.size() >= kMaxTransfers)
        transfers_.pop_front();
    transfers_.push_back(std::move(transfer));
    current_ = transfers_.back().number;
    return current_;
}

void FtpSession::abort_current() {
    std::lock_guard lock(mutex_);
    if (FtpTransfer* t = find(current_)) t->aborted = true;
}

std::optional<FtpTransfer> FtpSession::transfer(uint64_t number) const {
    std::lock_guard lock(mutex_);
    const FtpTransfer* t = find(number);
    if (!t) return std::nullopt;
    return *t;
}

void FtpSession::forget(uint64_t number) {
    std::lock_guard lock(mutex_);
    for (auto it = transfers_.begin(); it != transfers_.end(); ++it)
        if (it->number == number) {
            transfers_.erase(it);
            break;
        }
    if (current_ == number) current_ = 0;
}

uint64_t FtpSession::next_generation() {
    std::lock_guard lock(mutex_);
    return ++generation_;
}

bool FtpSession::claimed_since(uint64_t g) const {
    std::lock_guard lock(mutex_);
    return g != 0 && claimed_generation_ >= g;
}

void FtpSession::note_claimed(uint64_t generation) {
    std::lock_guard lock(mutex_);
    claimed_generation_ = std::max(claimed_generation_, generation);
}

std::optional<FtpTransfer> FtpSession::bind() {
    std::lock_guard lock(mutex_);
    FtpTransfer* t = find(current_);
    if (!t || t->state != FtpTransfer::State::Waiting) return std::nullopt;
    t->state = FtpTransfer::State::Receiving;
    return *t;
}

void FtpSession::finish(uint64_t number, bool blocked, std::string notice) {
    std::function<void()> wake;
    {
        std::lock_guard lock(mutex_);
        FtpTransfer* t = find(number);
        if (!t) return;
        t->state = FtpTransfer::State::Done;
        t->blocked = blocked;
        t->notice = std::move(notice);
        wake = wake_;
    }
    // Outside the lock: the wake posts to another worker's task queue.
    if (wake) wake();
}

void FtpSession::receiver_closed(uint64_t number) {
    std::function<void()> wake;
    {
        std::lock_guard lock(mutex_);
        FtpTransfer* t = find(number);
        if (!t || t->receiver_closed) return;
        t->receiver_closed = true;
        wake = wake_;
    }
    if (wake) wake();
}

// -- FtpExpectations -----------------------------------------------------------

FtpExpectations::FtpExpectations(size_t capacity, uint64_t timeout_ms)
    : capacity_(std::max<size_t>(1, capacity)), timeout_ms_(timeout_ms) {}

void FtpExpectations::purge(uint64_t now_ms) {
    while (!order_.empty()) {
        auto it = entries_.find(order_.front().second);
        bool current = it != entries_.end() && it->second.serial == order_.front().first;
        if (current && it->second.deadline > now_ms) break;
        if (current) {
            entries_.erase(it);
            ++counters_.expired;
        }
        order_.pop_front();
    }
    size_ = entries_.size();
}

void FtpExpectations::expect(const IpAddress& from, const IpAddress& to, const IpAddress& also_to,
                             uint16_t port, const std::shared_ptr<FtpSession>& session,
                             uint64_t generation, uint64_t now_ms) {
    std::lock_guard lock(mutex_);
    purge(now_ms);
    Key key{from, port};
    if (!entries_.count(key)) {
        // Full: the oldest goes (a flood of PASV replies cannot grow it).
        while (entries_.size() >= capacity_ && !order_.empty()) {
            auto it = entries_.find(order_.front().second);
            if (it != entries_.end() && it->second.serial == order_.front().first) {
                entries_.erase(it);
                ++counters_.evicted;
            }
            order_.pop_front();
        }
    }
    Entry& e = entries_[key];
    e = {to, also_to, session, generation, now_ms + timeout_ms_, ++serial_};
    order_.emplace_back(e.serial, key);
    if (order_.size() > 2 * capacity_) {
        // Claimed and replaced entries leave stale places behind a live
        // one: rebuilt from the live entries, oldest first.
        std::map<uint64_t, Key> live;
        for (const auto& [k, entry] : entries_)
            live.emplace(entry.serial, k);
        order_.assign(live.begin(), live.end());
    }
    ++counters_.expectations;
    size_ = entries_.size();
}

std::shared_ptr<FtpSession> FtpExpectations::claim(const IpAddress& src, const IpAddress& dst,
                                                   uint16_t port, uint64_t now_ms) {
    if (size_.load(std::memory_order_relaxed) == 0) return nullptr;
    std::lock_guard lock(mutex_);
    purge(now_ms);
    auto it = entries_.find(Key{src, port});
    if (it == entries_.end() || (it->second.to != dst && it->second.also_to != dst)) return nullptr;
    std::shared_ptr<FtpSession> session = it->second.session.lock();
    uint64_t generation = it->second.generation;
    entries_.erase(it);  // its order_ entry is skipped when it comes up
    size_ = entries_.size();
    if (!session) return nullptr;
    ++counters_.claimed;
    session->note_claimed(generation);
    return session;
}

void FtpExpectations::forget(const FtpSession* session) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
        std::shared_ptr<FtpSession> s = it->second.session.lock();
        if (!s || s.get() == session) {
            it = entries_.erase(it);
            ++counters_.expired;
        } else {
            ++it;
        }
    }
    size_ = entries_.size();
}

size_t FtpExpectations::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace nfqscan
