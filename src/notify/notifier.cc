// The notifier: admission (null sender, address check, rate limit, queue
// bound) on the caller's thread under one mutex; composing and sending with
// smtp_submit() on the worker thread.
#include "nfqscan/notifier.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <stdexcept>

#include "nfqscan/host_port.h"
#include "nfqscan/smtp_submit.h"

namespace nfqscan {

namespace {

constexpr auto kRateWindow = std::chrono::seconds(60);
constexpr auto kFailureLogInterval = std::chrono::seconds(60);

std::string lowercase(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// "<a@b>" -> "a@b"; surrounding spaces go too.
std::string_view bare_address(std::string_view s) {
    while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ')
        s.remove_suffix(1);
    if (s.size() >= 2 && s.front() == '<' && s.back() == '>') s = s.substr(1, s.size() - 2);
    return s;
}

// Every line end (LF, CR, CRLF) as CRLF, and a final CRLF unless empty.
std::string crlf_lines(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 32 + 2);
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\r') {
            out += "\r\n";
            if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
        } else if (c == '\n') {
            out += "\r\n";
        } else {
            out.push_back(c);
        }
    }
    if (!out.empty() && !out.ends_with("\r\n")) out += "\r\n";
    return out;
}

bool ascii_printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](unsigned char c) { return c == '\t' || (c >= 0x20 && c < 0x7f); });
}

std::string base64(std::string_view in) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const uint32_t v =
            uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
        out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
                kAlphabet[v & 63]};
    }
    if (i + 1 == in.size()) {
        const uint32_t v = uint32_t(uint8_t(in[i])) << 16;
        out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], '=', '='};
    } else if (i + 2 == in.size()) {
        const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
        out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
    }
    return out;
}

// The Subject's value: control characters become spaces (a header cannot
// be injected through it); not ASCII -> RFC 2047 encoded words of at most
// 45 input bytes each (60 base64 characters, a 75-character word), cut
// between UTF-8 sequences, folded onto continuation lines.
std::string subject_value(std::string_view subject) {
    std::string clean(subject);
    for (char& c : clean)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    if (ascii_printable(clean)) return clean;
    std::string out;
    size_t pos = 0;
    while (pos < clean.size()) {
        size_t end = std::min(clean.size(), pos + 45);
        // Back up to the start of a UTF-8 sequence (a byte not 10xxxxxx).
        while (end < clean.size() && end > pos + 1 &&
               (static_cast<unsigned char>(clean[end]) & 0xC0) == 0x80)
            --end;
        if (!out.empty()) out += "\r\n ";
        out += "=?UTF-8?B?" + base64(std::string_view(clean).substr(pos, end - pos)) + "?=";
        pos = end;
    }
    return out;
}

std::string rfc5322_date(std::chrono::system_clock::time_point t) {
    const std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    return fmt::format("{}, {:02} {} {} {:02}:{:02}:{:02} +0000", kDays[tm.tm_wday], tm.tm_mday,
                       kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string random_hex(size_t bytes) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::string out;
    while (out.size() < bytes * 2)
        out += fmt::format("{:016x}", rng());
    out.resize(bytes * 2);
    return out;
}

std::string host_name() {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
    return name;
}

}  // namespace

