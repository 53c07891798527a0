// The FTP control channel's parser (src/proto/ftp/ftp_parser.h), hostile
// host-port arguments included, and the expectation table
// (nfqscan/ftp_expectations.h): matching, one-shot claims, expiry, the bound,
// the session's end, and claims from several threads at once.
#include "../../../src/proto/ftp/ftp_parser.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "nfqscan/ftp_expectations.h"

namespace nfqscan {
namespace {

using namespace ftp;

IpAddress v4(const char* text) {
    uint8_t a[4];
    EXPECT_EQ(inet_pton(AF_INET, text, a), 1) << text;
    return IpAddress::from_v4(a);
}
IpAddress v6(const char* text) {
    uint8_t a[16];
    EXPECT_EQ(inet_pton(AF_INET6, text, a), 1) << text;
    return IpAddress::from_v6(a);
}

TEST(FtpParser, Commands) {
    Command c = parse_command("retr /pub/file name.txt");
    EXPECT_EQ(c.verb, "RETR");
    EXPECT_EQ(c.arg, "/pub/file name.txt");
    EXPECT_EQ(parse_command("QUIT").verb, "QUIT");
    EXPECT_TRUE(parse_command("QUIT").arg.empty());
    // Telnet IP and Synch before ABOR (RFC 959 4.1.3).
    EXPECT_EQ(parse_command("\xff\xf4\xff\xf2"
                            "ABOR")
                  .verb,
              "ABOR");
    EXPECT_EQ(parse_command("").verb, "");
    EXPECT_EQ(parse_command("1234 x").verb, "");
    EXPECT_EQ(parse_command("RETR\tx").verb, "") << "a verb ends with a space";
    EXPECT_EQ(parse_command(std::string(100, 'A')).verb, "") << "verbs are short";
}

TEST(FtpParser, RepliesSingleAndMultiLine) {
    ReplyFramer f;
    EXPECT_EQ(f.feed("220 (vsFTPd 3.0.3)"), ReplyFramer::Step::Complete);
    EXPECT_EQ(f.code(), 220);
    EXPECT_EQ(f.feed("211-Features:"), ReplyFramer::Step::Incomplete);
    EXPECT_EQ(f.feed(" EPRT"), ReplyFramer::Step::Incomplete);
    EXPECT_EQ(f.feed("211-not the end"), ReplyFramer::Step::Incomplete);
    EXPECT_EQ(f.feed("226 another code is text here"), ReplyFramer::Step::Incomplete);
    EXPECT_EQ(f.feed("211 End"), ReplyFramer::Step::Complete);
    EXPECT_EQ(f.code(), 211);
    EXPECT_EQ(f.feed("226"), ReplyFramer::Step::Complete) << "a code alone is a reply";
    EXPECT_EQ(f.feed("hello"), ReplyFramer::Step::Invalid);
    EXPECT_EQ(f.feed("600 no such class"), ReplyFramer::Step::Invalid);
    EXPECT_EQ(f.feed("22"), ReplyFramer::Step::Invalid);
    EXPECT_EQ(f.feed("2201 x"), ReplyFramer::Step::Invalid);
}

TEST(FtpParser, PasvReplies) {
    auto hp = parse_pasv_reply("Entering Passive Mode (192,0,2,7,195,80).");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->address, v4("192.0.2.7"));
    EXPECT_EQ(hp->port, 195 * 256 + 80);
    // Without parentheses, with spaces (some servers), after other numbers.
    hp = parse_pasv_reply("=10, 0, 0, 1, 4, 1 ok");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->port, 1025);
    hp = parse_pasv_reply("Passive 1 2 (10,0,0,1,4,2)");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->port, 1026);
    // Hostile: out of range, too many digits, too few or too many numbers,
    // port 0, a number that overflows 32 bits.
    for (const char* bad : {"(256,0,0,1,4,1)", "(10,0,0,1,4,256)", "(0010,0,0,1,4,1)",
                            "(10,0,0,1,4)", "(10,0,0,1,4,1,7)", "(10,0,0,1,0,0)",
                            "(4294967297,0,0,1,4,1)", "(99999999999999999999,1,1,1,1,1)",
                            "(-1,0,0,1,4,1)", "(,,,,,)", "", "(", "()", "(10,0,0,1,4,)"})
        EXPECT_FALSE(parse_pasv_reply(bad)) << bad;
}

TEST(FtpParser, EpsvReplies) {
    auto hp = parse_epsv_reply("Entering Extended Passive Mode (|||6446|)");
    ASSERT_TRUE(hp);
    EXPECT_FALSE(hp->has_address);
    EXPECT_EQ(hp->port, 6446);
    EXPECT_EQ(parse_epsv_reply("ok (!!!65535!)")->port, 65535);
    for (const char* bad : {"(|||65536|)", "(|||0|)", "(|||999999999999|)", "(||1|2|)", "(|||6446)",
                            "|||6446|", "(|||6446|x)", "(|||-1|)", "(|||+5|)", "( || |5|)",
                            "(\x01\x01\x01"
                            "5\x01)"})
        EXPECT_FALSE(parse_epsv_reply(bad)) << bad;
}

