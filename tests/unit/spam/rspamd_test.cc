// The rspamd reply parser and the HTTP call's failure modes (the lab test
// tests/lab/test_spam.py talks to a real rspamd).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nfqscan/object_buffer.h"
#include "nfqscan/spam.h"
#include "nfqscan/unique_fd.h"

namespace nfqscan {
namespace {

// What rspamd 3.4 answers for its GTUBE test message (trimmed).
const std::string kGtubeReply = R"({"is_skipped":false,"score":0.0,"required_score":15.0,
  "action":"reject","thresholds":{"reject":15.0,"add header":6.0},
  "symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0},
             "MISSING_DATE":{"name":"MISSING_DATE","score":1.0}},
  "messages":{"smtp_message":"Gtube pattern"},"time_real":0.01})";

TEST(RspamdReply, ActionRejectIsSpam) {
    ScanVerdict v = parse_rspamd_reply(kGtubeReply, 0);
    ASSERT_TRUE(v.is_infected());
    EXPECT_EQ(v.detection.category, ThreatCategory::Spam);
    EXPECT_EQ(v.detection.engine, ScanEngineKind::Rspamd);
    EXPECT_EQ(v.detection.signature, "rspamd: reject");
    EXPECT_EQ(v.detection.layer_path, "MISSING_DATE(1.00), GTUBE(0.00)") << "highest score first";
    ASSERT_TRUE(v.detection.score);
    EXPECT_EQ(*v.detection.score, 0.0);
}

TEST(RspamdReply, ActionsMapToSpamOrNot) {
    auto reply = [](std::string action, double score) {
        return R"({"action":")" + action + R"(","score":)" + std::to_string(score) + "}";
    };
    for (std::string a : {"reject", "add header", "rewrite subject"})
        EXPECT_TRUE(parse_rspamd_reply(reply(a, 1), 0).is_infected()) << a;
    for (std::string a : {"no action", "greylist", "soft reject"})
        EXPECT_TRUE(parse_rspamd_reply(reply(a, 100), 0).is_clean()) << a;
}

TEST(RspamdReply, ThresholdDecidesByScoreWhenSet) {
    auto reply = [](std::string action, double score) {
        return R"({"action":")" + action + R"(","score":)" + std::to_string(score) + "}";
    };
    EXPECT_TRUE(parse_rspamd_reply(reply("no action", 5.0), 5.0).is_infected());
    EXPECT_TRUE(parse_rspamd_reply(reply("reject", 4.9), 5.0).is_clean());
}

TEST(RspamdReply, GarbageIsEngineNotReady) {
    for (std::string body : {"", "not json", "[]", R"({"score":"x","action":"reject"})",
                             R"({"action":"reject"})", R"({"score":1})", "{\"score\":1e999}"}) {
        ScanVerdict v = parse_rspamd_reply(body, 0);
        ASSERT_TRUE(v.is_error()) << body;
        EXPECT_EQ(v.error, ScanError::EngineNotReady) << body;
    }
}

SpamQuery query_to(const std::string& url, uint32_t timeout_ms) {
    SpamQuery q;
    q.url = url;
    q.timeout_ms = timeout_ms;
    auto m = ObjectBuffer::make(1 << 20);
    std::string text = "Subject: x\r\n\r\nbody\r\n";
    (void)m->append({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
    q.message = m;
    q.from = "<a@lab.test>\r\nInjected: 1";  // cut at the line break
    return q;
}

// A listening socket on loopback that never accepts: a connection completes
// (the kernel's backlog) and no answer ever comes.
struct SilentServer {
    UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    uint16_t port = 0;
    SilentServer() {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 ||
            ::listen(fd.get(), 8) != 0 ||
            ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
            return;
        port = ntohs(a.sin_port);
    }
};

TEST(RspamdCall, NobodyListeningIsEngineNotReady) {
    SilentServer s;  // bound, then closed: a port nobody listens on
    ASSERT_NE(s.port, 0);
    const uint16_t port = s.port;
    s.fd.reset();
    ScanVerdict v = check_with_rspamd(query_to("http://127.0.0.1:" + std::to_string(port), 5000));
    ASSERT_TRUE(v.is_error());
    EXPECT_EQ(v.error, ScanError::EngineNotReady) << v.reason;
}

TEST(RspamdCall, AnEngineThatNeverAnswersIsATimeout) {
    SilentServer s;
    ASSERT_NE(s.port, 0);
    ScanVerdict v = check_with_rspamd(query_to("http://127.0.0.1:" + std::to_string(s.port), 300));
    ASSERT_TRUE(v.is_error());
    EXPECT_EQ(v.error, ScanError::Timeout) << v.reason;
}

}  // namespace
}  // namespace nfqscan
