// The SMTP inspector against a simulated wire: a client script, the
// inspector between, and a small SMTP server that answers what actually
// reaches it (so deferred DATA, swallowed replies and our own replies are
// checked from both peers' point of view). Bytes go in random pieces.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "../../../src/proto/mail/mail.h"
#include "../../../src/proto/smtp/smtp_inspector.h"
#include "nfqscan/inspector.h"
#include "wire.h"

namespace nfqscan {
namespace {

using namespace wiretest;

class FakeHost : public InspectorHost {
  public:
    struct Scan {
        uint64_t id;
        ObjectInfo info;
        std::string bytes;
    };
    Wire* wire = nullptr;
    ProtocolPolicy policy_;
    ScanLimits limits_;
    std::vector<Scan> scans;
    std::vector<std::string> records;  // "what action"
    int resets = 0;
    std::vector<ReleaseReason> releases;

    void scan(uint64_t id, const ObjectInfo& info,
              std::shared_ptr<const ObjectBuffer> bytes) override {
        scans.push_back({id, info, text_of(bytes->bytes())});
    }
    std::string record(const ObjectInfo&, const ScanVerdict& v, std::string_view action) override {
        records.push_back(
            (v.is_infected() ? v.detection.signature : std::string(scan_error_name(v.error))) +
            " " + std::string(action));
        return "ev-" + std::to_string(records.size());
    }
    std::string record_fallback(const ObjectInfo&, Category c, std::string_view,
                                std::string_view action) override {
        records.push_back(std::string(category_name(c)) + " " + std::string(action));
        return "ev-" + std::to_string(records.size());
    }
    // The spam engine's queries (policy_.spam_engine: one is configured).
    std::vector<std::pair<uint64_t, SpamQuery>> spam_checks;
    bool check_spam(uint64_t id, SpamQuery query) override {
        if (!policy_.spam_engine) return false;
        spam_checks.emplace_back(id, std::move(query));
        return true;
    }
    void send_and_close(Direction, std::span<const uint8_t>) override { ADD_FAILURE(); }
    void reset_both() override;
    void send(Direction d, std::span<const uint8_t> bytes) override;
    void redrive() override {
        if (resets > 0) ADD_FAILURE() << "redrive() after reset_both()";
        wire->want_redrive();
    }
    std::vector<Notification> notifications;
    void notify(Notification n) override { notifications.push_back(std::move(n)); }
    void note_allowlisted(const ObjectInfo&) override { ADD_FAILURE(); }
    void release(ReleaseReason reason) override { releases.push_back(reason); }
    const ProtocolPolicy& policy() const override { return policy_; }
    const MessageTemplates& messages() const override { return *MessageTemplates::builtin(); }
    std::string render_message(std::string_view name, const MessageFields& f) const override {
        return std::string(name) + ": " + f.detection + " in " + f.object + " from " + f.sender +
               " to " + f.recipients + " (" + f.action + ", " + f.event_id + ")\r\n";
    }
    const ScanLimits& limits() const override { return limits_; }
    MessageFields message_fields() const override { return {}; }
    uint64_t now_ms() const override { return 0; }
    void want_ticks(bool) override {}
};

void FakeHost::reset_both() {
    ++resets;
    wire->close();
}
void FakeHost::send(Direction d, std::span<const uint8_t> bytes) {
    wire->own(d, text_of(bytes));
}

// A small SMTP server: answers what reaches it through the wire.
class Server {
  public:
    std::vector<std::string> messages;  // delivered, as received (dot-stuffed form undone)
    std::vector<std::string> commands;
    bool chunking = true;
    size_t seen = 0;  // bytes of the wire's C2S output handled
    bool in_data = false;
    int rcpts = 0;
    std::string data;

