// FTP data connections (DESIGN.md: "FTP expectations consulted before ports
// and probes when a flow is created"; issue 12). The control inspector reads
// PASV/EPSV replies and PORT/EPRT commands and predicts the data connection
// that follows; FtpExpectations holds those predictions for the whole
// daemon, because the data connection may land on another worker's queue
// than its control connection (--queue-balance, fanout, NAT changing the
// address pair). A new TCP flow (its SYN) that matches an expectation is
// claimed as an FTP data flow whatever its port, bound to the FtpSession of
// its control connection.
//
// FtpSession is the only state the two sides share: the control inspector
// (on the control flow's worker) says which transfer the next data bytes
// belong to; the data inspector (on whichever worker) reports the outcome of
// that transfer and wakes the control flow's worker, whose inspector then
// releases or replaces the completion reply (226/250) it holds. Everything
// in it is guarded by its mutex and copied out: no reference crosses threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>

#include "nfqscan/packet.h"

namespace nfqscan {

// One transfer command of a control session (RETR, STOR, APPE, STOU, LIST,
// NLST, MLSD) and, once its data connection has carried it, its outcome.
struct FtpTransfer {
    enum class Kind : uint8_t { Listing, Download, Upload };
    enum class State : uint8_t {
        Waiting,    // no data byte seen yet
        Receiving,  // a data connection carries it, its verdict is not known
        Done,       // judged (or passed, or dropped): `blocked` says which
    };
    uint64_t number = 0;  // 1, 2, ... per session
    Kind kind = Kind::Listing;
    std::string command;      // "RETR"
    std::string path;         // the argument, joined to the current directory where known
    bool resumed = false;     // REST <n> (n > 0) came before it: only part of the file crosses
    bool aborted = false;     // ABOR came before its end
    uint64_t generation = 0;  // the expectation (PASV/PORT) in force when it began
    State state = State::Waiting;
    bool blocked = false;
    std::string notice;  // blocked: the text of the "550 <notice>" reply
    // Blocked: the receiver of the drop message closed the data connection
    // (it read it all), or the data flow is gone.
    bool receiver_closed = false;
};

// Process-wide FTP counters (atomics: every worker adds to them).
struct FtpCounters {
    std::atomic<uint64_t> sessions{0};           // control connections inspected
    std::atomic<uint64_t> expectations{0};       // data connections predicted
    std::atomic<uint64_t> claimed{0};            // ... that arrived and were claimed
    std::atomic<uint64_t> expired{0};            // ... never claimed (timeout, session end)
    std::atomic<uint64_t> evicted{0};            // ... dropped: the table was full
    std::atomic<uint64_t> refused_addresses{0};  // PASV/PORT arguments not usable
    std::atomic<uint64_t> downloads{0}, uploads{0}, listings{0};
    std::atomic<uint64_t> files_scanned{0};     // data objects handed to the scan service
    std::atomic<uint64_t> files_blocked{0};     // replaced by the drop message
    std::atomic<uint64_t> replies_replaced{0};  // 226/250 turned into 550
    std::atomic<uint64_t> resumed{0};           // REST transfers (category partial)
    std::atomic<uint64_t> aborted{0};           // ABOR before a transfer's end
    std::atomic<uint64_t> data_unseen{0};       // a transfer's data never crossed nfqscand
    std::atomic<uint64_t> tls{0};               // AUTH TLS accepted: released unscanned
    std::atomic<uint64_t> protocol_errors{0};
};
void to_json(nlohmann::json& j, const FtpCounters& c);

class FtpSession {
  public:
    // `wake` may be called from any thread: it makes the control flow's
    // worker show the control flow its pending bytes again.
    FtpSession(std::function<void()> wake, FtpCounters* counters);

    FtpCounters* counters() const { return counters_; }

