// The IMAP inspector on a simulated wire (mail_wire.h): what the client and
// the server receive, and what is scanned, with both peers' bytes in random
// pieces.
#include "../../../src/proto/imap/imap_inspector.h"

#include <gtest/gtest.h>

#include "mail_wire.h"

namespace nfqscan {
namespace {

using namespace mailtest;
using Flow = MailFlow<ImapInspector>;

const std::string kGreeting =
    "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ STARTTLS AUTH=PLAIN] Dovecot ready.\r\n";

std::string message(const std::string& subject, const std::string& body = "hello\r\n") {
    return "From: Mallory <mallory@example.org>\r\nTo: bob@example.org\r\nSubject: " + subject +
           "\r\n\r\n" + body;
}

std::string literal(const std::string& m) {
    return "{" + std::to_string(m.size()) + "}\r\n" + m;
}

void login(Flow& f) {
    f.server(kGreeting);
    f.client("a1 LOGIN bob {6}\r\n");
    f.server("+ OK\r\n");
    f.client("secret\r\n");
    f.server("a1 OK Logged in\r\n");
    f.client("a2 SELECT INBOX\r\n");
    f.server("* 2 EXISTS\r\n* OK [UIDVALIDITY 1] Ok\r\na2 OK [READ-WRITE] Select completed\r\n");
}

// The literal of `item` in a FETCH response, as the client reads it.
std::string literal_after(const std::string& out, const std::string& item, size_t from = 0) {
    size_t at = out.find(item + " {", from);
    EXPECT_NE(at, std::string::npos) << out;
    if (at == std::string::npos) return {};
    size_t open = at + item.size() + 1, close = out.find("}\r\n", open);
    size_t size = std::stoul(out.substr(open + 1, close - open - 1));
    return out.substr(close + 3, size);
}

TEST(ImapInspector, WholeMessageLiteralsAreScannedAndCleanOnesPassByteIdentical) {
    for (unsigned seed = 1; seed <= 10; ++seed) {
        Flow f;
        f.rng.seed(seed);
        login(f);
        std::string m1 = message("one"), m2 = message("two", std::string(3000, 'x') + "\r\n");
        f.client("a3 FETCH 1:2 (UID BODY.PEEK[])\r\n");
        std::string response = "* 1 FETCH (UID 7 BODY[] " + literal(m1) +
                               ")\r\n* 2 FETCH (UID 8 BODY[] " + literal(m2) +
                               ")\r\na3 OK Fetch completed.\r\n";
        size_t before = f.wire.out(S2C).size();
        f.server(response);
        // Mapped up to the first literal's "{", nothing of it.
        EXPECT_EQ(f.wire.out(S2C).substr(before), "* 1 FETCH (UID 7 BODY[] ");
        ASSERT_EQ(f.host.scans.size(), 1u);
        EXPECT_EQ(f.host.scans[0].bytes, m1);
        EXPECT_EQ(f.host.scans[0].info.name, "FETCH 1 BODY[]");
        f.verdict(0, ScanVerdict::clean());
        ASSERT_EQ(f.host.scans.size(), 2u);
        EXPECT_EQ(f.host.scans[1].bytes, m2);
        f.verdict(1, ScanVerdict::clean());
        EXPECT_EQ(f.wire.out(S2C).substr(before), response);
        EXPECT_TRUE(f.host.records.empty());
    }
}

TEST(ImapInspector, InfectedLiteralIsReplacedWithItsLengthRewritten) {
    for (unsigned seed = 1; seed <= 10; ++seed) {
        Flow f;
        f.rng.seed(seed);
        login(f);
        std::string bad = message("invoice", kEicar + "\r\n"), good = message("fine");
        f.client("a3 UID FETCH 7:8 (RFC822 FLAGS)\r\n");
        f.server("* 1 FETCH (UID 7 RFC822 " + literal(bad) + " FLAGS (\\Seen))\r\n* 1 EXISTS\r\n" +
                 "* 2 FETCH (UID 8 RFC822 " + literal(good) + " FLAGS (\\Seen))\r\na3 OK done\r\n");
        f.answer_all();
        std::string out = f.wire.out(S2C);
        EXPECT_EQ(out.find("EICAR"), std::string::npos);
        std::string replaced = literal_after(out, "UID 7 RFC822");
        EXPECT_NE(replaced.find("Subject: invoice"), std::string::npos) << replaced;
        EXPECT_NE(replaced.find("mail-virus-notice: detection=Eicar-Test-Signature"),
                  std::string::npos);
        EXPECT_NE(replaced.find("sender=Mallory <mallory@example.org>"), std::string::npos);
        // What follows the literal is intact, the next message byte-identical.
        EXPECT_NE(out.find(replaced + " FLAGS (\\Seen))\r\n* 1 EXISTS\r\n"), std::string::npos);
        EXPECT_TRUE(out.ends_with("* 2 FETCH (UID 8 RFC822 " + literal(good) +
                                  " FLAGS (\\Seen))\r\na3 OK done\r\n"));
        ASSERT_EQ(f.host.records.size(), 1u);
        EXPECT_EQ(f.host.records[0].action, "replace");
    }
}

TEST(ImapInspector, SenderIsNotifiedAtTheReturnPathOnVirusAndOnErrorDrop) {
    {
        Flow f;
        f.host.policy_.notify_sender_on_virus = true;
        login(f);
        std::string bad =
            "Return-Path: <owner@lists.example.org>\r\n" + message("invoice", kEicar + "\r\n");
        f.client("a3 FETCH 1 BODY.PEEK[]\r\n");
        f.server("* 1 FETCH (BODY[] " + literal(bad) + ")\r\na3 OK\r\n");
        f.answer_all();
        ASSERT_EQ(f.host.notifications.size(), 1u);
        EXPECT_EQ(f.host.notifications[0].recipient, "owner@lists.example.org");
        EXPECT_NE(f.host.notifications[0].original_headers.find("Subject: invoice"),
                  std::string::npos);
    }
    {
        // A message too big to scan, blocked by its fallback: From is told
        // (no Return-Path), when notify_sender_on_error_drop says so.
        Flow f;
        f.host.limits_.max_content_size = 1024;
        f.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
        f.host.policy_.notify_sender_on_error_drop = true;
        login(f);
        std::string big = message("big", std::string(5000, 'y') + "\r\n");
        f.client("a3 FETCH 1 BODY[]\r\n");
        f.server("* 1 FETCH (BODY[] " + literal(big) + ")\r\na3 OK\r\n");
        ASSERT_EQ(f.host.notifications.size(), 1u);
        EXPECT_EQ(f.host.notifications[0].recipient, "mallory@example.org");
        EXPECT_NE(f.host.notifications[0].subject.find("content-size"), std::string::npos);
    }
}

TEST(ImapInspector, BinaryLiteralKeepsItsTilde) {
    Flow f;
    login(f);
    std::string bad = message("bin", kEicar + "\r\n");
    f.client("a3 FETCH 1 BINARY.PEEK[]\r\n");
    f.server("* 1 FETCH (BINARY[] ~" + literal(bad) + ")\r\na3 OK done\r\n");
    ASSERT_EQ(f.host.scans.size(), 1u);
    f.answer_all();
    std::string out = f.wire.out(S2C);
    EXPECT_NE(out.find("* 1 FETCH (BINARY[] ~{"), std::string::npos) << out;
    EXPECT_EQ(out.find("EICAR"), std::string::npos);
}

TEST(ImapInspector, HeaderFetchesPassAndPartialOnesFallBack) {
    Flow f;
    login(f);
    f.client(
        "a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] BODY.PEEK[2] BODY.PEEK[]<0.10>)\r\n");
    std::string response =
        "* 1 FETCH (BODY[HEADER.FIELDS (FROM SUBJECT)] {12}\r\nSubject: x\r\n"
        " BODY[2] {5}\r\nabcde BODY[]<0> {10}\r\nFrom: a\r\n\r\n)\r\na3 OK\r\n";
    f.server(response);
    EXPECT_TRUE(f.host.scans.empty());
    EXPECT_TRUE(f.wire.out(S2C).ends_with(response));
    ASSERT_EQ(f.host.fallbacks.size(), 2u);
    EXPECT_EQ(f.host.fallbacks[0].what, "partial");
    EXPECT_EQ(f.host.fallbacks[0].action, "pass");
    EXPECT_EQ(f.inspector->counters().partial, 2u);
}

TEST(ImapInspector, PartialFetchAnsweredWholeIsScanned) {
    Flow f;
    login(f);
    std::string m = message("small");
    f.client("a3 FETCH 1 BODY.PEEK[]<0.65536>\r\n");
    f.server("* 1 FETCH (BODY[]<0> " + literal(m) + ")\r\na3 OK\r\n");
    ASSERT_EQ(f.host.scans.size(), 1u);
    EXPECT_EQ(f.host.scans[0].bytes, m);
    f.verdict(0, ScanVerdict::clean());
    EXPECT_TRUE(f.wire.out(S2C).ends_with("* 1 FETCH (BODY[]<0> " + literal(m) + ")\r\na3 OK\r\n"));
}

TEST(ImapInspector, PartialFetchBlockedGetsANotice) {
    Flow f;
    f.host.policy_.fallback[size_t(Category::Partial)] = Action::Block;
    login(f);
    f.client("a3 FETCH 1 BODY.PEEK[2]\r\n");
    f.server("* 1 FETCH (BODY[2] {5}\r\nabcde)\r\na3 OK\r\n");
    std::string out = f.wire.out(S2C);
    EXPECT_EQ(out.find("abcde"), std::string::npos);
    std::string notice = literal_after(out, "BODY[2]");
    EXPECT_NE(notice.find("detection=partial"), std::string::npos) << out;
    EXPECT_TRUE(out.ends_with(")\r\na3 OK\r\n"));
}

TEST(ImapInspector, TooBigMessagePassesTaggedOrIsReplaced) {
    std::string big = message("big", std::string(5000, 'y') + "\r\n");
    {
        Flow f;
        f.host.limits_.max_content_size = 1024;
        f.host.policy_.notify_recipient_on_error_pass = true;
        login(f);
        f.client("a3 FETCH 1 BODY[]\r\n");
        f.server("* 1 FETCH (BODY[] " + literal(big) + ")\r\na3 OK\r\n");
        EXPECT_TRUE(f.host.scans.empty());
        std::string got = literal_after(f.wire.out(S2C), "BODY[]");
        EXPECT_NE(got.find("Subject: ***UNCHECKED*** big"), std::string::npos) << got;
        EXPECT_TRUE(got.ends_with(std::string(5000, 'y') + "\r\n"));
        EXPECT_TRUE(f.wire.out(S2C).ends_with(")\r\na3 OK\r\n"));
        ASSERT_EQ(f.host.fallbacks.size(), 1u);
        EXPECT_EQ(f.host.fallbacks[0].what, "content-size");
    }
    {
        Flow f;
        f.host.limits_.max_content_size = 1024;
        f.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
        login(f);
        f.client("a3 FETCH 1 BODY[]\r\n");
        f.server("* 1 FETCH (BODY[] " + literal(big) + ")\r\na3 OK\r\n");
        std::string got = literal_after(f.wire.out(S2C), "BODY[]");
        EXPECT_NE(got.find("Subject: big"), std::string::npos) << got;
        EXPECT_NE(got.find("detection=content-size"), std::string::npos) << got;
        EXPECT_EQ(got.find("yyyy"), std::string::npos);
        EXPECT_TRUE(f.wire.out(S2C).ends_with(")\r\na3 OK\r\n"));
    }
}

TEST(ImapInspector, ClientLiteralsAndIdleDoNotConfuseTheFraming) {
    Flow f;
    login(f);
    // A LITERAL+ search string that looks like a FETCH response.
    std::string odd = "* 1 FETCH (BODY[] {5}";
    f.client("a3 SEARCH CHARSET UTF-8 SUBJECT {" + std::to_string(odd.size()) + "+}\r\n" + odd +
             "\r\na4 IDLE\r\n");
    f.server("* SEARCH 1\r\na3 OK\r\n+ idling\r\n* 3 EXISTS\r\n");
    f.client("DONE\r\n");
    f.server("a4 OK Idle completed\r\n");
    EXPECT_TRUE(f.host.scans.empty());
    EXPECT_TRUE(f.wire.out(C2S).ends_with(odd + "\r\na4 IDLE\r\nDONE\r\n"));
    EXPECT_TRUE(f.wire.out(S2C).ends_with("+ idling\r\n* 3 EXISTS\r\na4 OK Idle completed\r\n"));
}

TEST(ImapInspector, StartTlsStrippedAndRefused) {
    Flow f;
    f.host.policy_.starttls = StartTls::Block;
    f.server(kGreeting);
    EXPECT_EQ(f.wire.out(S2C),
              "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n");
    f.client("a1 CAPABILITY\r\n");
    f.server("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na1 OK\r\n");
    EXPECT_TRUE(f.wire.out(S2C).ends_with("* CAPABILITY IMAP4rev1 LOGINDISABLED\r\na1 OK\r\n"));
    // Refused in the middle of a literal: the NO waits for the response's end.
    f.client("a2 FETCH 1 BODY[HEADER]\r\n");
    f.server("* 1 FETCH (BODY[HEADER] {14}\r\nSubject:");
    f.client("a3 STARTTLS\r\n");
    EXPECT_EQ(f.wire.out(C2S), "a1 CAPABILITY\r\na2 FETCH 1 BODY[HEADER]\r\n");
    f.server(" x\r\n\r\n)\r\na2 OK\r\n");
    EXPECT_TRUE(f.wire.out(S2C).ends_with(
        "Subject: x\r\n\r\n)\r\na3 NO STARTTLS is not available through this network\r\n"
        "a2 OK\r\n"))
        << f.wire.out(S2C);
    ASSERT_EQ(f.host.records.size(), 1u);
    EXPECT_EQ(f.host.records[0].what, "STARTTLS refused");
}

TEST(ImapInspector, StartTlsAllowedReleasesAfterOk) {
    Flow f;
    f.server(kGreeting);
    f.client("a1 STARTTLS\r\n");
    std::string hello("\x16\x03\x01\x00\x05hello", 10);
    f.client(hello);
    EXPECT_EQ(f.wire.out(C2S), "a1 STARTTLS\r\n");
    f.server("a1 OK Begin TLS negotiation now.\r\n");
    ASSERT_EQ(f.host.releases.size(), 1u);
    EXPECT_EQ(f.host.releases[0], ReleaseReason::Tls);
    EXPECT_EQ(f.wire.out(C2S), "a1 STARTTLS\r\n" + hello);
}

TEST(ImapInspector, NotImapIsReleasedAndLongLinesPass) {
    Flow f;
    f.server("220 smtp.example.org ESMTP\r\n");
    ASSERT_EQ(f.host.releases.size(), 1u);
    EXPECT_EQ(f.host.releases[0], ReleaseReason::NotProtocol);

    Flow g;
    login(g);
    g.client("a3 SEARCH ALL\r\n");
    std::string search = "* SEARCH";
    while (search.size() < 3 * ImapInspector::kMaxLine)
        search += " " + std::to_string(search.size());
    std::string m = message("after a long line");
    g.server(search + "\r\na3 OK\r\n* 1 FETCH (BODY[] " + literal(m) + ")\r\n", 4096);
    ASSERT_EQ(g.host.scans.size(), 1u);
    g.verdict(0, ScanVerdict::clean());
    EXPECT_TRUE(g.wire.out(S2C).ends_with(search + "\r\na3 OK\r\n* 1 FETCH (BODY[] " + literal(m) +
                                          ")\r\n"));
}

TEST(ImapInspector, LiteralCutByTheServersFinIsJudged) {
    Flow f;
    login(f);
    f.client("a3 FETCH 1 BODY[]\r\n");
    f.server("* 1 FETCH (BODY[] {500}\r\nSubject: cut\r\n\r\n" + kEicar);
    f.wire.fin(S2C);
    ASSERT_EQ(f.host.scans.size(), 1u);
    f.answer_all();
    EXPECT_EQ(f.wire.out(S2C).find("EICAR"), std::string::npos);
}

TEST(ImapInspector, AppendIsScannedAndStoredReplacedThroughLiteralPlus) {
    for (unsigned seed = 1; seed <= 10; ++seed) {
        Flow f;
        f.rng.seed(seed);
        login(f);  // the greeting says LITERAL+
        std::string bad = message("upload", kEicar + "\r\n"), good = message("fine upload");
        f.client("a3 APPEND INBOX (\\Seen) {" + std::to_string(bad.size()) + "}\r\n");
        // The client's "+" comes from nfqscand; the server has only the words.
        EXPECT_TRUE(f.wire.out(S2C).ends_with("+ Ready for literal data\r\n"));
        EXPECT_TRUE(f.wire.out(C2S).ends_with("a3 APPEND INBOX (\\Seen) "));
        f.client(bad + "\r\n");
        ASSERT_EQ(f.host.scans.size(), 1u);
        EXPECT_EQ(f.host.scans[0].bytes, bad);
        EXPECT_EQ(f.host.scans[0].info.direction, C2S);
        EXPECT_EQ(f.host.scans[0].info.name, "APPEND INBOX");
        f.answer_all();
        std::string to_server = f.wire.out(C2S);
        EXPECT_EQ(to_server.find("EICAR"), std::string::npos);
        size_t open = to_server.find("a3 APPEND INBOX (\\Seen) {");
        ASSERT_NE(open, std::string::npos) << to_server;
        size_t close = to_server.find("+}\r\n", open);
        ASSERT_NE(close, std::string::npos) << to_server;
        size_t size = std::stoul(to_server.substr(open + 25, close - open - 25));
        std::string stored = to_server.substr(close + 4, size);
        EXPECT_NE(stored.find("Subject: upload"), std::string::npos) << stored;
        EXPECT_NE(stored.find("mail-virus-notice"), std::string::npos) << stored;
        EXPECT_TRUE(to_server.ends_with(stored + "\r\n"));
        f.server("a3 OK Append completed.\r\n");
        // A clean one goes as sent, its literal made non-synchronising.
        f.client("a4 APPEND INBOX {" + std::to_string(good.size()) + "}\r\n");
        f.client(good + "\r\n");
        f.answer_all();
        EXPECT_TRUE(f.wire.out(C2S).ends_with("a4 APPEND INBOX {" + std::to_string(good.size()) +
                                              "+}\r\n" + good + "\r\n"));
        ASSERT_EQ(f.host.records.size(), 1u);
        EXPECT_EQ(f.host.records[0].action, "replace");
    }
}

TEST(ImapInspector, AppendToAServerWithoutLiteralPlusKeepsTheAnnouncedSize) {
    Flow f;
    f.server("* OK IMAP4rev1 ready\r\n");
    f.client("a1 LOGIN bob secret\r\n");
    f.server("a1 OK\r\n");
    std::string bad = message("upload", std::string(2000, 'z') + "\r\n" + kEicar + "\r\n");
    std::string marker = "{" + std::to_string(bad.size()) + "}\r\n";
    f.client("a2 APPEND INBOX " + marker);
    EXPECT_TRUE(f.wire.out(C2S).ends_with("a2 APPEND INBOX " + marker));
    f.server("+ OK\r\n");
    f.client(bad + "\r\n");
    ASSERT_EQ(f.host.scans.size(), 1u);
    f.answer_all();
    std::string to_server = f.wire.out(C2S);
    size_t at = to_server.find(marker) + marker.size();
    std::string stored = to_server.substr(at, bad.size());
    EXPECT_EQ(to_server.size(), at + bad.size() + 2);
    EXPECT_EQ(stored.find("EICAR"), std::string::npos);
    EXPECT_NE(stored.find("mail-virus-notice"), std::string::npos);
    EXPECT_TRUE(to_server.ends_with("\r\n"));
}

TEST(ImapInspector, AppendWithClientLiteralPlusGetsNoLocalContinuation) {
    Flow f;
    login(f);
    std::string good = message("plus");
    size_t before = f.wire.out(S2C).size();
    f.client("a3 APPEND INBOX {" + std::to_string(good.size()) + "+}\r\n" + good + "\r\n");
    EXPECT_EQ(f.wire.out(S2C).size(), before);
    f.answer_all();
    EXPECT_TRUE(f.wire.out(C2S).ends_with("a3 APPEND INBOX {" + std::to_string(good.size()) +
                                          "+}\r\n" + good + "\r\n"));
}

TEST(ImapInspector, AppendCutByTheClientsFinIsJudgedBeforeTheServerGetsIt) {
    Flow f;
    login(f);
    std::string bad = message("cut upload", kEicar + "\r\n" + std::string(500, 'q'));
    f.client("a3 APPEND INBOX {" + std::to_string(bad.size()) + "}\r\n");
    f.client(bad.substr(0, 200));
    f.wire.fin(C2S);
    EXPECT_EQ(f.wire.out(C2S).find("EICAR"), std::string::npos) << "passed at the FIN";
    ASSERT_EQ(f.host.scans.size(), 1u);
    EXPECT_EQ(f.host.scans[0].bytes, bad.substr(0, 200));
    f.answer_all();
    EXPECT_EQ(f.wire.out(C2S).find("EICAR"), std::string::npos);
    EXPECT_NE(f.wire.out(C2S).find("mail-virus-notice"), std::string::npos);
}

TEST(ImapInspector, AReleaseWaitsForTheUploadBeingJudged) {
    Flow f;
    std::string bad = message("early upload", kEicar + "\r\n");
    f.client("a1 APPEND INBOX {" + std::to_string(bad.size()) + "+}\r\n" + bad.substr(0, 20));
    f.server("SSH-2.0-OpenSSH_9.2\r\n");  // not IMAP: the flow is released...
    EXPECT_TRUE(f.host.releases.empty()) << "...once the upload is done";
    f.client(bad.substr(20) + "\r\n");
    EXPECT_EQ(f.wire.out(C2S).find("EICAR"), std::string::npos);
    f.answer_all();
    ASSERT_EQ(f.host.releases.size(), 1u);
    EXPECT_EQ(f.wire.out(C2S).find("EICAR"), std::string::npos);
    EXPECT_NE(f.wire.out(C2S).find("mail-virus-notice"), std::string::npos);
}

TEST(ImapInspector, SpamFetchedIsTaggedWithItsLengthRewritten) {
    Flow f;
    login(f);
    std::string spam = message("offer");
    f.client("a3 FETCH 1 (BODY.PEEK[])\r\n");
    f.server("* 1 FETCH (BODY[] " + literal(spam) + ")\r\na3 OK done\r\n");
    f.verdict(0, wiretest::spam_verdict());
    std::string tagged = literal_after(f.wire.out(S2C), "BODY[]");
    EXPECT_NE(tagged.find("Subject: [SPAM] offer"), std::string::npos) << tagged;
    EXPECT_NE(tagged.find("X-Spam-Flag: YES"), std::string::npos) << tagged;
    ASSERT_EQ(f.host.records.size(), 1u);
    EXPECT_EQ(f.host.records[0].action, "tag");
}

TEST(ImapInspector, SpamAppendedIsStoredAsSent) {
    Flow f;
    login(f);
    f.host.policy_.spam_engine = true;  // not asked for an upload either
    std::string spam = message("draft");
    f.client("a3 APPEND INBOX {" + std::to_string(spam.size()) + "+}\r\n" + spam + "\r\n");
    f.verdict(0, wiretest::spam_verdict());
    f.answer_all();
    EXPECT_TRUE(
        f.wire.out(C2S).ends_with("{" + std::to_string(spam.size()) + "+}\r\n" + spam + "\r\n"));
    ASSERT_EQ(f.host.records.size(), 1u);
    EXPECT_EQ(f.host.records[0].action, "pass");
}

}  // namespace
}  // namespace nfqscan