    // Answers everything new; returns the replies.
    std::string answer(const std::string& input) {
        std::string out;
        while (seen < input.size()) {
            if (in_data) {
                size_t end = input.find("\r\n.\r\n", seen - std::min<size_t>(seen, 2));
                if (end == std::string::npos) return out;
                std::string raw = input.substr(seen, end + 2 - seen);
                mail::DotDecoder d;
                std::string msg;
                std::string wire_form = raw + ".\r\n";
                d.feed(bytes_of(wire_form), [&](std::span<const uint8_t> r) { msg += text_of(r); });
                messages.push_back(msg);
                seen = end + 5;
                in_data = false;
                rcpts = 0;
                out += "250 2.0.0 Ok: queued as X\r\n";
                continue;
            }
            size_t lf = input.find("\r\n", seen);
            if (lf == std::string::npos) return out;
            std::string line = input.substr(seen, lf - seen);
            seen = lf + 2;
            commands.push_back(line);
            // As Postfix reads a command: leading white space skipped, the
            // verb ends at white space of any kind.
            size_t first = line.find_first_not_of(" \t");
            std::string verb = first == std::string::npos ? "" : line.substr(first, 4);
            if (verb.size() == 4 && line.size() > first + 4 &&
                line.find_first_of(" \t", first) != first + 4)
                verb.clear();  // a longer word ("DATAX")
            if (verb == "EHLO")
                out += std::string("250-mx.lab.test\r\n250-PIPELINING\r\n") +
                       (chunking ? "250-CHUNKING\r\n" : "") +
                       "250-STARTTLS\r\n250-BINARYMIME\r\n250 8BITMIME\r\n";
            else if (verb == "MAIL")
                out += "250 2.1.0 Ok\r\n";
            else if (verb == "RCPT" && line.find("nobody") != std::string::npos)
                out += "550 5.1.1 unknown\r\n";
            else if (verb == "RCPT")
                out += (++rcpts, "250 2.1.5 Ok\r\n");
            else if (verb == "DATA" && rcpts == 0)
                out += "554 5.5.1 Error: no valid recipients\r\n";
            else if (verb == "DATA")
                out += (in_data = true, "354 End data with <CR><LF>.<CR><LF>\r\n");
            else if (verb == "RSET")
                out += (rcpts = 0, "250 2.0.0 Ok\r\n");
            else if (line == "STARTTLS")
                out += "220 2.0.0 Ready to start TLS\r\n";
            else if (verb == "QUIT")
                out += "221 2.0.0 Bye\r\n";
            else
                out += "502 5.5.2 Error: command not recognized\r\n";
        }
        return out;
    }
};

struct Session {
    FakeHost host;
    SmtpInspector inspector{host};
    Wire wire{inspector, host, 1u << 20};  // StreamLimits::max_pending
    Server server;
    std::mt19937 rng{3};