    // -- the control side ---------------------------------------------------
    // A transfer command: it becomes the current transfer (the one the next
    // data bytes belong to). Returns its number.
    uint64_t begin(FtpTransfer transfer);
    // ABOR: the current transfer ends without a verdict on what is missing.
    void abort_current();
    // A copy of transfer `number` (nullopt: unknown or forgotten).
    std::optional<FtpTransfer> transfer(uint64_t number) const;
    // Its completion reply went out: forgotten.
    void forget(uint64_t number);
    // A PASV/EPSV reply or PORT/EPRT command set a new expectation; returns
    // its generation.
    uint64_t next_generation();
    // Whether a data connection of generation `g` or later was claimed.
    bool claimed_since(uint64_t g) const;

    // -- the data side ------------------------------------------------------
    // A data connection of this session arrived (claimed by an expectation).
    void note_claimed(uint64_t generation);
    // The first bytes of a data connection: the current transfer, which is
    // now receiving (nullopt: no transfer command came, or it is done).
    std::optional<FtpTransfer> bind();
    // The outcome of transfer `number`; wakes the control side.
    void finish(uint64_t number, bool blocked, std::string notice);
    // The receiver of blocked transfer `number` closed the data connection;
    // wakes the control side.
    void receiver_closed(uint64_t number);

  private:
    FtpTransfer* find(uint64_t number);
    const FtpTransfer* find(uint64_t number) const;

    mutable std::mutex mutex_;
    std::function<void()> wake_;
    FtpCounters* counters_;
    std::deque<FtpTransfer> transfers_;  // not yet forgotten, oldest first (a few)
    uint64_t current_ = 0;               // number of the current transfer (0: none)
    uint64_t next_number_ = 1;
    uint64_t generation_ = 0;
    uint64_t claimed_generation_ = 0;
};

// The predicted data connections of every control session of the daemon:
// thread-safe, bounded, each entry one-shot and short-lived.
class FtpExpectations {
  public:
    static constexpr size_t kDefaultCapacity = 4096;
    static constexpr uint64_t kDefaultTimeoutMs = 30'000;

    explicit FtpExpectations(size_t capacity = kDefaultCapacity,
                             uint64_t timeout_ms = kDefaultTimeoutMs);

    // A data connection from `from` to port `port` of `to` (or of
    // `also_to`: the control connection's own peer, which a port forward or
    // a server behind NAT may put there instead of the advertised address)
    // is expected for `session` until now_ms + timeout. A later expectation
    // of the same `from` and `port` replaces it.
    void expect(const IpAddress& from, const IpAddress& to, const IpAddress& also_to, uint16_t port,
                const std::shared_ptr<FtpSession>& session, uint64_t generation, uint64_t now_ms);
    // The SYN of a new TCP flow `src` -> `dst`:`port`: the session it was
    // expected for (the expectation is used up), or nullptr.
    std::shared_ptr<FtpSession> claim(const IpAddress& src, const IpAddress& dst, uint16_t port,
                                      uint64_t now_ms);
    // The control connection ended: its expectations go.
    void forget(const FtpSession* session);

    size_t size() const;
    FtpCounters& counters() { return counters_; }
    const FtpCounters& counters() const { return counters_; }

  private:
    struct Key {
        IpAddress from;
        uint16_t port = 0;
        auto operator<=>(const Key&) const = default;
    };
    struct Entry {
        IpAddress to, also_to;
        std::weak_ptr<FtpSession> session;
        uint64_t generation = 0;
        uint64_t deadline = 0;
        uint64_t serial = 0;
    };
    void purge(uint64_t now_ms);  // under mutex_

    const size_t capacity_;
    const uint64_t timeout_ms_;
    mutable std::mutex mutex_;
    std::atomic<size_t> size_{0};  // read without the lock: most SYNs find none
    std::map<Key, Entry> entries_;
    // In insertion order (deadlines grow with it): expiry and eviction.
    std::deque<std::pair<uint64_t, Key>> order_;  // serial, key
    uint64_t serial_ = 0;
    FtpCounters counters_;
};

}  // namespace nfqscan