RelayAddress RelayAddress::parse(std::string_view text) {
    RelayAddress r;
    if (text.empty()) return r;
    const HostPort split = split_host_port(
        text, "must be \"host:port\" (\"[address]:port\" for IPv6), or \"\" for none");
    if (split.bracketed) {
        in6_addr addr{};
        if (inet_pton(AF_INET6, std::string(split.host).c_str(), &addr) != 1)
            throw std::invalid_argument("\"" + std::string(split.host) +
                                        "\" is not an IPv6 address");
    } else {
        const bool name_chars = std::all_of(
            split.host.begin(), split.host.end(),
            [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_'; });
        if (split.host.empty() || !name_chars)
            throw std::invalid_argument("the host must be a name or an address");
    }
    r.host = std::string(split.host);
    r.port = split.port;
    return r;
}

std::string RelayAddress::url() const {
    const bool v6 = host.find(':') != std::string::npos;
    return fmt::format("smtp://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

bool valid_mail_address(std::string_view address) {
    if (address.size() < 3 || address.size() > 254) return false;
    const size_t at = address.find('@');
    if (at == 0 || at == std::string_view::npos || at + 1 == address.size() ||
        address.find('@', at + 1) != std::string_view::npos)
        return false;
    static constexpr std::string_view kForbidden = "<>\"()[],;:\\";
    return std::all_of(address.begin(), address.end(), [](unsigned char c) {
        return c > 0x20 && c < 0x7f && kForbidden.find(static_cast<char>(c)) == kForbidden.npos;
    });
}

void to_json(nlohmann::json& j, const NotifierCounters& c) {
    j = {{"queued", c.queued},           {"sent", c.sent},
         {"failed", c.failed},           {"rate_limited", c.rate_limited},
         {"null_sender", c.null_sender}, {"invalid", c.invalid},
         {"dropped", c.dropped}};
}

std::string compose_notification(const Notification& n, std::string_view from,
                                 std::string_view date, std::string_view message_id) {
    const std::string text = crlf_lines(n.text);
    std::string headers = crlf_lines(n.original_headers);
    // The header block ends at its first empty line (a caller may hand over
    // the separator, or more).
    if (headers.starts_with("\r\n")) {
        headers.clear();
    } else if (const size_t end = headers.find("\r\n\r\n"); end != std::string::npos) {
        headers.resize(end + 2);
    }
    std::string boundary = fmt::format("=_nfqscan_{}", random_hex(12));
    while (text.find(boundary) != std::string::npos || headers.find(boundary) != std::string::npos)
        boundary += random_hex(4);
    std::string out;
    out.reserve(text.size() + headers.size() + 1024);
    out += fmt::format("From: <{}>\r\n", from);
    out += fmt::format("To: <{}>\r\n", bare_address(n.recipient));
    out += fmt::format("Subject: {}\r\n", subject_value(n.subject));
    out += fmt::format("Date: {}\r\n", date);
    out += fmt::format("Message-ID: <{}>\r\n", message_id);
    out += "Auto-Submitted: auto-generated\r\n";
    out += "MIME-Version: 1.0\r\n";
    out += fmt::format("Content-Type: multipart/mixed; boundary=\"{}\"\r\n\r\n", boundary);
    out += "This is a message in MIME format.\r\n";
    out += fmt::format("--{}\r\n", boundary);
    out += "Content-Type: text/plain; charset=utf-8\r\n";
    out += "Content-Transfer-Encoding: 8bit\r\n\r\n";
    out += text;
    out += fmt::format("--{}\r\n", boundary);
    out += "Content-Type: text/rfc822-headers; charset=utf-8\r\n";
    out += "Content-Transfer-Encoding: 8bit\r\n";
    out += "Content-Description: the headers of the message\r\n\r\n";
    out += headers;
    out += fmt::format("--{}--\r\n", boundary);
    return out;
}

Notifier::Notifier(const NotifyConfig& config) : Notifier(config, Options{}) {}

Notifier::Notifier(const NotifyConfig& config, Options options)
    : config_(config), relay_(RelayAddress::parse(config.relay)), options_(std::move(options)) {
    smtp_client_init();
    worker_ = std::thread([this] { run(); });
}

Notifier::~Notifier() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    worker_.join();
}

void Notifier::notify(Notification n) {
    const std::string_view recipient = bare_address(n.recipient);
    if (recipient.empty()) {
        ++counters_.null_sender;
        return;
    }
    if (!valid_mail_address(recipient)) {
        ++counters_.invalid;
        return;
    }
    n.recipient = std::string(recipient);
    {
        std::lock_guard lock(mutex_);
        if (stopping_ || queue_.size() >= options_.queue_capacity) {
            ++counters_.dropped;
            return;
        }
        if (!admit(lowercase(n.recipient))) {
            ++counters_.rate_limited;
            return;
        }
        queue_.push_back(std::move(n));
        ++counters_.queued;
    }
    wake_.notify_one();
}

// Under mutex_.
bool Notifier::admit(const std::string& recipient) {
    const Clock::time_point now = options_.now();
    auto expire = [&](std::deque<Clock::time_point>& times) {
        while (!times.empty() && now - times.front() >= kRateWindow)
            times.pop_front();
    };
    // The map holds only recipients of the last minute.
    if (now - last_sweep_ >= kRateWindow) {
        for (auto it = recent_.begin(); it != recent_.end();) {
            expire(it->second);
            it = it->second.empty() ? recent_.erase(it) : std::next(it);
        }
        last_sweep_ = now;
    }
    std::deque<Clock::time_point>& times = recent_[recipient];
    expire(times);
    if (times.size() >= config_.per_sender_per_minute) return false;
    times.push_back(now);
    return true;
}

NotifierCounters Notifier::counters() const {
    NotifierCounters c;
    c.queued = counters_.queued;
    c.sent = counters_.sent;
    c.failed = counters_.failed;
    c.rate_limited = counters_.rate_limited;
    c.null_sender = counters_.null_sender;
    c.invalid = counters_.invalid;
    c.dropped = counters_.dropped;
    return c;
}

size_t Notifier::queued() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
}

bool Notifier::wait_idle(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return idle_.wait_for(lock, timeout, [&] { return queue_.empty() && !busy_; });
}

void Notifier::run() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) break;
        Notification n = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
        lock.unlock();
        const bool ok = send(n);
        ++(ok ? counters_.sent : counters_.failed);
        lock.lock();
        busy_ = false;
        idle_.notify_all();
    }
    counters_.dropped += queue_.size();
    queue_.clear();
    idle_.notify_all();
}

bool Notifier::send(const Notification& n) {
    const std::string_view domain =
        std::string_view(config_.from).substr(config_.from.find('@') + 1);
    const std::string message =
        compose_notification(n, config_.from, rfc5322_date(std::chrono::system_clock::now()),
                             fmt::format("{}.nfqscan@{}", random_hex(12), domain));
    const std::string helo_name = host_name();
    const std::string error = smtp_submit({.relay = config_.relay,
                                           .helo_name = helo_name,
                                           .from = config_.from,
                                           .recipients = std::span(&n.recipient, 1),
                                           .message = message,
                                           .connect_timeout = options_.connect_timeout,
                                           .transfer_timeout = options_.transfer_timeout,
                                           .abort = &stopping_});
    if (error.empty()) return true;
    const Clock::time_point now = options_.now();
    ++failures_since_log_;
    if (last_failure_log_ == Clock::time_point{} ||
        now - last_failure_log_ >= kFailureLogInterval) {
        spdlog::warn(
            "notify: a notification to <{}> through {} failed: {} ({} failed since the "
            "last such message)",
            n.recipient, config_.relay.empty() ? "no relay" : config_.relay, error,
            failures_since_log_);
        last_failure_log_ = now;
        failures_since_log_ = 0;
    }
    return false;
}

}  // namespace nfqscan
