// Spam engines (issue 11): asking an external spam filter whether a mail
// message is spam. Today one engine, rspamd, reached over its HTTP check
// protocol (POST /checkv2, libcurl), with the envelope in the request
// headers as rspamd expects them (From, Rcpt, IP, Helo, Queue-Id).
//
// The call runs on the SpamChecker's own small pool, never on a queue
// worker, and is bounded by a timeout: an engine that is down or slow gives
// an error verdict (engine-not-ready, timeout) that the protocol's fallback
// turns into pass (the default) or block; a mail never waits longer than the
// timeout for it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/scan.h"

namespace nfqscan {

class ObjectBuffer;
class ScanPool;

// [spam]: which engine judges mail messages beside the YARA spam rules.
struct SpamConfig {
    enum class Engine : uint8_t { None, Rspamd };
    Engine engine = Engine::None;
    std::string rspamd_url = "http://127.0.0.1:11333";
    // 0: rspamd's own action decides (reject, add header, rewrite subject
    // are spam; greylist, soft reject, no action are not); above 0: spam
    // when the score reaches it, whatever the action.
    double threshold = 0;
    uint32_t timeout_ms = 5000;  // the whole request, connection included
    std::string tag = "[SPAM]";  // Subject prefix of on_spam = "tag"
};
std::string_view spam_engine_name(SpamConfig::Engine e);  // "none" | "rspamd"

// One message to judge, with what the engine is told about its envelope.
struct SpamQuery {
    std::string url;  // the engine's base URL ("http://127.0.0.1:11333")
    uint32_t timeout_ms = 5000;
    double threshold = 0;
    std::shared_ptr<const ObjectBuffer> message;
    std::string from;                // envelope sender, "<a@example.com>"; empty: none
    std::vector<std::string> rcpts;  // envelope recipients
    std::string ip;                  // the SMTP client's address
    std::string helo;                // its HELO/EHLO name
    std::string queue_id;            // what the event log calls the message
};

// rspamd's reply (JSON of /checkv2) as a verdict: infected (category spam,
// engine rspamd, signature "rspamd: <action>", its score) or clean; a reply
// that is not a check result is an error verdict (engine-not-ready). Bounded
// by the body it is given; never throws.
ScanVerdict parse_rspamd_reply(std::string_view body, double threshold);

// The HTTP request, blocking for at most query.timeout_ms (libcurl).
ScanVerdict check_with_rspamd(const SpamQuery& query);

// A small pool of threads that make the engine calls; the verdict goes back
// through `sink` as scans do. A full queue is a timeout verdict at once (the
// engine is too slow for the traffic), never a wait.
class SpamChecker {
  public:
    explicit SpamChecker(uint32_t threads = 4, size_t queue_length = 256);
    ~SpamChecker();
    SpamChecker(const SpamChecker&) = delete;
    SpamChecker& operator=(const SpamChecker&) = delete;

    void submit(SpamQuery query, std::shared_ptr<CompletionSink> sink, ScanCallback done);

  private:
    std::unique_ptr<ScanPool> pool_;
};

}  // namespace nfqscan
