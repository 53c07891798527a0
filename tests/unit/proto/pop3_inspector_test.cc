// The POP3 inspector on a simulated wire (mail_wire.h): what the client and
// the server receive, and what is scanned, with both peers' bytes in random
// pieces.
#include "../../../src/proto/pop3/pop3_inspector.h"

#include <gtest/gtest.h>

#include "../../../src/proto/mail/mail.h"
#include "mail_wire.h"

namespace nfqscan {
namespace {

using namespace mailtest;
using Flow = MailFlow<Pop3Inspector>;

const std::string kGreeting = "+OK Dovecot ready.\r\n";

std::string clean_message(const std::string& subject = "hello", size_t body_lines = 3) {
    std::string m =
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: " + subject +
        "\r\nMessage-ID: <1@example.org>\r\n\r\n";
    for (size_t i = 0; i < body_lines; ++i)
        m += "line " + std::to_string(i) + "\r\n";
    m += ".a line that starts with a dot\r\n";
    return m;
}

std::string infected_message() {
    return "From: Mallory <mallory@example.org>\r\nTo: bob@example.org\r\nSubject: invoice\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
           "--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
           "--b1\r\nContent-Type: application/octet-stream\r\n"
           "Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n" +
           kEicar + "\r\n--b1--\r\n";
}

std::string retr_response(const std::string& message) {
    return "+OK " + std::to_string(message.size()) + " octets\r\n" + mail::dot_stuff(message);
}

// A logged-in session: greeting, USER, PASS.
void login(Flow& f) {
    f.server(kGreeting);
    f.client("USER bob\r\n");
    f.server("+OK\r\n");
    f.client("PASS secret\r\n");
    f.server("+OK Logged in.\r\n");
}

// What a POP3 client makes of a RETR response: the message, dot-unstuffed.
std::string message_in(const std::string& response) {
    size_t body = response.find("\r\n") + 2;
    std::string out;
    mail::DotDecoder d;
    std::string tail = response.substr(body);
    d.feed(bytes_of(tail), [&](std::span<const uint8_t> b) { out += text_of(b); });
    EXPECT_TRUE(d.done()) << response;
    return out;
}

TEST(Pop3Inspector, CleanMessagesPassByteIdenticalAndAreScannedUnstuffed) {
    Flow f;
    login(f);
    std::string m = clean_message();
    f.client("RETR 1\r\n");
    f.server(retr_response(m));
    // Held whole until the verdict.
    EXPECT_EQ(f.wire.out(S2C), kGreeting + "+OK\r\n+OK Logged in.\r\n");
    ASSERT_EQ(f.host.scans.size(), 1u);
    EXPECT_EQ(f.host.scans[0].bytes, m);
    EXPECT_EQ(f.host.scans[0].info.name, "RETR 1");
    EXPECT_EQ(f.host.scans[0].info.protocol, Service::Pop3);
    f.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(f.wire.out(S2C), kGreeting + "+OK\r\n+OK Logged in.\r\n" + retr_response(m));
    f.client("QUIT\r\n");
    f.server("+OK Logging out.\r\n");
    EXPECT_EQ(f.wire.out(C2S), "USER bob\r\nPASS secret\r\nRETR 1\r\nQUIT\r\n");
    EXPECT_TRUE(f.host.records.empty());
    EXPECT_TRUE(f.host.fallbacks.empty());
    EXPECT_EQ(f.inspector->counters().messages_scanned, 1u);
}

TEST(Pop3Inspector, InfectedMessageIsReplacedAndTheNextOneArrivesIntact) {
    for (unsigned seed = 1; seed <= 20; ++seed) {
        Flow f;
        f.rng.seed(seed);
        login(f);
        std::string bad = infected_message(), good = clean_message("next");
        // Pipelined: both RETRs and a LIST in one go (RFC 2449).
        f.client("RETR 1\r\nRETR 2\r\nLIST\r\n");
        f.server(retr_response(bad) + retr_response(good) +
                 "+OK 2 messages\r\n1 100\r\n2 50\r\n.\r\n");
        ASSERT_EQ(f.host.scans.size(), 1u) << "the second waits for the first's verdict";
        f.answer_all();
        ASSERT_EQ(f.unanswered(), 0u);
        const std::string& out = f.wire.out(S2C);
        std::string prefix = kGreeting + "+OK\r\n+OK Logged in.\r\n";
        ASSERT_TRUE(out.starts_with(prefix));
        std::string rest = out.substr(prefix.size());
        // The replaced message: "+OK <its size> octets", dot-stuffed, whole.
        size_t good_at = rest.find(retr_response(good));
        ASSERT_NE(good_at, std::string::npos) << "seed " << seed << ": " << rest;
        std::string replaced = rest.substr(0, good_at);
        std::string message = message_in(replaced);
        EXPECT_EQ(replaced.substr(0, replaced.find("\r\n")),
                  "+OK " + std::to_string(message.size()) + " octets");
        EXPECT_EQ(message.find("EICAR"), std::string::npos);
        EXPECT_NE(message.find("Subject: invoice"), std::string::npos) << message;
        EXPECT_NE(message.find("mail-virus-notice: detection=Eicar-Test-Signature"),
                  std::string::npos)
            << message;
        EXPECT_NE(message.find("object=eicar.com"), std::string::npos) << message;
        EXPECT_NE(message.find("sender=Mallory <mallory@example.org>"), std::string::npos)
            << message;
        EXPECT_NE(message.find("X-Nfqscan-Virus: Eicar-Test-Signature"), std::string::npos);
        EXPECT_EQ(rest.substr(good_at),
                  retr_response(good) + "+OK 2 messages\r\n1 100\r\n2 50\r\n.\r\n");
        ASSERT_EQ(f.host.records.size(), 1u);
        EXPECT_EQ(f.host.records[0].action, "replace");
        EXPECT_EQ(f.host.records[0].info.name, "RETR 1");
        EXPECT_EQ(f.inspector->counters().messages_blocked, 1u);
    }
}

TEST(Pop3Inspector, StripKeepsTheCleanPartsAsSent) {
    Flow f;
    f.host.policy_.mail_on_virus = MailBlock::Strip;
    login(f);
    f.client("RETR 1\r\n");
    f.server(retr_response(infected_message()));
    f.answer_all();
    std::string out = f.wire.out(S2C);
    std::string message = message_in(out.substr(out.find("+OK Logged in.\r\n") + 16));
    EXPECT_EQ(message.find("EICAR"), std::string::npos);
    EXPECT_NE(message.find("See the attachment."), std::string::npos) << message;
    EXPECT_NE(message.find("action=strip"), std::string::npos) << message;
    ASSERT_EQ(f.host.records.size(), 1u);
    EXPECT_EQ(f.host.records[0].action, "strip");
}

TEST(Pop3Inspector, ErrAndSingleLineAnswersPassAndTopIsAnObject) {
    Flow f;
    login(f);
    f.client("RETR 9\r\n");
    f.server("-ERR There's no message 9.\r\n");
    EXPECT_TRUE(f.wire.out(S2C).ends_with("-ERR There's no message 9.\r\n"));
    EXPECT_FALSE(f.wire.dir(S2C).relay);
    f.client("LIST 1\r\nSTAT\r\nUIDL\r\nTOP 1 0\r\n");
    std::string head = "Subject: x\r\n\r\n";
    f.server("+OK 1 120\r\n+OK 1 120\r\n+OK\r\n1 000000017\r\n.\r\n" + retr_response(head));
    ASSERT_EQ(f.host.scans.size(), 1u);
    EXPECT_EQ(f.host.scans[0].info.name, "TOP 1 0");
    EXPECT_EQ(f.host.scans[0].bytes, head);
    EXPECT_TRUE(f.wire.out(S2C).ends_with("+OK\r\n1 000000017\r\n.\r\n"));
    f.verdict(0, ScanVerdict::clean());
    EXPECT_TRUE(f.wire.out(S2C).ends_with(retr_response(head)));
}

TEST(Pop3Inspector, AuthExchangeLinesAreNotCommands) {
    Flow f;
    f.server(kGreeting);
    // The SASL response would read as a command ("RETR ..." here) if the
    // inspector took it for one.
    f.client("AUTH PLAIN\r\n");
    f.client("RETR 1\r\n");  // sent early: waits for the continuation
    EXPECT_EQ(f.wire.out(C2S), "AUTH PLAIN\r\n");
    f.server("+ \r\n");
    EXPECT_EQ(f.wire.out(C2S), "AUTH PLAIN\r\nRETR 1\r\n");
    f.server("+OK Logged in.\r\n");
    f.client("RETR 1\r\n");
    std::string m = clean_message();
    f.server(retr_response(m));
    ASSERT_EQ(f.host.scans.size(), 1u);
    EXPECT_EQ(f.host.scans[0].bytes, m);
    f.verdict(0, ScanVerdict::clean());
    EXPECT_TRUE(f.wire.out(S2C).ends_with(retr_response(m)));
}

TEST(Pop3Inspector, StlsStrippedFromCapaAndRefusedInOrder) {
    Flow f;
    f.host.policy_.starttls = StartTls::Strip;
    f.server(kGreeting);
    f.client("CAPA\r\n");
    f.server("+OK\r\nCAPA\r\nTOP\r\nSTLS\r\nUIDL\r\nSASL PLAIN\r\n.\r\n");
    EXPECT_EQ(f.wire.out(S2C), kGreeting + "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSASL PLAIN\r\n.\r\n");
    // Pipelined behind a NOOP: the -ERR comes after the NOOP's answer.
    f.client("NOOP\r\nSTLS\r\nNOOP\r\n");
    EXPECT_EQ(f.wire.out(C2S), "CAPA\r\nNOOP\r\nNOOP\r\n");
    f.server("+OK first\r\n");
    f.server("+OK second\r\n");
    std::string out = f.wire.out(S2C);
    EXPECT_TRUE(
        out.ends_with("+OK first\r\n-ERR STLS is not available through this network\r\n"
                      "+OK second\r\n"))
        << out;
    EXPECT_TRUE(f.host.releases.empty());
    EXPECT_TRUE(f.host.records.empty()) << "strip is not an event";
    EXPECT_EQ(f.inspector->counters().starttls_refused, 1u);
}

TEST(Pop3Inspector, StlsBlockedIsAPolicyEventAndAnsweredAtOnceWhenNothingIsOutstanding) {
    Flow f;
    f.host.policy_.starttls = StartTls::Block;
    f.server(kGreeting);
    f.client("STLS\r\n");
    EXPECT_EQ(f.wire.out(C2S), "");
    EXPECT_EQ(f.wire.out(S2C), kGreeting + "-ERR STLS is not available through this network\r\n");
    ASSERT_EQ(f.host.records.size(), 1u);
    EXPECT_EQ(f.host.records[0].what, "STARTTLS refused");
    EXPECT_EQ(f.host.records[0].action, "block");
    f.client("USER bob\r\n");
    f.server("+OK\r\n");
    EXPECT_EQ(f.wire.out(C2S), "USER bob\r\n");
}

TEST(Pop3Inspector, StlsAllowedReleasesTheFlowAfterItsOk) {
    Flow f;
    f.server(kGreeting);
    f.client("CAPA\r\n");
    f.server("+OK\r\nSTLS\r\n.\r\n");
    EXPECT_TRUE(f.wire.out(S2C).ends_with("STLS\r\n.\r\n"));
    f.client("STLS\r\n");
    std::string hello = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not a command line";
    f.client(hello);  // the client does not wait (it may not, but it does)
    EXPECT_TRUE(f.host.releases.empty());
    f.server("+OK Begin TLS negotiation now.\r\n");
    ASSERT_EQ(f.host.releases.size(), 1u);
    EXPECT_EQ(f.host.releases[0], ReleaseReason::Tls);
    EXPECT_EQ(f.wire.out(C2S), "CAPA\r\nSTLS\r\n" + hello);
}

TEST(Pop3Inspector, AServerThatIsNotPop3IsReleased) {
    Flow f;
    f.server("SSH-2.0-OpenSSH_9.2\r\n");
    ASSERT_EQ(f.host.releases.size(), 1u);
    EXPECT_EQ(f.host.releases[0], ReleaseReason::NotProtocol);
    EXPECT_EQ(f.wire.out(S2C), "SSH-2.0-OpenSSH_9.2\r\n");
}

TEST(Pop3Inspector, TooBigMessagePassesWithATaggedSubjectWhenTheFallbackPasses) {
    Flow f;
    f.host.limits_.max_content_size = 200;
    f.host.policy_.notify_recipient_on_error_pass = true;
    login(f);
    std::string big = clean_message("big one", 40);
    f.client("RETR 1\r\nNOOP\r\n");
    f.server(retr_response(big) + "+OK\r\n");
    EXPECT_TRUE(f.host.scans.empty());
    ASSERT_EQ(f.host.fallbacks.size(), 1u);
    EXPECT_EQ(f.host.fallbacks[0].what, "content-size");
    EXPECT_EQ(f.host.fallbacks[0].action, "pass");
    std::string out = f.wire.out(S2C);
    ASSERT_TRUE(out.ends_with("+OK\r\n"));
    std::string response = out.substr(out.find("+OK Logged in.\r\n") + 16);
    std::string message = message_in(response);
    EXPECT_NE(message.find("Subject: ***UNCHECKED*** big one\r\n"), std::string::npos) << message;
    // The body is the original's.
    EXPECT_TRUE(message.ends_with(big.substr(big.find("\r\n\r\n") + 4))) << message;
}

TEST(Pop3Inspector, TooBigMessageIsReplacedWhenTheFallbackBlocks) {
    for (unsigned seed = 1; seed <= 10; ++seed) {
        Flow f;
        f.rng.seed(seed);
        f.host.limits_.max_content_size = 200;
        f.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
        login(f);
        std::string big = clean_message("big one", 60);
        f.client("RETR 1\r\nNOOP\r\n");
        f.server(retr_response(big) + "+OK noop\r\n");
        EXPECT_TRUE(f.host.scans.empty());
        ASSERT_EQ(f.host.fallbacks.size(), 1u);
        EXPECT_EQ(f.host.fallbacks[0].action, "replace");
        std::string out = f.wire.out(S2C);
        ASSERT_TRUE(out.ends_with(".\r\n+OK noop\r\n")) << out;
        std::string response = out.substr(out.find("+OK Logged in.\r\n") + 16);
        std::string message = message_in(response);
        EXPECT_NE(message.find("Subject: big one"), std::string::npos) << message;
        EXPECT_NE(message.find("detection=content-size"), std::string::npos) << message;
        EXPECT_EQ(message.find("line 50"), std::string::npos) << "the original body is gone";
    }
}

TEST(Pop3Inspector, SenderIsNotifiedAtTheReturnPathElseFromNeverTheNullSender) {
    struct Case {
        std::string extra_header;  // before the message's own header
        std::string told;          // "" = nobody may be told
    };
    for (const Case& c :
         {Case{"Return-Path: <bounce-42@lists.example.org>\r\n", "bounce-42@lists.example.org"},
          Case{"", "mallory@example.org"},  // From's address, no display name
          Case{"Return-Path: <>\r\n", ""}}) {
        Flow f;
        f.host.policy_.notify_sender_on_virus = true;
        login(f);
        f.client("RETR 1\r\n");
        f.server(retr_response(c.extra_header + infected_message()));
        f.answer_all();
        ASSERT_EQ(f.host.records.size(), 1u);
        ASSERT_EQ(f.host.notifications.size(), 1u) << c.extra_header;
        const Notification& n = f.host.notifications[0];
        // "<>" reaches the notifier, which refuses it (and counts it).
        EXPECT_EQ(n.recipient, c.told.empty() ? "<>" : c.told);
        EXPECT_NE(n.original_headers.find("Subject: invoice\r\n"), std::string::npos);
        EXPECT_NE(n.subject.find("Eicar-Test-Signature"), std::string::npos) << n.subject;
    }
    // Not asked (the default): nobody is told.
    Flow quiet;
    login(quiet);
    quiet.client("RETR 1\r\n");
    quiet.server(retr_response(infected_message()));
    quiet.answer_all();
    EXPECT_EQ(quiet.host.records.size(), 1u);
    EXPECT_TRUE(quiet.host.notifications.empty());
}

TEST(Pop3Inspector, OwnCountersReachTheHostByName) {
    Flow f;
    login(f);
    // Every counter is known from the start (status lists them all).
    EXPECT_EQ(f.host.counted.size(), Pop3Counters::kFields.size());
    f.client("RETR 1\r\nRETR 2\r\n");
    f.server(retr_response(infected_message()) + retr_response(clean_message()));
    f.answer_all();
    const Pop3Counters& own = f.inspector->counters();
    EXPECT_EQ(own.messages_scanned, 2u);
    EXPECT_EQ(own.messages_blocked, 1u);
    for (const auto& [name, field] : Pop3Counters::kFields)
        EXPECT_EQ(f.host.counted.at(std::string(name)), own.*field) << name;
}

TEST(Pop3Inspector, ScanErrorPassesTaggedWhenConfigured) {
    Flow f;
    f.host.policy_.notify_recipient_on_error_pass = true;
    login(f);
    f.client("RETR 1\r\n");
    f.server(retr_response(clean_message("slow")));
    f.verdict(0, ScanVerdict::failed(ScanError::Timeout, "scan time"));
    std::string message = message_in(f.wire.out(S2C).substr(kGreeting.size() + 21));
    EXPECT_NE(message.find("Subject: ***UNCHECKED*** slow"), std::string::npos) << message;
    ASSERT_EQ(f.host.records.size(), 1u);
    EXPECT_EQ(f.host.records[0].action, "pass");
}

TEST(Pop3Inspector, BareLfDotLineIsAProtocolError) {
    Flow f;
    login(f);
    f.client("RETR 1\r\n");
    f.server("+OK\r\nSubject: a\r\n\r\nbody\n.\r\n" + retr_response(infected_message()));
    EXPECT_EQ(f.host.resets, 1);
    EXPECT_TRUE(f.wire.closed());
    EXPECT_EQ(f.wire.out(S2C).find("body"), std::string::npos);
    ASSERT_EQ(f.host.fallbacks.size(), 1u);
    EXPECT_EQ(f.host.fallbacks[0].what, "protocol-error");
}

TEST(Pop3Inspector, ResponsesOutOfStepAreAProtocolError) {
    Flow f;
    login(f);
    f.server("+OK unasked\r\n");
    EXPECT_EQ(f.host.resets, 1);
    Flow g;
    g.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    login(g);
    g.client("NOOP\r\n");
    g.server("* OK not pop3\r\n");
    ASSERT_EQ(g.host.releases.size(), 1u);
    EXPECT_EQ(g.host.releases[0], ReleaseReason::NotProtocol);
    EXPECT_TRUE(g.wire.out(S2C).ends_with("* OK not pop3\r\n"));
    // An unasked -ERR is a server saying goodbye.
    Flow h;
    login(h);
    h.server("-ERR Disconnected for inactivity.\r\n");
    EXPECT_EQ(h.host.resets, 0);
    EXPECT_TRUE(h.wire.out(S2C).ends_with("-ERR Disconnected for inactivity.\r\n"));
}

TEST(Pop3Inspector, PipelinedCommandsAreBounded) {
    Flow f;
    login(f);
    std::string noops;
    for (size_t i = 0; i < Pop3Inspector::kMaxQueuedCommands + 10; ++i)
        noops += "NOOP\r\n";
    f.client(noops);
    size_t sent = f.wire.out(C2S).size() - std::string("USER bob\r\nPASS secret\r\n").size();
    EXPECT_EQ(sent, Pop3Inspector::kMaxQueuedCommands * 6);
    for (size_t i = 0; i < 10; ++i)
        f.server("+OK\r\n");
    EXPECT_TRUE(f.wire.out(C2S).ends_with(noops));
}

TEST(Pop3Inspector, OverlongLinesAreProtocolErrors) {
    Flow f;
    login(f);
    f.client(std::string(Pop3Inspector::kMaxLine + 1, 'A'), 4096);
    EXPECT_EQ(f.host.resets, 1);
}

TEST(Pop3Inspector, MessageCutByTheServersFinIsJudgedAsSent) {
    Flow f;
    login(f);
    f.client("RETR 1\r\n");
    std::string partial = "+OK\r\nSubject: cut\r\n\r\n" + kEicar + "\r\n";
    f.server(partial);
    f.wire.fin(S2C);
    ASSERT_EQ(f.host.scans.size(), 1u);
    EXPECT_EQ(f.host.scans[0].bytes, "Subject: cut\r\n\r\n" + kEicar + "\r\n");
    EXPECT_EQ(f.wire.out(S2C).find("EICAR"), std::string::npos);
    f.answer_all();
    std::string out = f.wire.out(S2C);
    EXPECT_EQ(out.find("EICAR"), std::string::npos);
    EXPECT_NE(out.find("mail-virus-notice"), std::string::npos);
}

TEST(Pop3Inspector, RelayStoreFullIsOutOfResource) {
    Flow f;
    login(f);
    f.client("RETR 1\r\n");
    f.server("+OK\r\nSubject: x\r\n\r\nsome body\r\n");
    f.wire.stall(S2C);
    ASSERT_EQ(f.host.fallbacks.size(), 1u);
    EXPECT_EQ(f.host.fallbacks[0].what, "out-of-resource");
    EXPECT_EQ(f.host.fallbacks[0].action, "pass");
    f.server(".\r\n");
    EXPECT_TRUE(f.wire.out(S2C).ends_with("+OK\r\nSubject: x\r\n\r\nsome body\r\n.\r\n"));
    EXPECT_FALSE(f.wire.dir(S2C).relay);
}

TEST(Pop3Inspector, LostFramingWhileDroppingABlockedMessageResetsWhateverTheFallback) {
    Flow f;
    f.host.limits_.max_content_size = 200;
    f.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
    f.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    login(f);
    f.client("RETR 1\r\n");
    std::string big = clean_message("big one", 40);
    f.server("+OK\r\n" + big + "after the limit\n.\r\n" + kEicar + "\r\n.\r\n");
    EXPECT_EQ(f.host.resets, 1);
    EXPECT_EQ(f.wire.out(S2C).find("EICAR"), std::string::npos);
    EXPECT_EQ(f.wire.out(S2C).find("after the limit"), std::string::npos);
}

}  // namespace
}  // namespace nfqscan
