// SpamChecker and the rspamd HTTP call (nfqscan/spam.h).
#include <curl/curl.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <utility>

#include "../scan/scan_pool.h"
#include "nfqscan/object_buffer.h"
#include "nfqscan/spam.h"

namespace nfqscan {

namespace {

// A reply larger than this is not a check result.
constexpr size_t kMaxReply = 1 << 20;

struct CurlHandle {
    CURL* easy = curl_easy_init();
    curl_slist* headers = nullptr;
    ~CurlHandle() {
        curl_slist_free_all(headers);
        if (easy) curl_easy_cleanup(easy);
    }
    void add_header(std::string_view name, std::string_view value) {
        // A value from the wire ends at its first control character: it must
        // not add a header line to the request.
        std::string line(name);
        line += ": ";
        for (char ch : value) {
            if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) break;
            line += ch;
        }
        if (curl_slist* l = curl_slist_append(headers, line.c_str())) headers = l;
    }
};

size_t collect(char* data, size_t size, size_t count, void* user) {
    auto* out = static_cast<std::string*>(user);
    const size_t n = size * count;
    if (out->size() + n > kMaxReply) return 0;  // aborts the transfer
    out->append(data, n);
    return n;
}

void curl_global_once() {
    static const CURLcode result = curl_global_init(CURL_GLOBAL_DEFAULT);
    (void)result;  // a failure shows as curl_easy_init() returning null
}

}  // namespace

ScanVerdict check_with_rspamd(const SpamQuery& query) {
    curl_global_once();
    CurlHandle h;
    if (!h.easy) return ScanVerdict::failed(ScanError::OutOfResource, "rspamd: no curl handle");
    std::string url = query.url;
    while (!url.empty() && url.back() == '/')
        url.pop_back();
    url += "/checkv2";
    if (!query.from.empty()) h.add_header("From", query.from);
    for (const std::string& rcpt : query.rcpts)
        h.add_header("Rcpt", rcpt);
    if (!query.ip.empty()) h.add_header("IP", query.ip);
    if (!query.helo.empty()) h.add_header("Helo", query.helo);
    if (!query.queue_id.empty()) h.add_header("Queue-Id", query.queue_id);
    h.add_header("Expect", "");  // no 100-continue round trip
    std::span<const uint8_t> body;
    if (query.message) body = query.message->bytes();
    std::string reply;
    curl_easy_setopt(h.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h.easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h.easy, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h.easy, CURLOPT_HTTPHEADER, h.headers);
    curl_easy_setopt(h.easy, CURLOPT_POST, 1L);
    curl_easy_setopt(h.easy, CURLOPT_POSTFIELDS, reinterpret_cast<const char*>(body.data()));
    curl_easy_setopt(h.easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
    curl_easy_setopt(h.easy, CURLOPT_TIMEOUT_MS, long(query.timeout_ms));
    curl_easy_setopt(h.easy, CURLOPT_CONNECTTIMEOUT_MS, long(query.timeout_ms));
    curl_easy_setopt(h.easy, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h.easy, CURLOPT_WRITEDATA, &reply);
    const CURLcode rc = curl_easy_perform(h.easy);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return ScanVerdict::failed(
            ScanError::Timeout,
            "rspamd: no answer within " + std::to_string(query.timeout_ms) + " ms");
    if (rc != CURLE_OK)
        return ScanVerdict::failed(ScanError::EngineNotReady,
                                   std::string("rspamd: ") + curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(h.easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
        return ScanVerdict::failed(ScanError::EngineNotReady,
                                   "rspamd: HTTP status " + std::to_string(status));
    return parse_rspamd_reply(reply, query.threshold);
}

SpamChecker::SpamChecker(uint32_t threads, size_t queue_length)
    : pool_(std::make_unique<ScanPool>(threads, queue_length)) {
    curl_global_once();
}

SpamChecker::~SpamChecker() = default;

void SpamChecker::submit(SpamQuery query, std::shared_ptr<CompletionSink> sink, ScanCallback done) {
    auto job = [query = std::move(query), sink, done]() mutable {
        const auto start = std::chrono::steady_clock::now();
        ScanVerdict v = check_with_rspamd(query);
        v.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::steady_clock::now() - start);
        sink->post([done = std::move(done), v = std::move(v)] { done(v); });
    };
    if (!pool_->try_push(job)) {
        sink->post([done] {
            done(ScanVerdict::failed(ScanError::Timeout, "rspamd: the spam check queue is full"));
        });
    }
}

}  // namespace nfqscan
