// Notifier against a tiny SMTP relay on 127.0.0.1 (a thread of the test),
// and its rules: null sender, address check, rate limit, bounded queue,
// relay down or refusing; smtp_submit(), which it and the quarantine's
// release send with, against the same relay.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "nfqscan/notifier.h"
#include "nfqscan/smtp_submit.h"

namespace nfqscan {
namespace {

using namespace std::chrono_literals;

class Fd {
  public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        std::swap(fd_, o.fd_);
        return *this;
    }
    int get() const { return fd_; }

  private:
    int fd_;
};

// A listening socket on 127.0.0.1, any free port.
Fd listen_loopback(uint16_t& port) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd.get() < 0 || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd.get(), 16) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        throw std::runtime_error("cannot listen on 127.0.0.1");
    port = ntohs(addr.sin_port);
    return fd;
}

// Speaks just enough SMTP for libcurl, one connection at a time, and keeps
// every message: the DATA bytes as they came on the wire and unstuffed.
class FakeRelay {
  public:
    struct Message {
        std::string ehlo, mail_from;
        std::vector<std::string> rcpt_to;
        std::string wire;  // between 354 and the final dot line
        std::string data;  // dot-unstuffed
    };

    explicit FakeRelay(std::string data_reply = "250 2.0.0 queued")
        : data_reply_(std::move(data_reply)), listener_(listen_loopback(port_)) {
        thread_ = std::thread([this] { run(); });
    }
    ~FakeRelay() {
        stop_ = true;
        thread_.join();
    }

    std::string relay() const { return "127.0.0.1:" + std::to_string(port_); }

    std::vector<Message> messages() const {
        std::lock_guard lock(mutex_);
        return messages_;
    }

  private:
    void run() {
        while (!stop_) {
            pollfd p{listener_.get(), POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
            if (conn.get() >= 0) serve(conn.get());
        }
    }

    // One line without its CRLF; false when the peer closed (or 5 s of silence).
    bool line(int fd, std::string& buffer, std::string& out) {
        for (;;) {
            if (size_t end = buffer.find("\r\n"); end != std::string::npos) {
                out = buffer.substr(0, end);
                buffer.erase(0, end + 2);
                return true;
            }
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) return false;
            char chunk[4096];
            const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
            if (n <= 0) return false;
            buffer.append(chunk, size_t(n));
        }
    }