TEST(FtpParser, PortAndEprtArguments) {
    auto hp = parse_port_arg("10,1,2,3,200,10");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->address, v4("10.1.2.3"));
    EXPECT_EQ(hp->port, 200 * 256 + 10);
    for (const char* bad : {"10,1,2,3,200", "10,1,2,3,200,10,1", "10,1,2,3,200,10x", "a,b,c,d,e,f",
                            "300,1,2,3,4,5", "10,1,2,3,0,0", ""})
        EXPECT_FALSE(parse_port_arg(bad)) << bad;

    hp = parse_eprt_arg("|1|132.235.1.2|6275|");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->address, v4("132.235.1.2"));
    EXPECT_EQ(hp->port, 6275);
    hp = parse_eprt_arg("|2|1080::8:800:200C:417A|5282|");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->address, v6("1080::8:800:200C:417A"));
    EXPECT_EQ(hp->port, 5282);
    std::string long_address = "|2|" + std::string(5000, '1') + "|21|";
    for (const std::string& bad :
         {std::string("|3|1.2.3.4|21|"), std::string("|1|1.2.3.4|65536|"),
          std::string("|1|1.2.3.4|0|"), std::string("|1|::1|21|"), std::string("|2|1.2.3.4x|21|"),
          std::string("|1|1.2.3.4|21"), std::string("|1|1.2.3.4|21|x"),
          std::string("|1|256.1.1.1|21|"), std::string("|1||21|"), std::string("||||"),
          long_address, std::string(" |1|1.2.3.4|21|"), std::string("|1|1.2.3.4|99999999999|")})
        EXPECT_FALSE(parse_eprt_arg(bad)) << bad;
}

TEST(FtpParser, PathsAndPwd) {
    EXPECT_EQ(join_path("/pub", "a.zip"), "/pub/a.zip");
    EXPECT_EQ(join_path("/", "a.zip"), "/a.zip");
    EXPECT_EQ(join_path("/pub", "/etc/x"), "/etc/x");
    EXPECT_EQ(join_path("", "a.zip"), "a.zip");
    EXPECT_EQ(join_path("/x", std::string(5000, 'a')).size(), kMaxPath);
    EXPECT_EQ(parse_257("\"/home/ftp\" is the current directory"), "/home/ftp");
    EXPECT_EQ(parse_257("\"/a \"\"b\"\"\" created"), "/a \"b\"");
    EXPECT_FALSE(parse_257("no quotes"));
    EXPECT_FALSE(parse_257("\"unterminated"));
}

// -- the expectation table ---------------------------------------------------------

std::shared_ptr<FtpSession> session(FtpExpectations& e) {
    return std::make_shared<FtpSession>(nullptr, &e.counters());
}

TEST(FtpExpectations, PassiveClaimIsOneShotAndChecksAddresses) {
    FtpExpectations e;
    auto s = session(e);
    IpAddress client = v4("10.0.0.1"), server = v4("10.0.1.1"), advertised = v4("192.0.2.1");
    e.expect(client, advertised, server, 50000, s, 1, 1000);
    EXPECT_EQ(e.size(), 1u);
    EXPECT_EQ(e.claim(v4("10.0.0.9"), server, 50000, 1001), nullptr) << "another client";
    EXPECT_EQ(e.claim(client, server, 50001, 1001), nullptr) << "another port";
    EXPECT_EQ(e.claim(client, v4("10.9.9.9"), 50000, 1001), nullptr) << "another server";
    // The control connection's own peer stands for the advertised address
    // (a server behind a port forward).
    EXPECT_EQ(e.claim(client, server, 50000, 1002), s);
    EXPECT_EQ(e.claim(client, server, 50000, 1003), nullptr) << "used up";
    EXPECT_TRUE(s->claimed_since(1));
    EXPECT_FALSE(s->claimed_since(2));
    e.expect(client, advertised, server, 50000, s, 2, 2000);
    EXPECT_EQ(e.claim(client, advertised, 50000, 2001), s);
    EXPECT_EQ(e.counters().claimed.load(), 2u);
}