    Session() { from_server("220 mx.lab.test ESMTP\r\n"); }
    void from_server(const std::string& s) { wire.send(S2C, s, rng, 40); }
    // The client's bytes, then the server answers what reached it, until quiet.
    void client(const std::string& s) {
        wire.send(C2S, s, rng, 40);
        pump();
    }
    void pump() {
        for (int i = 0; i < 20; ++i) {
            std::string replies = server.answer(wire.dir(C2S).output);
            if (replies.empty()) return;
            from_server(replies);
        }
    }
    void verdict(size_t scan, const ScanVerdict& v) {
        inspector.on_verdict(host.scans.at(scan).id, v);
        wire.redrive();
        pump();
    }
    const std::string& to_client() { return wire.dir(S2C).output; }
    const std::string& to_server() { return wire.dir(C2S).output; }
};

const std::string kHello = "EHLO client.lab.test\r\n";
const std::string kEnvelope = "MAIL FROM:<alice@lab.test>\r\nRCPT TO:<bob@lab.test>\r\nDATA\r\n";

std::string attachment_message(const std::string& bad) {
    return "From: alice@lab.test\r\nTo: bob@lab.test\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n..a stuffed line\r\n"
           "--b\r\nContent-Type: application/octet-stream\r\n"
           "Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n" +
           bad +
           "\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
           "filename=\"good.txt\"\r\n\r\ngood part\r\n--b--\r\n";
}

TEST(SmtpInspector, CleanMessageIsDeliveredByteIdenticalAfterTheVerdict) {
    Session s;
    s.client(kHello + kEnvelope);  // pipelined
    EXPECT_EQ(s.to_client().find("CHUNKING"), std::string::npos) << s.to_client();
    EXPECT_EQ(s.to_client().find("BINARYMIME"), std::string::npos);
    EXPECT_NE(s.to_client().find("250 8BITMIME\r\n"), std::string::npos);
    EXPECT_NE(s.to_client().find("STARTTLS"), std::string::npos) << "starttls = allow";
    ASSERT_NE(s.to_client().find("354 "), std::string::npos) << "our 354";
    EXPECT_EQ(s.to_server().find("DATA"), std::string::npos) << "DATA is deferred";

    std::string body = attachment_message("harmless");
    s.client(body + ".\r\n");
    ASSERT_EQ(s.host.scans.size(), 1u);
    std::string unstuffed = body;
    unstuffed.replace(unstuffed.find("..a"), 2, ".");
    EXPECT_EQ(s.host.scans[0].bytes, unstuffed);
    EXPECT_TRUE(s.server.messages.empty()) << "nothing before the verdict";
    s.verdict(0, ScanVerdict::clean());
    s.client("QUIT\r\n");
    EXPECT_EQ(s.to_server(), kHello + kEnvelope + body + ".\r\nQUIT\r\n") << "byte-identical";
    ASSERT_EQ(s.server.messages.size(), 1u);
    // The client saw exactly one 354 (ours) and the server's 250 for the message.
    EXPECT_EQ(s.to_client().find("354"), s.to_client().rfind("354"));
    EXPECT_NE(s.to_client().find("250 2.0.0 Ok: queued"), std::string::npos);
    EXPECT_NE(s.to_client().find("221 2.0.0 Bye"), std::string::npos);
    EXPECT_TRUE(s.host.records.empty());
}

TEST(SmtpInspector, InfectedMessageIsReplacedWithItsHeaderAndTheInfectedPartNamed) {
    Session s;
    s.client(kHello + kEnvelope);
    s.client(attachment_message(kEicar) + ".\r\n");
    s.verdict(0, virus());
    // Each part is scanned on its own, to name the infected one.
    ASSERT_EQ(s.host.scans.size(), 4u);
    s.verdict(1, ScanVerdict::clean());
    s.verdict(2, virus());
    EXPECT_TRUE(s.server.messages.empty());
    s.verdict(3, ScanVerdict::clean());
    ASSERT_EQ(s.server.messages.size(), 1u);
    const std::string& m = s.server.messages[0];
    EXPECT_EQ(m.find("EICAR"), std::string::npos) << m;
    EXPECT_NE(m.find("X-Nfqscan-Virus: Eicar-Test-Signature"), std::string::npos) << m;
    EXPECT_NE(m.find("Subject: files"), std::string::npos);
    EXPECT_NE(m.find("mail-virus-notice: Eicar-Test-Signature in eicar.com from "
                     "<alice@lab.test> to <bob@lab.test> (replace, ev-1)"),
              std::string::npos)
        << m;
    EXPECT_EQ(s.host.records, std::vector<std::string>{"Eicar-Test-Signature replace"});
    EXPECT_NE(s.to_client().find("250 2.0.0 Ok: queued"), std::string::npos);
    EXPECT_EQ(s.inspector.counters().rewritten, 1u);
}

TEST(SmtpInspector, StripKeepsTheCleanParts) {
    Session s;
    s.host.policy_.mail_on_virus = MailBlock::Strip;
    s.client(kHello + kEnvelope + attachment_message(kEicar) + ".\r\n");
    s.verdict(0, virus());
    s.verdict(1, ScanVerdict::clean());
    s.verdict(2, virus());
    s.verdict(3, ScanVerdict::clean());
    ASSERT_EQ(s.server.messages.size(), 1u);
    auto parts = mail::parts(bytes_of(s.server.messages[0]));
    ASSERT_EQ(parts.size(), 3u);
    EXPECT_EQ(text_of(parts[0].content), "see attached\r\n.a stuffed line");
    EXPECT_NE(text_of(parts[1].content).find("in eicar.com"), std::string::npos);
    EXPECT_EQ(text_of(parts[2].content), "good part");
    EXPECT_EQ(s.server.messages[0].find("EICAR"), std::string::npos);
}

TEST(SmtpInspector, RejectLeavesNothingAtTheServerAndTheSessionGoesOn) {
    Session s;
    s.host.policy_.mail_on_virus = MailBlock::Reject;
    s.client(kHello + kEnvelope);
    s.client("Subject: x\r\n\r\n" + kEicar + "\r\n.\r\n");
    s.verdict(0, virus());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_NE(s.to_client().find("550 5.7.1 Message rejected by nfqscan: Eicar-Test-Signature "
                                 "found (event ev-1)\r\n"),
              std::string::npos)
        << s.to_client();
    EXPECT_EQ(s.to_server().find("DATA"), std::string::npos) << "the server never entered DATA";
    EXPECT_NE(s.to_server().find("RSET\r\n"), std::string::npos);
    // The next transaction, in the same session, without RSET from the client.
    size_t before = s.to_client().size();
    s.client(kEnvelope);
    s.client("Subject: fine\r\n\r\nclean\r\n.\r\n");
    s.verdict(1, ScanVerdict::clean());
    ASSERT_EQ(s.server.messages.size(), 1u);
    EXPECT_EQ(s.server.messages[0], "Subject: fine\r\n\r\nclean\r\n");
    std::string later = s.to_client().substr(before);
    EXPECT_EQ(later,
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Ok: queued as X\r\n")
        << "the swallowed RSET reply never reached the client";
}

TEST(SmtpInspector, SenderIsNotifiedWhenAsked) {
    Session s;
    s.host.policy_.mail_on_virus = MailBlock::Reject;
    s.host.policy_.notify_sender_on_virus = true;
    s.client(kHello + kEnvelope + "Subject: x\r\nX-Trace: 1\r\n\r\n" + kEicar + "\r\n.\r\n");
    s.verdict(0, virus());
    ASSERT_EQ(s.host.notifications.size(), 1u);
    const Notification& n = s.host.notifications[0];
    EXPECT_EQ(n.recipient, "alice@lab.test");
    EXPECT_EQ(n.original_headers, "Subject: x\r\nX-Trace: 1\r\n");
    EXPECT_NE(n.text.find("<bob@lab.test>"), std::string::npos) << n.text;
    EXPECT_NE(n.subject.find("Eicar-Test-Signature"), std::string::npos);
    // Not asked: nobody is told.
    Session quiet;
    quiet.host.policy_.mail_on_virus = MailBlock::Reject;
    quiet.client(kHello + kEnvelope + "Subject: x\r\n\r\n" + kEicar + "\r\n.\r\n");
    quiet.verdict(0, virus());
    EXPECT_TRUE(quiet.host.notifications.empty());
}

TEST(SmtpInspector, DropAnswers250AndDeliversNothing) {
    Session s;
    s.host.policy_.mail_on_virus = MailBlock::Drop;
    s.client(kHello + kEnvelope + "Subject: x\r\n\r\n" + kEicar + "\r\n.\r\nQUIT\r\n");
    s.verdict(0, virus());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_NE(s.to_client().find("250 2.0.0 Ok: message dropped by nfqscan"), std::string::npos);
    EXPECT_NE(s.to_client().find("221 2.0.0 Bye"), std::string::npos) << "QUIT went on";
}

TEST(SmtpInspector, ErrorThatPassesIsTaggedWhenAsked) {
    Session s;
    s.host.policy_.notify_recipient_on_error_pass = true;
    s.client(kHello + kEnvelope + "Subject: report\r\n\r\nbody\r\n.\r\n");
    s.verdict(0, ScanVerdict::failed(ScanError::Timeout, "slow"));
    ASSERT_EQ(s.server.messages.size(), 1u);
    EXPECT_EQ(mail::summarize(bytes_of(s.server.messages[0])).subject, "***UNCHECKED*** report");
    EXPECT_EQ(s.host.records, std::vector<std::string>{"timeout pass"});
}

TEST(SmtpInspector, MessageOverTheLimitFallsBack) {
    for (bool block : {false, true}) {
        Session s;
        s.host.limits_.max_content_size = 1000;
        if (block) s.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
        std::string big = "Subject: big\r\n\r\n";
        while (big.size() < 5000)
            big += "line of text " + std::to_string(big.size()) + "\r\n";
        s.client(kHello + kEnvelope);
        s.client(big + ".\r\n");
        EXPECT_TRUE(s.host.scans.empty());
        ASSERT_EQ(s.server.messages.size(), 1u)
            << block << s.to_server().substr(0, 300) << "\n---\n"
            << s.to_client();
        if (block) {
            EXPECT_NE(s.server.messages[0].find("X-Nfqscan-Error: content-size"),
                      std::string::npos);
            EXPECT_EQ(s.server.messages[0].find("line of text 4"), std::string::npos);
            EXPECT_EQ(s.host.records, std::vector<std::string>{"content-size replace"});
        } else {
            EXPECT_EQ(s.server.messages[0], big);
            EXPECT_EQ(s.host.records, std::vector<std::string>{"content-size pass"});
        }
    }
}

TEST(SmtpInspector, MessageOverTheLimitPassedIsTaggedWhenAsked) {
    Session s;
    s.host.limits_.max_content_size = 1000;
    s.host.policy_.notify_recipient_on_error_pass = true;
    std::string body;
    while (body.size() < 5000)
        body += "line of text " + std::to_string(body.size()) + "\r\n";
    s.client(kHello + kEnvelope);
    s.client("Subject: =?utf-8?q?gro=C3=9F?=\r\nFrom: a@lab.test\r\n\r\n" + body + ".\r\n");
    ASSERT_EQ(s.server.messages.size(), 1u);
    const std::string& m = s.server.messages[0];
    EXPECT_EQ(mail::summarize(bytes_of(m)).subject, "***UNCHECKED*** groß");
    EXPECT_NE(m.find("X-Nfqscan-Error: content-size"), std::string::npos);
    EXPECT_TRUE(m.ends_with("\r\n\r\n" + body)) << "the body streams on unchanged";
}

TEST(SmtpInspector, NoValidRecipientLetsTheServerRefuseData) {
    Session s;
    s.client(kHello + "MAIL FROM:<a@lab.test>\r\nRCPT TO:<nobody@lab.test>\r\nDATA\r\n");
    EXPECT_NE(s.to_client().find("554 5.5.1"), std::string::npos);
    EXPECT_EQ(s.to_client().find("354"), std::string::npos);
    EXPECT_TRUE(s.host.scans.empty());
}

TEST(SmtpInspector, BdatAndSmugglingAreProtocolErrors) {
    for (std::string attack :
         {std::string("BDAT 10 LAST\r\n0123456789"),
          std::string("DATA\r\nSubject: a\r\n\r\nx\n.\nMAIL FROM:<e@x>\r\n")}) {
        Session s;
        s.client(kHello + "MAIL FROM:<a@lab.test>\r\nRCPT TO:<b@lab.test>\r\n");
        s.client(attack);
        EXPECT_EQ(s.host.resets, 1) << attack;
        EXPECT_EQ(s.host.records, std::vector<std::string>{"protocol-error reset"});
        EXPECT_TRUE(s.server.messages.empty());
    }
}

TEST(SmtpInspector, SmugglingIsResetEvenWhenProtocolErrorsPass) {
    Session s;
    s.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    s.client(kHello + kEnvelope);
    s.client("Subject: a\r\n\r\nx\n.\nMAIL FROM:<e@x>\r\n");
    EXPECT_EQ(s.host.resets, 1);
    EXPECT_TRUE(s.host.releases.empty());
    EXPECT_TRUE(s.server.messages.empty());
}

TEST(SmtpInspector, StarttlsStrippedAndRefused) {
    Session s;
    s.host.policy_.starttls = StartTls::Strip;
    s.client(kHello);
    EXPECT_EQ(s.to_client().find("STARTTLS"), std::string::npos);
    s.client("STARTTLS\r\n");
    EXPECT_NE(s.to_client().find("454 4.7.0"), std::string::npos);
    EXPECT_EQ(s.to_server().find("STARTTLS"), std::string::npos);
    EXPECT_TRUE(s.host.releases.empty());
}

TEST(SmtpInspector, StarttlsAllowedReleasesTheFlow) {
    Session s;
    s.client(kHello);
    s.client("STARTTLS\r\n");
    EXPECT_EQ(s.host.releases, std::vector<ReleaseReason>{ReleaseReason::Tls});
}

TEST(SmtpInspector, ClientLeavingInsideTheMessageDeliversNothing) {
    Session s;
    s.client(kHello + kEnvelope + "Subject: x\r\n\r\nhalf a mess");
    s.wire.deliver(C2S, "", true);
    s.pump();
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_EQ(s.to_server().find("DATA"), std::string::npos);
    EXPECT_EQ(s.inspector.counters().aborted, 1u);
}

TEST(SmtpInspector, MessageSentAheadOfTheRepliesWaitsEvenAtTheClientsFin) {
    // The client sends its whole session at once and half-closes before the
    // server said a word: the DATA (and the message after it) can only be
    // framed once MAIL's and RCPT's replies are in, and the FIN must not
    // make the engine pass them on unparsed.
    Session s;
    s.host.policy_.mail_on_virus = MailBlock::Reject;
    s.wire.deliver(C2S, kHello + kEnvelope + "Subject: x\r\n\r\n" + kEicar + "\r\n.\r\nQUIT\r\n",
                   true);
    EXPECT_EQ(s.to_server().find("DATA"), std::string::npos) << s.to_server();
    s.pump();
    ASSERT_EQ(s.host.scans.size(), 1u) << s.to_server();
    s.verdict(0, virus());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_EQ(s.to_server().find("EICAR"), std::string::npos) << s.to_server();
    EXPECT_NE(s.to_client().find("550 5.7.1"), std::string::npos) << s.to_client();
    EXPECT_NE(s.to_client().find("221 2.0.0 Bye"), std::string::npos) << s.to_client();
}

TEST(SmtpInspector, CommandsBeyondThePendingLimitWaitForTheirReplies) {
    // The same without the FIN: the engine passes the oldest bytes beyond
    // its pending limit, unless the inspector relays them.
    Session s;
    s.wire.set_pending_limit(256);
    s.host.policy_.mail_on_virus = MailBlock::Reject;
    std::string body = "Subject: x\r\n\r\n" + kEicar + "\r\n";
    while (body.size() < 2000)
        body += "filler line\r\n";
    s.wire.deliver(C2S, kHello + kEnvelope + body + ".\r\n");
    EXPECT_EQ(s.to_server().find("DATA"), std::string::npos) << s.to_server();
    s.pump();
    ASSERT_EQ(s.host.scans.size(), 1u);
    s.verdict(0, virus());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_EQ(s.to_server().find("EICAR"), std::string::npos);
}

TEST(SmtpInspector, NothingIsAskedOfTheHostAfterAReplyResetsTheSession) {
    Session s;
    s.client(kHello);
    // DATA without a transaction goes to the server; the line after it
    // waits for its reply, which is a 354 nfqscand cannot account for.
    s.wire.send(C2S, "DATA\r\nNOOP\r\n", s.rng, 40);
    s.from_server("354 End data with <CR><LF>.<CR><LF>\r\n");
    EXPECT_EQ(s.host.resets, 1);
    EXPECT_EQ(s.host.records, std::vector<std::string>{"protocol-error reset"});
}

TEST(SmtpInspector, CommandVerbsAreReadAsTheServerReadsThem) {
    // White space the server skips or splits at must not hide a DATA (its
    // message would pass unscanned) or a BDAT from the inspector.
    for (std::string data : {"DATA\t\r\n", " DATA\r\n", "\tdata \r\n"}) {
        Session s;
        s.host.policy_.mail_on_virus = MailBlock::Reject;
        s.client(kHello + "MAIL FROM:<a@lab.test>\r\nRCPT TO:<b@lab.test>\r\n" + data);
        s.client("Subject: x\r\n\r\n" + kEicar + "\r\n.\r\n");
        ASSERT_EQ(s.host.scans.size(), 1u) << data;
        s.verdict(0, virus());
        EXPECT_TRUE(s.server.messages.empty()) << data;
        EXPECT_EQ(s.to_server().find("EICAR"), std::string::npos) << data;
    }
    for (std::string bdat : {"BDAT\t10 LAST\r\n0123456789", " BDAT 10 LAST\r\n0123456789"}) {
        Session s;
        s.client(kHello + "MAIL FROM:<a@lab.test>\r\nRCPT TO:<b@lab.test>\r\n" + bdat);
        EXPECT_EQ(s.host.resets, 1) << bdat;
    }
}

TEST(SmtpInspector, MalformedReplyWhileAMessageIsHeldEndsTheSession) {
    // With the fallback pass, a protocol error releases the flow: every
    // byte passes from then on. A message held for its verdict would go to
    // the server unjudged, so a server breaking the framing then ends the
    // session instead.
    Session s;
    s.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    s.client(kHello + kEnvelope + "Subject: x\r\n\r\n" + kEicar + "\r\n.\r\n");
    ASSERT_EQ(s.host.scans.size(), 1u);
    s.from_server("garbage\r\n");
    EXPECT_EQ(s.host.resets, 1);
    EXPECT_TRUE(s.host.releases.empty());
    EXPECT_EQ(s.to_server().find("EICAR"), std::string::npos);
    EXPECT_EQ(s.host.records, std::vector<std::string>{"protocol-error reset"});

    // With no message held, the fallback applies as configured.
    Session idle;
    idle.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    idle.client(kHello + "NOOP\r\n");
    idle.from_server("garbage\r\n");
    EXPECT_EQ(idle.host.resets, 0);
    EXPECT_EQ(idle.host.releases, std::vector<ReleaseReason>{ReleaseReason::NotProtocol});
}

TEST(SmtpInspector, EhloReplyLinesOfJustTheCode) {
    // "250" alone is a valid (last) reply line: the EHLO filter read past
    // its end and threw std::out_of_range out of the packet path.
    for (std::string reply : {"250\r\n", "250-mx.lab.test\r\n250-CHUNKING\r\n250\r\n"}) {
        Session s;
        s.wire.send(C2S, kHello, s.rng, 40);
        s.from_server(reply);
        std::string expected = reply == "250\r\n" ? reply : "250-mx.lab.test\r\n250\r\n";
        EXPECT_EQ(s.to_client(), "220 mx.lab.test ESMTP\r\n" + expected);
    }
}

TEST(SmtpInspector, TwoMessagesInOneSession) {
    Session s;
    s.client(kHello + kEnvelope + "Subject: one\r\n\r\n1\r\n.\r\n");
    s.verdict(0, ScanVerdict::clean());
    s.client(kEnvelope + "Subject: two\r\n\r\n" + kEicar + "\r\n.\r\n");
    s.verdict(1, virus());
    ASSERT_EQ(s.server.messages.size(), 2u);
    EXPECT_EQ(s.server.messages[0], "Subject: one\r\n\r\n1\r\n");
    EXPECT_EQ(s.server.messages[1].find("EICAR"), std::string::npos);
}

// -- Spam (issue 11) --------------------------------------------------------

ScanVerdict yara_spam() {
    return spam_verdict();
}

ScanVerdict rspamd_spam(double score) {
    return spam_verdict(ScanEngineKind::Rspamd, "rspamd: reject", "GTUBE(0.00)", score);
}

const std::string kSpamMessage = "From: alice@lab.test\r\nSubject: offer\r\n\r\nbuy now\r\n";

TEST(SmtpSpam, TagIsTheDefault) {
    Session s;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, yara_spam());
    ASSERT_EQ(s.server.messages.size(), 1u);
    const std::string& m = s.server.messages[0];
    EXPECT_EQ(mail::summarize(bytes_of(m)).subject, "[SPAM] offer");
    EXPECT_NE(m.find("X-Spam-Flag: YES"), std::string::npos) << m;
    EXPECT_NE(m.find("X-Spam-Report: yara: NfqScan_Test_Spam_Marker"), std::string::npos) << m;
    EXPECT_EQ(s.host.records, std::vector<std::string>{"NfqScan_Test_Spam_Marker tag"});
    EXPECT_NE(s.to_client().find("250 2.0.0 Ok: queued"), std::string::npos);
}

TEST(SmtpSpam, AcceptDeliversTheMessageAsSent) {
    Session s;
    s.host.policy_.on_spam = SpamAction::Accept;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, yara_spam());
    ASSERT_EQ(s.server.messages.size(), 1u);
    EXPECT_EQ(s.server.messages[0], kSpamMessage);
    EXPECT_EQ(s.host.records, std::vector<std::string>{"NfqScan_Test_Spam_Marker accept"});
}

TEST(SmtpSpam, RejectAnswers550AndDeliversNothing) {
    Session s;
    s.host.policy_.on_spam = SpamAction::Reject;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\nQUIT\r\n");
    s.verdict(0, yara_spam());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_NE(s.to_client().find("550 5.7.1 Message rejected by nfqscan: spam: "
                                 "NfqScan_Test_Spam_Marker (event ev-1)\r\n"),
              std::string::npos)
        << s.to_client();
    EXPECT_EQ(s.to_server().find("DATA"), std::string::npos);
    EXPECT_NE(s.to_client().find("221 2.0.0 Bye"), std::string::npos);
    EXPECT_EQ(s.inspector.counters().rejected, 1u);
}

TEST(SmtpSpam, DropAnswers250AndDeliversNothing) {
    Session s;
    s.host.policy_.on_spam = SpamAction::Drop;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, yara_spam());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_NE(s.to_client().find("250 2.0.0 Ok: message dropped by nfqscan: spam"),
              std::string::npos);
    EXPECT_EQ(s.host.records, std::vector<std::string>{"NfqScan_Test_Spam_Marker drop"});
}