    static void reply(int fd, const std::string& text) {
        const std::string out = text + "\r\n";
        (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    }

    void serve(int fd) {
        std::string buffer, cmd;
        Message m;
        reply(fd, "220 fake.relay ESMTP");
        while (line(fd, buffer, cmd)) {
            const std::string verb = cmd.substr(0, 4);
            if (verb == "EHLO" || verb == "HELO") {
                m.ehlo = cmd.substr(5);
                reply(fd, "250-fake.relay\r\n250 8BITMIME");
            } else if (verb == "MAIL") {
                m.mail_from = cmd.substr(10);
                reply(fd, "250 2.1.0 ok");
            } else if (verb == "RCPT") {
                m.rcpt_to.push_back(cmd.substr(8));
                reply(fd, "250 2.1.5 ok");
            } else if (verb == "DATA") {
                reply(fd, "354 go ahead");
                std::string data_line;
                while (line(fd, buffer, data_line) && data_line != ".") {
                    m.wire += data_line + "\r\n";
                    m.data +=
                        (data_line.starts_with('.') ? data_line.substr(1) : data_line) + "\r\n";
                }
                {
                    std::lock_guard lock(mutex_);
                    if (data_reply_.starts_with('2')) messages_.push_back(m);
                }
                m.rcpt_to.clear();
                m.wire.clear();
                m.data.clear();
                reply(fd, data_reply_);
            } else if (verb == "QUIT") {
                reply(fd, "221 2.0.0 bye");
                return;
            } else {
                reply(fd, "250 2.0.0 ok");  // RSET, NOOP
            }
        }
    }

    const std::string data_reply_;
    uint16_t port_ = 0;
    Fd listener_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mutex_;
    std::vector<Message> messages_;
    std::thread thread_;
};

NotifyConfig config_for(const std::string& relay, uint32_t per_minute = 10) {
    NotifyConfig c;
    c.relay = relay;
    c.from = "scanner@gw.example.net";
    c.per_sender_per_minute = per_minute;
    return c;
}

Notification virus_notice(const std::string& recipient) {
    return Notification{
        .recipient = recipient,
        .subject = "Virus found in your message: Eicar-Signature",
        .text =
            "Your message to alice@lab.test was not delivered.\n"
            ".A line that starts with a dot\nDetection: Eicar-Signature\n",
        .original_headers =
            "From: Sender <sender@example.org>\r\nTo: alice@lab.test\r\n"
            "Subject: holiday pictures\r\nMessage-ID: <1@example.org>\r\n",
    };
}

TEST(Notifier, SendsTheNoticeThroughTheRelay) {
    FakeRelay relay;
    Notifier notifier(config_for(relay.relay()));

    notifier.notify(virus_notice("<sender@example.org>"));

    ASSERT_TRUE(notifier.wait_idle(20s));
    const NotifierCounters c = notifier.counters();
    EXPECT_EQ(c.queued, 1u);
    EXPECT_EQ(c.sent, 1u);
    EXPECT_EQ(c.failed, 0u);
    const auto messages = relay.messages();
    ASSERT_EQ(messages.size(), 1u);
    const FakeRelay::Message& m = messages[0];
    EXPECT_EQ(m.mail_from, "<scanner@gw.example.net>");
    EXPECT_EQ(m.rcpt_to, std::vector<std::string>{"<sender@example.org>"});
    EXPECT_FALSE(m.ehlo.empty());
    EXPECT_NE(m.data.find("From: <scanner@gw.example.net>\r\n"), std::string::npos) << m.data;
    EXPECT_NE(m.data.find("To: <sender@example.org>\r\n"), std::string::npos) << m.data;
    EXPECT_NE(m.data.find("Subject: Virus found in your message: Eicar-Signature\r\n"),
              std::string::npos);
    EXPECT_NE(m.data.find("Auto-Submitted: auto-generated\r\n"), std::string::npos);
    EXPECT_NE(m.data.find("Detection: Eicar-Signature\r\n"), std::string::npos);
    EXPECT_NE(m.data.find("Content-Type: text/rfc822-headers"), std::string::npos);
    EXPECT_NE(m.data.find("Subject: holiday pictures\r\nMessage-ID: <1@example.org>\r\n"),
              std::string::npos)
        << m.data;
    // libcurl dot-stuffs; the relay gets the line back whole.
    EXPECT_NE(m.wire.find("\r\n..A line that starts with a dot\r\n"), std::string::npos);
    EXPECT_NE(m.data.find("\r\n.A line that starts with a dot\r\n"), std::string::npos);

    nlohmann::json j = c;
    EXPECT_EQ(j["sent"], 1);
    EXPECT_EQ(j["rate_limited"], 0);
    EXPECT_EQ(j.size(), 7u) << j.dump();
}

TEST(Notifier, NullSenderIsNeverNotified) {
    FakeRelay relay;
    Notifier notifier(config_for(relay.relay()));

    for (const char* null : {"", "<>", " <> "})
        notifier.notify(virus_notice(null));
    notifier.notify(virus_notice("sender@example.org"));

    ASSERT_TRUE(notifier.wait_idle(20s));
    const NotifierCounters c = notifier.counters();
    EXPECT_EQ(c.null_sender, 3u);
    EXPECT_EQ(c.queued, 1u);
    EXPECT_EQ(c.sent, 1u);
    ASSERT_EQ(relay.messages().size(), 1u);
    EXPECT_EQ(relay.messages()[0].rcpt_to, std::vector<std::string>{"<sender@example.org>"});
}

TEST(Notifier, RecipientThatIsNoPlainAddressIsRefused) {
    Notifier notifier(config_for(""));
    for (const char* bad : {"sender@example.org>\r\nRCPT TO:<victim@example.org", "no-at-sign",
                            "two words@example.org", "\"quoted\"@example.org", "a@b@c"})
        notifier.notify(virus_notice(bad));
    EXPECT_EQ(notifier.counters().invalid, 5u);
    EXPECT_EQ(notifier.counters().queued, 0u);
}

TEST(Notifier, RateLimitIsPerRecipientOverAnySixtySeconds) {
    std::atomic<int64_t> seconds{1000};
    Notifier::Options options;
    options.now = [&] { return Notifier::Clock::time_point(std::chrono::seconds(seconds.load())); };
    // No relay: every notification that gets through fails at once.
    Notifier notifier(config_for("", 2), options);

    notifier.notify(virus_notice("sender@example.org"));
    seconds += 30;
    notifier.notify(virus_notice("sender@example.org"));
    notifier.notify(virus_notice("sender@example.org"));    // the third in 60 s
    notifier.notify(virus_notice("<SENDER@Example.ORG>"));  // the same recipient
    notifier.notify(virus_notice("other@example.org"));     // its own budget
    EXPECT_EQ(notifier.counters().queued, 3u);
    EXPECT_EQ(notifier.counters().rate_limited, 2u);

    seconds += 29;  // 59 s after the first
    notifier.notify(virus_notice("sender@example.org"));
    EXPECT_EQ(notifier.counters().rate_limited, 3u);
    seconds += 1;  // the first is 60 s old: one slot again, not two
    notifier.notify(virus_notice("sender@example.org"));
    notifier.notify(virus_notice("sender@example.org"));
    EXPECT_EQ(notifier.counters().queued, 4u);
    EXPECT_EQ(notifier.counters().rate_limited, 4u);

    ASSERT_TRUE(notifier.wait_idle(20s));
    EXPECT_EQ(notifier.counters().failed, 4u);
    EXPECT_EQ(notifier.counters().sent, 0u);
}

TEST(Notifier, RelayDownIsCountedAsFailed) {
    uint16_t port = 0;
    { Fd closed = listen_loopback(port); }  // a port nothing listens on now
    Notifier notifier(config_for("127.0.0.1:" + std::to_string(port)));

    notifier.notify(virus_notice("sender@example.org"));

    ASSERT_TRUE(notifier.wait_idle(20s));
    EXPECT_EQ(notifier.counters().failed, 1u);
    EXPECT_EQ(notifier.counters().sent, 0u);
}

TEST(Notifier, RelayRefusingTheMessageIsCountedAsFailed) {
    FakeRelay relay("554 5.7.1 no thanks");
    Notifier notifier(config_for(relay.relay()));

    notifier.notify(virus_notice("sender@example.org"));

    ASSERT_TRUE(notifier.wait_idle(20s));
    EXPECT_EQ(notifier.counters().failed, 1u);
    EXPECT_EQ(notifier.counters().sent, 0u);
}

TEST(Notifier, SilentRelayNeverBlocksTheCallerAndAFullQueueDrops) {
    // The kernel completes connections to it; nobody ever says 220.
    uint16_t port = 0;
    Fd silent = listen_loopback(port);
    Notifier::Options options;
    options.queue_capacity = 2;
    options.transfer_timeout = 60s;
    auto notifier =
        std::make_unique<Notifier>(config_for("127.0.0.1:" + std::to_string(port), 100), options);

    notifier->notify(virus_notice("r0@example.org"));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (notifier->queued() > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
    ASSERT_EQ(notifier->queued(), 0u) << "the worker never took the first notification";

    const auto start = std::chrono::steady_clock::now();
    for (int i = 1; i < 10; ++i)
        notifier->notify(virus_notice("r" + std::to_string(i) + "@example.org"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    EXPECT_EQ(notifier->counters().queued, 3u);
    EXPECT_EQ(notifier->counters().dropped, 7u);
    EXPECT_EQ(notifier->queued(), 2u);
    EXPECT_FALSE(notifier->wait_idle(100ms));

    // Stopping aborts the transfer under way instead of waiting it out.
    const auto stop = std::chrono::steady_clock::now();
    notifier.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - stop, 10s);
}

TEST(ComposeNotification, MultipartWithTheTextAndTheOriginalHeaders) {
    Notification n = virus_notice("sender@example.org");
    n.original_headers = "From: a@example.org\nSubject: hi\n\nthe body is not a header\n";
    const std::string m =
        compose_notification(n, "scanner@gw.example.net", "Sun, 06 Dec 2026 13:14:04 +0000",
                             "abc.nfqscan@gw.example.net");

    const size_t head_end = m.find("\r\n\r\n");
    ASSERT_NE(head_end, std::string::npos);
    const std::string head = m.substr(0, head_end + 2);
    EXPECT_EQ(head.rfind("From: <scanner@gw.example.net>\r\nTo: <sender@example.org>\r\n", 0), 0u)
        << head;
    EXPECT_NE(head.find("Date: Sun, 06 Dec 2026 13:14:04 +0000\r\n"), std::string::npos);
    EXPECT_NE(head.find("Message-ID: <abc.nfqscan@gw.example.net>\r\n"), std::string::npos);
    const size_t b = head.find("boundary=\"");
    ASSERT_NE(b, std::string::npos);
    const std::string boundary = head.substr(b + 10, head.find('"', b + 10) - b - 10);
    EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), std::count(m.begin(), m.end(), '\r'))
        << "every line ends in CRLF";
    EXPECT_NE(m.find("--" + boundary + "\r\nContent-Type: text/plain; charset=utf-8\r\n"),
              std::string::npos);
    EXPECT_NE(m.find("\r\n\r\nFrom: a@example.org\r\nSubject: hi\r\n--" + boundary + "--\r\n"),
              std::string::npos)
        << "the headers part ends at the original's empty line:\n"
        << m;
    EXPECT_EQ(m.find("the body is not a header"), std::string::npos);
    EXPECT_TRUE(m.ends_with("--" + boundary + "--\r\n"));
}

TEST(ComposeNotification, SubjectCannotInjectHeadersAndIsEncodedWhenNotAscii) {
    Notification n = virus_notice("sender@example.org");
    n.subject = "Virus\r\nBcc: victim@example.org";
    std::string m = compose_notification(n, "s@example.net", "d", "id@example.net");
    EXPECT_EQ(m.find("\r\nBcc:"), std::string::npos);
    EXPECT_NE(m.find("Subject: Virus  Bcc: victim@example.org\r\n"), std::string::npos);

    n.subject =
        "Virus gefunden in Ihrer Nachricht \xc3\xbc\xc3\xb6\xc3\xa4 "
        "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac";
    m = compose_notification(n, "s@example.net", "d", "id@example.net");
    const size_t s = m.find("Subject: =?UTF-8?B?");
    ASSERT_NE(s, std::string::npos) << m;
    const std::string subject = m.substr(s, m.find("\r\nDate:") - s);
    // Folded into encoded words of at most 75 characters each.
    EXPECT_NE(subject.find("?=\r\n =?UTF-8?B?"), std::string::npos) << subject;
    size_t start = subject.find("=?");
    while (start != std::string::npos) {
        const size_t end = subject.find("?=", start + 10);
        ASSERT_NE(end, std::string::npos);
        EXPECT_LE(end + 2 - start, 75u) << subject;
        start = subject.find("=?", end + 2);
    }
    EXPECT_TRUE(
        std::all_of(subject.begin(), subject.end(), [](unsigned char c) { return c < 0x80; }));
}

TEST(RelayAddress, ParsesNamesAndBothFamilies) {
    RelayAddress a = RelayAddress::parse("mail.example.org:25");
    EXPECT_EQ(a.host, "mail.example.org");
    EXPECT_EQ(a.port, 25);
    EXPECT_EQ(a.url(), "smtp://mail.example.org:25");
    a = RelayAddress::parse("[2001:db8::25]:2525");
    EXPECT_EQ(a.host, "2001:db8::25");
    EXPECT_EQ(a.url(), "smtp://[2001:db8::25]:2525");
    EXPECT_EQ(RelayAddress::parse("127.0.0.1:10025").port, 10025);
    EXPECT_TRUE(RelayAddress::parse("").host.empty());
    for (const char* bad : {"mail.example.org", "mail:0", "mail:65536", "mail:25x", ":25",
                            "[2001:db8::25]25", "[mail]:25", "2001:db8::25:25", "a b:25"})
        EXPECT_THROW(RelayAddress::parse(bad), std::invalid_argument) << bad;
}

// The envelope as given (null sender, every recipient), EHLO with the given
// name, the message unchanged once unstuffed.
TEST(SmtpSubmit, SendsTheEnvelopeAndTheMessage) {
    FakeRelay relay;
    const std::vector<std::string> recipients = {"b@example.org", "c@example.org"};
    const std::string message = "Subject: kept\r\n\r\n.a line with a dot\r\nbody\r\n";

    const std::string error = smtp_submit({.relay = relay.relay(),
                                           .helo_name = "nfqscan",
                                           .from = "",
                                           .recipients = recipients,
                                           .message = message});

    EXPECT_EQ(error, "");
    const auto messages = relay.messages();
    ASSERT_EQ(messages.size(), 1u);
    EXPECT_EQ(messages[0].ehlo, "nfqscan");
    EXPECT_EQ(messages[0].mail_from, "<>");
    EXPECT_EQ(messages[0].rcpt_to,
              (std::vector<std::string>{"<b@example.org>", "<c@example.org>"}));
    EXPECT_EQ(messages[0].data, message);
    EXPECT_NE(messages[0].wire.find("\r\n..a line with a dot\r\n"), std::string::npos);
}

// The texts the notifier logs and a release answers with.
TEST(SmtpSubmit, FailuresSayWhatFailed) {
    const std::vector<std::string> to = {"b@example.org"};
    EXPECT_EQ(smtp_submit({.relay = "",
                           .helo_name = "t",
                           .from = "a@example.org",
                           .recipients = to,
                           .message = "x\r\n"}),
              "no relay configured ([notify] relay)");
    EXPECT_NE(smtp_submit({.relay = "mail.example.org",
                           .helo_name = "t",
                           .from = "a@example.org",
                           .recipients = to,
                           .message = "x\r\n"})
                  .find("host:port"),
              std::string::npos);

    FakeRelay refusing("554 5.7.1 no thanks");
    const std::string refused = smtp_submit({.relay = refusing.relay(),
                                             .helo_name = "t",
                                             .from = "a@example.org",
                                             .recipients = to,
                                             .message = "x\r\n"});
    EXPECT_TRUE(refused.ends_with(" (last reply 554)")) << refused;
    EXPECT_TRUE(refusing.messages().empty());
}

// A set abort flag ends the transfer instead of the 60 s transfer timeout.
TEST(SmtpSubmit, AbortFlagEndsATransferUnderWay) {
    uint16_t port = 0;
    Fd silent = listen_loopback(port);  // connects, never says 220
    std::atomic<bool> abort{false};
    std::thread stopper([&] {
        std::this_thread::sleep_for(200ms);
        abort = true;
    });
    const std::vector<std::string> to = {"b@example.org"};
    const auto start = std::chrono::steady_clock::now();
    const std::string error = smtp_submit({.relay = "127.0.0.1:" + std::to_string(port),
                                           .helo_name = "t",
                                           .from = "a@example.org",
                                           .recipients = to,
                                           .message = "x\r\n",
                                           .transfer_timeout = 60s,
                                           .abort = &abort});
    stopper.join();
    EXPECT_NE(error, "");
    EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
}

}  // namespace
}  // namespace nfqscan
