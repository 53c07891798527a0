// Mail notifications (issue 10): a short mail to the envelope sender of a
// message that was blocked (virus, or a scan error whose fallback drops),
// with the reason and the original headers, sent through an SMTP relay by
// libcurl. The slow path, off to the side of the data path:
// - notify() never blocks: it checks, counts and queues; one worker thread
//   of the Notifier sends. A full queue drops the notification (counted).
// - The null sender <> is never notified (bounces and notifications must
//   not answer each other), and each recipient gets at most
//   per_sender_per_minute notifications in any 60 s (the rest are counted).
// - A relay that is down or refuses costs a failed transfer, a counter and a
//   log line (at most one a minute), never traffic: nothing is retried.
// Tests: tests/unit/notify/notifier_test.cc.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace nfqscan {

// [notify] of nfqscan.toml.
struct NotifyConfig {
    // The SMTP relay notifications go through: "host:port" ("[v6addr]:port"
    // for an IPv6 literal). "" = no relay: every notification fails (counted).
    std::string relay;
    // Envelope sender and From: of every notification.
    std::string from = "nfqscan@localhost";
    // Subject prefix of a message passed unscanned after a scan error
    // (notify_recipient_on_error_pass); used by the mail inspectors.
    std::string error_pass_tag = "***UNCHECKED***";
    // Notifications one recipient may get in any 60 seconds.
    uint32_t per_sender_per_minute = 10;
};

// The relay of NotifyConfig split up. Throws std::invalid_argument naming
// what is wrong ("" is valid: no relay, host empty).
struct RelayAddress {
    std::string host;  // a name, an IPv4 or an IPv6 literal (without brackets)
    uint16_t port = 0;
    static RelayAddress parse(std::string_view text);
    // "smtp://host:port" with brackets around an IPv6 literal.
    std::string url() const;
};

// Whether `address` can go into MAIL FROM / RCPT TO and a To: header as it
// is: local@domain, printable ASCII, no spaces, angle brackets or quotes.
bool valid_mail_address(std::string_view address);

struct Notification {
    std::string recipient;         // the envelope sender of the original; "" or "<>": null
    std::string subject;           // UTF-8; encoded for the header when not ASCII
    std::string text;              // the reason, UTF-8 text (LF or CRLF line ends)
    std::string original_headers;  // the original message's header block, as received
};

struct NotifierCounters {
    uint64_t queued = 0;        // accepted by notify()
    uint64_t sent = 0;          // the relay answered 250 to the message
    uint64_t failed = 0;        // connect, timeout, or the relay refused
    uint64_t rate_limited = 0;  // the recipient had per_sender_per_minute already
    uint64_t null_sender = 0;   // recipient <>: never notified
    uint64_t invalid = 0;       // recipient not a plain address (see valid_mail_address)
    uint64_t dropped = 0;       // the queue was full, or the notifier stopped first
};
void to_json(nlohmann::json& j, const NotifierCounters& c);

// The message a notification is sent as (RFC 5322, CRLF line ends, not yet
// dot-stuffed): multipart/mixed with the text and the original headers as
// text/rfc822-headers; Auto-Submitted: auto-generated. `date` and
// `message_id` are given so that tests can compare whole messages.
std::string compose_notification(const Notification& n, std::string_view from,
                                 std::string_view date, std::string_view message_id);

class Notifier {
  public:
    using Clock = std::chrono::steady_clock;
    struct Options {
        size_t queue_capacity = 256;
        std::chrono::milliseconds connect_timeout{10000};
        std::chrono::milliseconds transfer_timeout{30000};  // one whole SMTP transaction
        // The time the rate limit is measured in (tests turn it by hand).
        std::function<Clock::time_point()> now = [] { return Clock::now(); };
    };

    // Starts the worker thread. Throws std::invalid_argument for a relay
    // that does not parse (the configuration checks it first).
    explicit Notifier(const NotifyConfig& config);
    Notifier(const NotifyConfig& config, Options options);
    // Stops the worker: a transfer under way is aborted, queued
    // notifications are dropped (counted).
    ~Notifier();
    Notifier(const Notifier&) = delete;
    Notifier& operator=(const Notifier&) = delete;

    // From any thread; returns at once.
    void notify(Notification n);

    NotifierCounters counters() const;
    // Notifications queued and not yet taken by the worker.
    size_t queued() const;
    // Until nothing is queued or being sent, or `timeout` passed; returns
    // whether it is idle (tests, and an orderly shutdown that wants them out).
    bool wait_idle(std::chrono::milliseconds timeout) const;

  private:
    void run();
    bool send(const Notification& n);
    bool admit(const std::string& recipient);

    const NotifyConfig config_;
    const RelayAddress relay_;
    const Options options_;

    mutable std::mutex mutex_;
    mutable std::condition_variable wake_;  // the worker: work or stop
    mutable std::condition_variable idle_;  // wait_idle
    std::deque<Notification> queue_;
    bool busy_ = false;  // the worker is sending one
    std::atomic<bool> stopping_{false};
    // Per recipient: the times of its notifications in the last 60 s.
    std::unordered_map<std::string, std::deque<Clock::time_point>> recent_;
    Clock::time_point last_sweep_{};

    struct AtomicCounters {
        std::atomic<uint64_t> queued{0}, sent{0}, failed{0}, rate_limited{0}, null_sender{0},
            invalid{0}, dropped{0};
    } counters_;
    Clock::time_point last_failure_log_{};
    uint64_t failures_since_log_ = 0;

    std::thread worker_;  // last: started when everything above exists
};

}  // namespace nfqscan