// The client pipelines its whole session; the RCPT commands reached the
// server long before the verdict. Forward begins the server's transaction
// anew for spam_forward_to, each command after the previous reply, and the
// client sees none of those replies.
TEST(SmtpSpam, ForwardRewritesTheRecipientsUnderPipelining) {
    Session s;
    s.host.policy_.on_spam = SpamAction::Forward;
    s.host.policy_.spam_forward_to = "<spam@lab.test>";
    s.client(kHello +
             "MAIL FROM:<alice@lab.test>\r\nRCPT TO:<bob@lab.test>\r\nRCPT TO:<carol@lab.test>\r\n"
             "DATA\r\n" +
             kSpamMessage + ".\r\nQUIT\r\n");
    ASSERT_EQ(s.host.scans.size(), 1u);
    const size_t commands_before = s.server.commands.size();
    s.verdict(0, yara_spam());
    ASSERT_EQ(s.server.messages.size(), 1u);
    const std::vector<std::string> after(s.server.commands.begin() + long(commands_before),
                                         s.server.commands.end());
    EXPECT_EQ(after, (std::vector<std::string>{"RSET", "MAIL FROM:<alice@lab.test>",
                                               "RCPT TO:<spam@lab.test>", "DATA", "QUIT"}));
    const std::string& m = s.server.messages[0];
    EXPECT_NE(m.find("X-Nfqscan-Original-Recipients: <bob@lab.test>, <carol@lab.test>"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("X-Spam-Flag: YES"), std::string::npos);
    EXPECT_EQ(mail::summarize(bytes_of(m)).subject, "offer") << "forwarded, not tagged";
    // The client: its own replies only, one 354 (ours), the message's 250.
    EXPECT_EQ(s.to_client().find("250 2.0.0 Ok\r\n"), std::string::npos) << "RSET reply swallowed";
    EXPECT_EQ(s.to_client().find("354"), s.to_client().rfind("354"));
    EXPECT_NE(s.to_client().find("250 2.0.0 Ok: queued as X\r\n221 2.0.0 Bye"), std::string::npos)
        << s.to_client();
    EXPECT_EQ(s.inspector.counters().forwarded, 1u);
    EXPECT_EQ(s.host.records, std::vector<std::string>{"NfqScan_Test_Spam_Marker forward"});
}

TEST(SmtpSpam, ForwardRefusedByTheServerDeliversNothing) {
    Session s;
    s.host.policy_.on_spam = SpamAction::Forward;
    s.host.policy_.spam_forward_to = "<nobody@lab.test>";  // the server refuses it
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, yara_spam());
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_NE(s.to_client().find("550 5.1.1 unknown\r\n"), std::string::npos)
        << "the refusal answers the client's message: " << s.to_client();
    EXPECT_EQ(s.server.commands.back(), "RSET") << "the half-begun transaction ends";
    const size_t replies = s.to_client().size();
    s.client(kEnvelope + "Subject: fine\r\n\r\nclean\r\n.\r\n");
    s.verdict(1, ScanVerdict::clean());
    ASSERT_EQ(s.server.messages.size(), 1u) << "the session stayed in step";
    EXPECT_EQ(s.to_client().substr(replies),
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Ok: queued as X\r\n")
        << "the swallowed RSET reply never reached the client";
}

TEST(SmtpSpam, EngineIsAskedWithTheEnvelopeAndItsScoreTagged) {
    Session s;
    s.host.policy_.spam_engine = true;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, ScanVerdict::clean());
    ASSERT_EQ(s.host.spam_checks.size(), 1u);
    EXPECT_TRUE(s.server.messages.empty()) << "nothing before the engine's verdict";
    const SpamQuery& q = s.host.spam_checks[0].second;
    EXPECT_EQ(q.from, "<alice@lab.test>");
    EXPECT_EQ(q.rcpts, std::vector<std::string>{"<bob@lab.test>"});
    EXPECT_EQ(q.helo, "client.lab.test");
    ASSERT_TRUE(q.message);
    EXPECT_EQ(text_of(q.message->bytes()), kSpamMessage);
    s.inspector.on_verdict(s.host.spam_checks[0].first, rspamd_spam(1006.5));
    s.wire.redrive();
    s.pump();
    ASSERT_EQ(s.server.messages.size(), 1u);
    const std::string& m = s.server.messages[0];
    EXPECT_NE(m.find("X-Spam-Score: 1006.50"), std::string::npos) << m;
    EXPECT_NE(m.find("X-Spam-Report: rspamd: reject; GTUBE(0.00)"), std::string::npos) << m;
    EXPECT_EQ(s.host.records, std::vector<std::string>{"rspamd: reject tag"});
}