TEST(FtpExpectations, UnclaimedOnesExpire) {
    FtpExpectations e(16, 30'000);
    auto s = session(e);
    e.expect(v4("10.0.0.1"), v4("10.0.1.1"), v4("10.0.1.1"), 40000, s, 1, 1000);
    e.expect(v4("10.0.0.1"), v4("10.0.1.1"), v4("10.0.1.1"), 40001, s, 2, 20'000);
    EXPECT_EQ(e.claim(v4("10.0.0.1"), v4("10.0.1.1"), 40000, 31'000), nullptr);
    EXPECT_EQ(e.counters().expired.load(), 1u);
    EXPECT_EQ(e.size(), 1u);
    EXPECT_EQ(e.claim(v4("10.0.0.1"), v4("10.0.1.1"), 40001, 31'000), s);
}

TEST(FtpExpectations, BoundedTheOldestGo) {
    FtpExpectations e(4, 30'000);
    auto s = session(e);
    for (uint16_t port = 1; port <= 100; ++port)
        e.expect(v4("10.0.0.1"), v4("10.0.1.1"), v4("10.0.1.1"), port, s, port, 1000);
    EXPECT_EQ(e.size(), 4u);
    EXPECT_EQ(e.counters().evicted.load(), 96u);
    EXPECT_EQ(e.claim(v4("10.0.0.1"), v4("10.0.1.1"), 1, 1001), nullptr);
    EXPECT_EQ(e.claim(v4("10.0.0.1"), v4("10.0.1.1"), 100, 1001), s);
}

TEST(FtpExpectations, TheSessionsEndRemovesItsExpectations) {
    FtpExpectations e;
    auto a = session(e), b = session(e);
    e.expect(v4("10.0.0.1"), v4("10.0.1.1"), v4("10.0.1.1"), 1000, a, 1, 0);
    e.expect(v4("10.0.0.2"), v4("10.0.1.1"), v4("10.0.1.1"), 1000, b, 1, 0);
    e.forget(a.get());
    EXPECT_EQ(e.size(), 1u);
    EXPECT_EQ(e.claim(v4("10.0.0.1"), v4("10.0.1.1"), 1000, 1), nullptr);
    // A session gone without forget(): its expectation claims nothing.
    b.reset();
    EXPECT_EQ(e.claim(v4("10.0.0.2"), v4("10.0.1.1"), 1000, 1), nullptr);
}

TEST(FtpExpectations, IPv6) {
    FtpExpectations e;
    auto s = session(e);
    e.expect(v6("fd00::1"), v6("fd00:1::1"), v6("fd00:1::1"), 2121, s, 1, 0);
    EXPECT_EQ(e.claim(v6("fd00::1"), v6("fd00:1::1"), 2121, 1), s);
}

TEST(FtpExpectations, WorkersClaimConcurrently) {
    // Several threads add and claim at once (workers of different queues):
    // every expectation is claimed at most once, and the table stays bounded.
    FtpExpectations e(256, 30'000);
    auto s = session(e);
    constexpr int kThreads = 4, kEach = 2000;
    std::atomic<int> claimed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            std::mt19937 rng(t);
            for (int i = 0; i < kEach; ++i) {
                uint16_t port = uint16_t(1 + rng() % 512);
                if (t % 2 == 0)
                    e.expect(v4("10.0.0.1"), v4("10.0.1.1"), v4("10.0.1.1"), port, s, 1, 1000);
                else if (e.claim(v4("10.0.0.1"), v4("10.0.1.1"), port, 1000))
                    ++claimed;
            }
        });
    for (auto& t : threads)
        t.join();
    EXPECT_LE(e.size(), 256u);
    EXPECT_EQ(uint64_t(claimed.load()), e.counters().claimed.load());
    EXPECT_EQ(e.counters().expectations.load(), uint64_t(kThreads / 2 * kEach));
    EXPECT_LE(claimed.load(), kThreads / 2 * kEach);
}

TEST(FtpSession, TransfersAndTheirOutcome) {
    int wakes = 0;
    FtpCounters counters;
    FtpSession s([&] { ++wakes; }, &counters);
    EXPECT_FALSE(s.bind()) << "no transfer command yet";
    FtpTransfer t;
    t.kind = FtpTransfer::Kind::Download;
    t.path = "/pub/a";
    uint64_t n = s.begin(t);
    std::optional<FtpTransfer> bound = s.bind();
    ASSERT_TRUE(bound);
    EXPECT_EQ(bound->number, n);
    EXPECT_FALSE(s.bind()) << "one data connection per transfer";
    EXPECT_EQ(s.transfer(n)->state, FtpTransfer::State::Receiving);
    s.finish(n, true, "refused");
    EXPECT_EQ(wakes, 1);
    EXPECT_TRUE(s.transfer(n)->blocked);
    EXPECT_EQ(s.transfer(n)->notice, "refused");
    s.forget(n);
    EXPECT_FALSE(s.transfer(n));
    s.finish(n, false, {});
    EXPECT_EQ(wakes, 1) << "a forgotten transfer wakes nobody";
}

}  // namespace
}  // namespace nfqscan