TEST(SmtpSpam, EngineDownFallsBackToPass) {
    Session s;
    s.host.policy_.spam_engine = true;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, ScanVerdict::clean());
    ASSERT_EQ(s.host.spam_checks.size(), 1u);
    s.inspector.on_verdict(
        s.host.spam_checks[0].first,
        ScanVerdict::failed(ScanError::EngineNotReady, "rspamd: Couldn't connect to server"));
    s.wire.redrive();
    s.pump();
    ASSERT_EQ(s.server.messages.size(), 1u);
    EXPECT_EQ(s.server.messages[0], kSpamMessage);
    EXPECT_EQ(s.host.records, std::vector<std::string>{"engine-not-ready pass"});
}

TEST(SmtpSpam, EngineTimeoutThatBlocksIsHandledAsSpam) {
    Session s;
    s.host.policy_.spam_engine = true;
    s.host.policy_.on_spam = SpamAction::Reject;
    s.host.policy_.fallback[size_t(Category::Timeout)] = Action::Block;
    s.client(kHello + kEnvelope + kSpamMessage + ".\r\n");
    s.verdict(0, ScanVerdict::clean());
    s.inspector.on_verdict(s.host.spam_checks.at(0).first,
                           ScanVerdict::failed(ScanError::Timeout, "rspamd: slow"));
    s.wire.redrive();
    s.pump();
    EXPECT_TRUE(s.server.messages.empty());
    EXPECT_NE(s.to_client().find("550 5.7.1"), std::string::npos);
}

TEST(SmtpSpam, VirusOutranksSpamAndTheEngineIsNotAsked) {
    Session s;
    s.host.policy_.spam_engine = true;
    s.host.policy_.on_spam = SpamAction::Accept;
    s.client(kHello + kEnvelope + "Subject: x\r\n\r\n" + kEicar + "\r\n.\r\n");
    s.verdict(0, virus());
    EXPECT_TRUE(s.host.spam_checks.empty());
    ASSERT_EQ(s.server.messages.size(), 1u);
    EXPECT_EQ(s.server.messages[0].find("EICAR"), std::string::npos) << "replaced as infected";
}

}  // namespace
}  // namespace nfqscan
