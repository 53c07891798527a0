// The HTTP inspector against a simulated engine (wire.h: the engine's side
// of the StreamTransform contract, the peers' bytes in random pieces), and a
// fake host that records what the inspector asks of it.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "../../../src/proto/http/http_framer.h"
#include "../../../src/proto/http/http_inspector.h"
#include "nfqscan/inspector.h"
#include "wire.h"

namespace nfqscan {
namespace {

using namespace wiretest;

class FakeHost : public RecordingHost {
  public:
    Wire* wire = nullptr;
    ProtocolPolicy policy_;
    MessageTemplates templates_;
    ScanLimits limits_;
    std::vector<std::pair<Direction, std::string>> closes;
    int resets = 0;
    std::vector<ReleaseReason> releases;
    std::vector<ObjectInfo> allowlisted;
    uint64_t now = 1'000'000;  // the host's clock (ms)
    bool ticks = false;        // the inspector wants on_tick()
    // release() lets every later byte pass without the inspector, as the
    // worker does; false: the inspector keeps being shown the bytes.
    bool release_wire = false;

    void send_and_close(Direction d, std::span<const uint8_t> bytes) override;
    void reset_both() override;
    // HTTP never speaks for a peer.
    void send(Direction, std::span<const uint8_t>) override { ADD_FAILURE() << "send()"; }
    void redrive() override { ADD_FAILURE() << "redrive()"; }
    void notify(Notification) override { ADD_FAILURE() << "notify()"; }
    void note_allowlisted(const ObjectInfo& info) override { allowlisted.push_back(info); }
    void release(ReleaseReason reason) override {
        releases.push_back(reason);
        if (release_wire) wire->release();
    }
    const ProtocolPolicy& policy() const override { return policy_; }
    const MessageTemplates& messages() const override { return templates_; }
    const ScanLimits& limits() const override { return limits_; }
    std::string render_message(std::string_view name, const MessageFields& f) const override {
        return "<html>" + std::string(name) + " detection=" + f.detection +
               " category=" + f.category + " object=" + f.object + " id=" + f.event_id +
               " client=" + f.client + "</html>";
    }
    MessageFields message_fields() const override {
        MessageFields f;
        f.client = "10.0.0.1:40000";
        f.server = "10.0.0.2:80";
        f.protocol = "http";
        return f;
    }
    uint64_t now_ms() const override { return now; }
    void want_ticks(bool on) override { ticks = on; }
};

void FakeHost::reset_both() {
    ++resets;
    wire->close_with(C2S, "");
}

void FakeHost::send_and_close(Direction d, std::span<const uint8_t> bytes) {
    closes.emplace_back(d, text_of(bytes));
    wire->close_with(d, text_of(bytes));
}

struct Flow {
    FakeHost host;
    HttpInspector inspector{host};
    Wire wire{inspector, host, 1u << 20};  // the pending limit
    std::mt19937 rng{1};

    void verdict(size_t scan_index, const ScanVerdict& v) {
        inspector.on_verdict(host.scans.at(scan_index).id, v);
        wire.redrive();
    }
    // The host's clock advances by `ms` in ticks of a second, as the worker's
    // timer does: each tick the inspector asked for, and a redrive when it
    // has something to map.
    void advance(uint64_t ms) {
        for (uint64_t step = 0; step < ms; step += 1000) {
            host.now += std::min<uint64_t>(1000, ms - step);
            if (host.ticks && inspector.on_tick(host.now)) wire.redrive();
        }
    }
    void client(const std::string& s) { wire.send(C2S, s, rng); }
    void server(const std::string& s) { wire.send(S2C, s, rng); }
};

std::string get(const std::string& path, const std::string& extra = "") {
    return "GET " + path + " HTTP/1.1\r\nHost: example.org\r\n" + extra + "\r\n";
}
std::string ok(const std::string& body, const std::string& extra = "") {
    return "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream; x=1\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}
std::string chunked(const std::vector<std::string>& chunks, const std::string& trailers = "") {
    std::string out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    char size[32];
    for (const std::string& c : chunks) {
        if (c.empty()) continue;  // a chunk of size 0 ends the body
        snprintf(size, sizeof size, "%zx\r\n", c.size());
        out += size + c + "\r\n";
    }
    return out + "0\r\n" + trailers + "\r\n";
}

// -- Framing ------------------------------------------------------------------

class Collect : public HttpBodyListener {
  public:
    void on_body(uint64_t, std::span<const uint8_t> data) override { body += text_of(data); }
    std::string body;
};

TEST(HttpFramer, StopsAtHeadAndMessageEndWithExactOffsets) {
    std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    std::string wire = head + "hello" + "HTTP/1.1 204 No Content\r\n\r\n";
    HttpFramer f(HttpFramer::Kind::Response);
    Collect body;
    EXPECT_EQ(f.parse(0, bytes_of(wire), &body), HttpFramer::Event::HeadComplete);
    EXPECT_EQ(f.parsed(), head.size());
    EXPECT_EQ(f.head().status, 200u);
    EXPECT_EQ(f.head().content_length, 5u);
    EXPECT_EQ(f.parse(0, bytes_of(wire), &body), HttpFramer::Event::MessageComplete);
    EXPECT_EQ(f.parsed(), head.size() + 5);
    EXPECT_EQ(body.body, "hello");
    EXPECT_EQ(f.parse(0, bytes_of(wire), &body), HttpFramer::Event::HeadComplete);
    EXPECT_EQ(f.message_begin(), head.size() + 5);
    EXPECT_EQ(f.parse(0, bytes_of(wire), &body), HttpFramer::Event::MessageComplete);
    EXPECT_EQ(f.parsed(), wire.size());
}

TEST(HttpFramer, DechunksBodyAndSkipsTrailers) {
    std::string wire = chunked({"abc", "defgh"}, "X-Sum: 1\r\n");
    HttpFramer f(HttpFramer::Kind::Response);
    Collect body;
    EXPECT_EQ(f.parse(0, bytes_of(wire), &body), HttpFramer::Event::HeadComplete);
    EXPECT_TRUE(f.head().chunked);
    EXPECT_EQ(f.parse(0, bytes_of(wire), &body), HttpFramer::Event::MessageComplete);
    EXPECT_EQ(body.body, "abcdefgh");
    EXPECT_EQ(f.parsed(), wire.size());
}

TEST(HttpFramer, FeedsEachByteOnceAcrossPieces) {
    std::string wire = get("/a") + get("/b");
    HttpFramer f(HttpFramer::Kind::Request);
    std::vector<HttpFramer::Event> events;
    // Pieces of one byte; the caller shows everything not consumed yet.
    for (size_t end = 1; end <= wire.size(); ++end) {
        for (;;) {
            auto e = f.parse(0, bytes_of(wire.substr(0, end)), nullptr);
            if (e == HttpFramer::Event::NeedMore) break;
            events.push_back(e);
        }
    }
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(f.parsed(), wire.size());
    EXPECT_EQ(f.head().url, "/b");
}

TEST(HttpFramer, FinishInsideAHeadConsumesNothingMore) {
    // Found by http_inspector_fuzz: libhttp-parser reports its end-of-input
    // error with one byte consumed, and parsed() went past the input.
    std::string wire = "HT";
    HttpFramer f(HttpFramer::Kind::Response);
    EXPECT_EQ(f.parse(0, bytes_of(wire), nullptr), HttpFramer::Event::NeedMore);
    EXPECT_EQ(f.finish(nullptr), HttpFramer::Event::Error);
    EXPECT_EQ(f.parsed(), wire.size());
}

TEST(HttpInspector, ResponseCutShortInItsStatusLineMapsOnlyWhatWasSent) {
    Flow flow;
    flow.client(get("/a"));
    flow.wire.deliver(S2C, "HT", true);
    EXPECT_EQ(flow.wire.out(S2C), "HT");
    EXPECT_EQ(flow.wire.dir(S2C).overmapped, 0u);
}

TEST(HttpFramer, HeaderCountIsBounded) {
    std::string wire = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 500; ++i)
        wire += "X-" + std::to_string(i) + ": v\r\n";
    wire += "\r\n";
    HttpFramer f(HttpFramer::Kind::Request);
    EXPECT_EQ(f.parse(0, bytes_of(wire), nullptr), HttpFramer::Event::Error);
    EXPECT_NE(f.error().find("too many"), std::string::npos);
}

// -- Responses ----------------------------------------------------------------

TEST(HttpInspector, ContentLengthResponseIsHeldUntilItsCleanVerdict) {
    Flow t;
    std::string req = get("/dir/file.bin");
    std::string resp = ok("0123456789", "Content-Disposition: attachment; filename=\"x.exe\"\r\n");
    t.client(req);
    EXPECT_EQ(t.wire.out(C2S), req);  // a request head goes on at once
    t.server(resp);
    EXPECT_EQ(t.wire.out(S2C), "");  // head and body wait for the verdict
    EXPECT_TRUE(t.wire.dir(S2C).relay);
    ASSERT_EQ(t.host.scans.size(), 1u);
    const auto& s = t.host.scans[0];
    EXPECT_EQ(s.bytes, "0123456789");
    EXPECT_EQ(s.info.protocol, Service::Http);
    EXPECT_EQ(s.info.direction, S2C);
    EXPECT_EQ(s.info.name, "http://example.org/dir/file.bin");
    EXPECT_EQ(s.info.file_name, "x.exe");
    EXPECT_EQ(s.info.mime_type, "application/octet-stream");
    EXPECT_EQ(s.info.declared_size, 10u);
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_FALSE(t.wire.dir(S2C).relay);
    EXPECT_TRUE(t.host.records.empty());  // clean objects are not logged
}

TEST(HttpInspector, FileNameFallsBackToTheUrlPathsLastSegment) {
    Flow t;
    t.client(get("/a/b/setup.msi?x=1"));
    t.server(ok("abc"));
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].info.file_name, "setup.msi");
}

TEST(HttpInspector, ChunkedResponseWithTrailersIsScannedDechunked) {
    Flow t;
    std::string resp = chunked({"hello ", "chunked ", "world"}, "X-Checksum: 42\r\n");
    t.client(get("/c"));
    t.server(resp);
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].bytes, "hello chunked world");
    EXPECT_EQ(t.wire.out(S2C), "");
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), resp);  // the wire form, chunks and trailers, unchanged
}

TEST(HttpInspector, CloseDelimitedResponseEndsAtTheServersFin) {
    Flow t;
    std::string resp = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
    t.client(get("/close"));
    t.server(resp);
    EXPECT_TRUE(t.host.scans.empty());  // the end is not known yet
    t.wire.fin(S2C);
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].bytes, "until the end");
    EXPECT_EQ(t.wire.out(S2C), "");  // kept past the FIN while relaying
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_EQ(t.wire.dir(S2C).forced, 0u);
}

TEST(HttpInspector, BodyCutShortByTheFinIsScannedAsReceived) {
    Flow t;
    std::string resp = ok(std::string(100, 'z'));
    std::string sent = resp.substr(0, resp.size() - 40);
    t.client(get("/cut"));
    t.server(sent);
    t.wire.fin(S2C);
    ASSERT_EQ(t.host.scans.size(), 1u);  // what the client would get is judged
    EXPECT_EQ(t.host.scans[0].bytes, std::string(60, 'z'));
    EXPECT_EQ(t.wire.out(S2C), "");
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), sent);
    EXPECT_EQ(t.host.resets, 0);
}

TEST(HttpInspector, FullRelayStoreWhileHoldingIsOutOfResource) {
    Flow t;
    std::string resp = ok(std::string(1000, 'r'));
    t.client(get("/huge"));
    t.server(resp.substr(0, 500));
    EXPECT_TRUE(t.wire.dir(S2C).relay);
    t.wire.stall(S2C);  // while relaying: the store is full
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].what, "out-of-resource");
    EXPECT_EQ(t.wire.out(S2C), resp.substr(0, 500));
    EXPECT_FALSE(t.wire.dir(S2C).relay);
    t.server(resp.substr(500));
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_TRUE(t.host.scans.empty());
}

TEST(HttpInspector, ResponseToHeadHasNoBodyAndIsNotScanned) {
    Flow t;
    // A HEAD response announces a length it does not send; the next
    // response must frame from right after its head.
    std::string head_resp = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    t.client("HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n" + get("/small"));
    t.server(head_resp);
    EXPECT_EQ(t.wire.out(S2C), head_resp);
    t.server(ok("xyz"));
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].bytes, "xyz");
}

TEST(HttpInspector, NoContentAndNotModifiedPassWithoutScan) {
    Flow t;
    std::string r204 = "HTTP/1.1 204 No Content\r\n\r\n";
    std::string r304 = "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n";
    t.client(get("/a") + get("/b") + get("/c"));
    t.server(r204 + r304);
    EXPECT_EQ(t.wire.out(S2C), r204 + r304);
    t.server(ok("body"));
    EXPECT_EQ(t.host.scans.size(), 1u);
}

TEST(HttpInspector, ExpectContinueInterimResponsePassesAndTheUploadIsScanned) {
    Flow t;
    std::string head =
        "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
    t.client(head);
    EXPECT_EQ(t.wire.out(C2S), head);
    t.server(cont);
    EXPECT_EQ(t.wire.out(S2C), cont);  // at once: the client waits for it
    t.client("data");
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].info.direction, C2S);
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(C2S), head + "data");
    std::string final_resp = ok("done");
    t.server(final_resp);  // still answers the PUT: the 100 did not consume it
    ASSERT_EQ(t.host.scans.size(), 2u);
    EXPECT_EQ(t.host.scans[1].info.name, "http://h/up");
}

TEST(HttpInspector, KeepAliveInfectedMiddleResponseBecomesTheBlockPage) {
    Flow t;
    std::string r1 = ok("first clean"), r2 = ok(kEicar), r3 = ok("third clean");
    t.client(get("/1") + get("/2") + get("/3"));
    t.server(r1 + r2 + r3);
    ASSERT_EQ(t.host.scans.size(), 1u);  // one object at a time
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), r1);
    ASSERT_EQ(t.host.scans.size(), 2u);
    EXPECT_EQ(t.host.scans[1].bytes, kEicar);
    t.verdict(1, virus());
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_EQ(t.host.closes[0].first, S2C);
    ASSERT_EQ(t.host.records.size(), 1u);
    EXPECT_EQ(t.host.records[0].action, "block");
    EXPECT_EQ(t.host.records[0].info.name, "http://example.org/2");
    const std::string& page = t.host.closes[0].second;
    EXPECT_TRUE(page.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    EXPECT_NE(page.find(t.host.records[0].event_id), std::string::npos);
    EXPECT_NE(page.find("Eicar-Test-Signature"), std::string::npos);
    EXPECT_EQ(t.wire.out(S2C), r1 + page);  // the first byte-identical, then the page
    EXPECT_EQ(t.host.scans.size(), 2u);     // the third is never parsed
    t.server("more");
    t.client(get("/4"));
    EXPECT_EQ(t.wire.mapped_after_close(), 0u);
}

TEST(HttpInspector, BlockPageIsACompleteResponseThatClosesTheConnection) {
    Flow t;
    t.client(get("/v"));
    t.server(ok(kEicar));
    t.verdict(0, virus());
    const std::string& page = t.host.closes.at(0).second;
    size_t head_end = page.find("\r\n\r\n");
    ASSERT_NE(head_end, std::string::npos);
    std::string head = page.substr(0, head_end + 4), body = page.substr(head_end + 4);
    EXPECT_NE(head.find("Content-Type: text/html; charset=utf-8\r\n"), std::string::npos);
    EXPECT_NE(head.find("Content-Length: " + std::to_string(body.size()) + "\r\n"),
              std::string::npos);
    EXPECT_NE(head.find("Connection: close\r\n"), std::string::npos);
    EXPECT_NE(head.find("Cache-Control: no-store\r\n"), std::string::npos);
    EXPECT_NE(body.find("object=http://example.org/v"), std::string::npos);
    EXPECT_NE(body.find("client=10.0.0.1:40000"), std::string::npos);  // the host's fields
    // The framer itself reads it as one complete response.
    HttpFramer f(HttpFramer::Kind::Response);
    EXPECT_EQ(f.parse(0, bytes_of(page), nullptr), HttpFramer::Event::HeadComplete);
    EXPECT_EQ(f.head().status, 403u);
    EXPECT_EQ(f.parse(0, bytes_of(page), nullptr), HttpFramer::Event::MessageComplete);
    EXPECT_EQ(f.parsed(), page.size());
}

TEST(HttpInspector, PipelinedRequestsAreAnsweredInOrder) {
    Flow t;
    std::string reqs =
        get("/one") + "HEAD /two HTTP/1.1\r\nHost: example.org\r\n\r\n" + get("/three");
    t.client(reqs);
    EXPECT_EQ(t.wire.out(C2S), reqs);
    std::string r1 = ok("1"), r2 = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", r3 = ok("333");
    t.server(r1 + r2 + r3);
    t.verdict(0, ScanVerdict::clean());
    ASSERT_EQ(t.host.scans.size(), 2u);
    EXPECT_EQ(t.host.scans[0].info.name, "http://example.org/one");
    EXPECT_EQ(t.host.scans[1].info.name, "http://example.org/three");
    EXPECT_EQ(t.host.scans[1].bytes, "333");
    t.verdict(1, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), r1 + r2 + r3);
}

TEST(HttpInspector, ErrorVerdictFollowsTheFallbackOfItsCategory) {
    Flow t;
    std::string resp = ok("abc");
    t.client(get("/e"));
    t.server(resp);
    t.verdict(0, ScanVerdict::failed(ScanError::Timeout, "slow"));
    EXPECT_EQ(t.wire.out(S2C), resp);  // timeout: pass by default, and logged
    ASSERT_EQ(t.host.records.size(), 1u);
    EXPECT_EQ(t.host.records[0].action, "pass");
}

// -- Uploads ------------------------------------------------------------------

std::string post(const std::string& body, const std::string& type = "application/octet-stream") {
    return "POST /upload HTTP/1.1\r\nHost: files.example\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST(HttpInspector, CleanUploadReachesTheServerAfterItsVerdict) {
    Flow t;
    std::string body(5000, 'u');
    std::string req = post(body);
    t.client(req);
    std::string head = req.substr(0, req.size() - body.size());
    EXPECT_EQ(t.wire.out(C2S), head);  // the body is kept
    EXPECT_TRUE(t.wire.dir(C2S).relay);
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].bytes, body);
    EXPECT_EQ(t.host.scans[0].info.name, "http://files.example/upload");
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(C2S), req);
    EXPECT_FALSE(t.wire.dir(C2S).relay);
}

TEST(HttpInspector, InfectedUploadNeverReachesTheServer) {
    Flow t;
    std::string req = post(kEicar);
    t.client(req);
    t.verdict(0, virus());
    EXPECT_EQ(t.wire.out(C2S).find("EICAR"), std::string::npos);
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_EQ(t.host.closes[0].first, S2C);  // the client gets the page, the server a RST
    EXPECT_TRUE(t.host.closes[0].second.starts_with("HTTP/1.1 403"));
    EXPECT_EQ(t.host.records.at(0).info.direction, C2S);
    t.client(get("/after"));
    EXPECT_EQ(t.wire.mapped_after_close(), 0u);
}

std::string form(const std::string& boundary,
                 const std::vector<std::pair<std::string, std::string>>& files) {
    std::string body =
        "--" + boundary + "\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n";
    for (const auto& [name, content] : files)
        body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"f\"; filename=\"" +
                name + "\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + "\r\n";
    return body + "--" + boundary + "--\r\n";
}

TEST(HttpInspector, MultipartUploadScansEachFileByItsName) {
    Flow t;
    std::string body = form("XyZ123", {{"a.txt", "alpha file"}, {"b.com", kEicar}});
    std::string req = post(body, "multipart/form-data; boundary=XyZ123");
    t.client(req);
    ASSERT_EQ(t.host.scans.size(), 2u);
    EXPECT_EQ(t.host.scans[0].info.file_name, "a.txt");
    EXPECT_EQ(t.host.scans[0].bytes, "alpha file");
    EXPECT_EQ(t.host.scans[1].info.file_name, "b.com");
    EXPECT_EQ(t.host.scans[1].bytes, kEicar);
    t.inspector.on_verdict(t.host.scans[1].id, virus());
    t.wire.redrive();
    EXPECT_TRUE(t.host.closes.empty());  // the request waits for all its files
    t.verdict(0, ScanVerdict::clean());
    ASSERT_EQ(t.host.closes.size(), 1u);  // the worst wins
    ASSERT_EQ(t.host.records.size(), 1u);
    EXPECT_EQ(t.host.records[0].info.file_name, "b.com");
    EXPECT_EQ(t.wire.out(C2S).find("alpha"), std::string::npos);
}

TEST(HttpInspector, MultipartUploadWithCleanFilesPassesWhole) {
    Flow t;
    std::string req = post(form("b0und", {{"one.pdf", "1111"}, {"two.doc", "2222"}}),
                           "multipart/form-data; boundary=b0und");
    t.client(req);
    ASSERT_EQ(t.host.scans.size(), 2u);
    t.verdict(1, ScanVerdict::clean());
    EXPECT_NE(t.wire.out(C2S), req);
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(C2S), req);
}

// -- Fallbacks ----------------------------------------------------------------

std::string partial(const std::string& body) {
    return "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-" +
           std::to_string(body.size() - 1) +
           "/9999\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST(HttpInspector, PartialContentPassesUnscannedWhenItsFallbackIsPass) {
    Flow t;
    std::string resp = partial("some range bytes");
    t.client(get("/r"));
    t.server(resp);
    EXPECT_TRUE(t.host.scans.empty());
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_FALSE(t.wire.dir(S2C).relay);
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].what, "partial");
    EXPECT_EQ(t.host.fallbacks[0].action, "pass");
}

TEST(HttpInspector, PartialContentIsBlockedWhenItsFallbackIsBlock) {
    Flow t;
    t.host.policy_.fallback[size_t(Category::Partial)] = Action::Block;
    t.client(get("/r"));
    t.server(partial("some range bytes"));
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_EQ(t.wire.out(S2C), t.host.closes[0].second);  // nothing of the 206
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].action, "block");
    EXPECT_NE(t.host.closes[0].second.find(t.host.fallbacks[0].event_id), std::string::npos);
}

TEST(HttpInspector, ContentSizeByHeaderFallsBackBeforeAnyBodyByte) {
    Flow t;
    t.host.limits_.max_content_size = 100;
    std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    t.client(get("/big"));
    t.server(head);
    EXPECT_EQ(t.wire.out(S2C), head);  // passed at once: nothing is held
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].what, "content-size");
    std::string body(1000, 'b');
    t.server(body);
    EXPECT_EQ(t.wire.out(S2C), head + body);
    EXPECT_TRUE(t.host.scans.empty());
}

TEST(HttpInspector, ContentSizeWhileStreamingChunkedFallsBackAtThatMoment) {
    Flow t;
    t.host.limits_.max_content_size = 100;
    std::string resp = chunked({std::string(60, 'a'), std::string(60, 'b'), std::string(60, 'c')});
    // The 101st decoded byte is the 41st of the second chunk.
    size_t over = resp.find(std::string(60, 'b')) + 40;
    t.client(get("/stream"));
    t.server(resp.substr(0, over));
    EXPECT_EQ(t.wire.out(S2C), "");  // 100 bytes: still held
    EXPECT_TRUE(t.host.fallbacks.empty());
    t.server(resp.substr(over, 1));
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].what, "content-size");
    EXPECT_EQ(t.wire.out(S2C), resp.substr(0, over + 1));
    EXPECT_FALSE(t.wire.dir(S2C).relay);
    t.server(resp.substr(over + 1));
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_TRUE(t.host.scans.empty());
    EXPECT_LT(t.inspector.memory_bytes(), 100u);  // no body kept (head text only)
}

TEST(HttpInspector, ContentSizeBlockFallbackSendsTheBlockPage) {
    Flow t;
    t.host.limits_.max_content_size = 10;
    t.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
    t.client(get("/big"));
    t.server(ok(std::string(11, 'x')));
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_NE(t.host.closes[0].second.find("content-size"), std::string::npos);
}

TEST(HttpInspector, AllowlistedUrlPassesAsItComesWithoutRelay) {
    Flow t;
    t.host.policy_.allow_urls = {"http://cdn.example.org/"};
    std::string resp = ok("trusted");
    t.client("GET /x HTTP/1.1\r\nHost: cdn.example.org\r\n\r\n");
    t.server(resp);
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_FALSE(t.wire.dir(S2C).relay);
    EXPECT_TRUE(t.host.scans.empty());
    ASSERT_EQ(t.host.allowlisted.size(), 1u);
    EXPECT_EQ(t.host.allowlisted[0].name, "http://cdn.example.org/x");
}

// -- Allowlisted connections ([protocols.http] allowlist_release) -------------

std::string get_from(const std::string& host, const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n";
}

// The server answers the next request with EICAR: scanned, blocked, and the
// flow never released.
void expect_eicar_blocked_unreleased(Flow& t) {
    t.server(ok(kEicar));
    ASSERT_EQ(t.host.scans.size(), 1u);
    t.verdict(0, virus());
    EXPECT_EQ(t.host.closes.size(), 1u);
    EXPECT_TRUE(t.host.releases.empty());
}

// A flow with `hosts` on allow_hosts whose host, like the worker, passes
// every byte without the inspector once it released the flow.
struct AllowlistFlow : Flow {
    explicit AllowlistFlow(std::vector<std::string> hosts) {
        host.release_wire = true;
        host.policy_.allow_hosts = std::move(hosts);
    }
};

TEST(HttpInspector, AllowlistedHostReleasesTheConnectionRightAfterItsRequest) {
    AllowlistFlow t({".example.org"});
    std::string req = get_from("cdn.example.org", "/x");
    t.client(req);
    // Released before any byte of the response: the response, and all the
    // client sends later on this connection, pass without the inspector.
    ASSERT_EQ(t.host.releases, std::vector<ReleaseReason>{ReleaseReason::Allowlisted});
    EXPECT_TRUE(t.wire.out(S2C).empty());
    std::string resp = ok(kEicar) + ok("second");
    std::string later = get_from("other.example.net", "/eicar");
    t.server(resp);
    t.client(later);
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_EQ(t.wire.out(C2S), req + later);
    EXPECT_TRUE(t.host.scans.empty());
    EXPECT_EQ(t.wire.dir(S2C).forced, 0u);
    EXPECT_FALSE(t.wire.closed());
}

TEST(HttpInspector, AfterAnAllowlistReleaseTheInspectorPassesEverythingItIsShown) {
    // A host that still shows the inspector bytes after release() (the
    // engine while it is needed): they pass, nothing is held or scanned.
    Flow t;
    t.host.policy_.allow_hosts = {"trusted.example"};
    std::string req = get_from("trusted.example", "/a");
    t.client(req);
    ASSERT_EQ(t.host.releases, std::vector<ReleaseReason>{ReleaseReason::Allowlisted});
    std::string resp = ok(kEicar) + "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    std::string later = get_from("evil.example", "/b") + "POST /u HTTP/1.1\r\nHost: x\r\n" +
                        "Content-Length: 5\r\n\r\nhello";
    t.client(later);
    t.server(resp);
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_EQ(t.wire.out(C2S), req + later);
    EXPECT_TRUE(t.host.scans.empty());
    EXPECT_FALSE(t.wire.dir(S2C).relay);
    EXPECT_FALSE(t.wire.dir(C2S).relay);
    EXPECT_EQ(t.host.releases.size(), 1u);
}

TEST(HttpInspector, AllowlistedHostThroughAProxyDoesNotReleaseTheConnection) {
    // Absolute URLs go to a forward proxy: its connection serves every origin.
    AllowlistFlow t({".example.org"});
    std::string resp = ok("trusted");
    t.client("GET http://cdn.example.org/x HTTP/1.1\r\nHost: cdn.example.org\r\n\r\n");
    t.server(resp);
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_EQ(t.host.allowlisted.size(), 1u);  // its own response still passes
    t.client("GET http://evil.example.net/eicar.com HTTP/1.1\r\nHost: evil.example.net\r\n\r\n");
    expect_eicar_blocked_unreleased(t);
}

TEST(HttpInspector, AllowedUrlDoesNotReleaseTheConnection) {
    Flow t;
    t.host.release_wire = true;
    t.host.policy_.allow_urls = {"http://example.org/pub/"};
    std::string resp = ok("public");
    t.client(get("/pub/a.txt"));
    t.server(resp);
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_EQ(t.host.allowlisted.size(), 1u);
    EXPECT_TRUE(t.host.releases.empty());
    // The next request on the connection is another URL: scanned.
    t.client(get("/eicar.com"));
    t.server(ok(kEicar));
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].info.name, "http://example.org/eicar.com");
    EXPECT_EQ(t.wire.out(S2C), resp);  // held
    t.verdict(0, virus());
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_TRUE(t.host.releases.empty());
}

TEST(HttpInspector, AllowlistReleaseFalsePassesAllowlistedObjectsOneByOne) {
    AllowlistFlow t({".example.org"});
    t.host.policy_.allowlist_release = false;
    std::string resp = ok("trusted");
    t.client(get_from("cdn.example.org", "/x"));
    t.server(resp);
    EXPECT_EQ(t.wire.out(S2C), resp);
    EXPECT_EQ(t.host.allowlisted.size(), 1u);
    t.client(get_from("other.example.net", "/eicar.com"));
    expect_eicar_blocked_unreleased(t);
}

TEST(HttpInspector, RequestPipelinedBehindTheAllowlistedOneIsJudgedByItsOwnHost) {
    AllowlistFlow t({"trusted.example"});
    // Both requests in the engine at once: no release point between them.
    t.wire.deliver(C2S, get_from("trusted.example", "/a") + get_from("other.example", "/b"));
    EXPECT_TRUE(t.host.releases.empty());
    std::string first = ok("trusted"), second = ok(kEicar);
    t.server(first + second);
    EXPECT_EQ(t.wire.out(S2C), first);
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].info.name, "http://other.example/b");
    t.verdict(0, virus());
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_NE(t.host.closes[0].second.find("Eicar-Test-Signature"), std::string::npos);
    EXPECT_TRUE(t.host.releases.empty());
}

TEST(HttpInspector, PartOfARequestBehindTheAllowlistedOneHoldsTheRelease) {
    AllowlistFlow t({"trusted.example"});
    // The next request's head has begun: its Host is not known yet.
    t.wire.deliver(C2S, get_from("trusted.example", "/a") + "GET /b HTTP/1.1\r\nHo");
    EXPECT_TRUE(t.host.releases.empty());
    t.wire.deliver(C2S, "st: other.example\r\n\r\n");
    EXPECT_TRUE(t.host.releases.empty());
    t.server(ok("trusted"));
    t.server(ok(kEicar));
    ASSERT_EQ(t.host.scans.size(), 1u);
    EXPECT_EQ(t.host.scans[0].info.name, "http://other.example/b");
}

TEST(HttpInspector, AllowlistedRequestBehindAHeldResponseReleasesAfterItsVerdict) {
    AllowlistFlow t({"trusted.example"});
    std::string req1 = get_from("other.example", "/file"), req2 = get_from("trusted.example", "/a");
    t.client(req1);
    std::string resp1 = ok("scanned body");
    t.server(resp1);  // held for its verdict
    ASSERT_EQ(t.host.scans.size(), 1u);
    t.client(req2);  // queued behind /file, whose response is held
    EXPECT_TRUE(t.host.releases.empty());
    EXPECT_TRUE(t.wire.out(S2C).empty());
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), resp1);
    // The only request left awaiting its response is the allowlisted one.
    ASSERT_EQ(t.host.releases, std::vector<ReleaseReason>{ReleaseReason::Allowlisted});
    std::string resp2 = ok(kEicar);
    t.server(resp2);
    EXPECT_EQ(t.wire.out(S2C), resp1 + resp2);
    EXPECT_EQ(t.wire.out(C2S), req1 + req2);
    EXPECT_EQ(t.host.scans.size(), 1u);
}

TEST(HttpInspector, AllowlistedRequestWhileAnEarlierOneAwaitsItsResponseWaitsForIt) {
    AllowlistFlow t({"trusted.example"});
    t.client(get_from("other.example", "/file"));
    t.client(get_from("trusted.example", "/a"));  // pipelined, but alone in the engine
    EXPECT_TRUE(t.host.releases.empty());         // /file's response must be scanned
    expect_eicar_blocked_unreleased(t);
}

TEST(HttpInspector, HeldUploadToAnotherHostHoldsTheRelease) {
    AllowlistFlow t({"trusted.example"});
    std::string upload = "POST /u HTTP/1.1\r\nHost: other.example\r\nContent-Length: " +
                         std::to_string(kEicar.size()) + "\r\n\r\n" + kEicar;
    t.client(upload);
    ASSERT_EQ(t.host.scans.size(), 1u);
    t.client(get_from("trusted.example", "/a"));  // behind the upload awaiting its verdict
    EXPECT_TRUE(t.host.releases.empty());
    t.verdict(0, virus());
    EXPECT_EQ(t.host.closes.size(), 1u);
    EXPECT_EQ(t.wire.out(C2S).find(kEicar), std::string::npos);
    EXPECT_TRUE(t.host.releases.empty());
}

TEST(HttpInspector, AllowlistedUploadReleasesAfterItsBodyPassed) {
    AllowlistFlow t({"trusted.example"});
    std::string head = "PUT /f HTTP/1.1\r\nHost: trusted.example\r\nContent-Length: 6\r\n\r\n";
    t.wire.deliver(C2S, head + "abc");
    EXPECT_TRUE(t.host.releases.empty());  // inside its body
    EXPECT_EQ(t.wire.out(C2S), head + "abc");
    t.wire.deliver(C2S, "def");
    ASSERT_EQ(t.host.releases, std::vector<ReleaseReason>{ReleaseReason::Allowlisted});
    EXPECT_EQ(t.wire.out(C2S), head + "abcdef");
    EXPECT_TRUE(t.host.scans.empty());
}

// -- Leaving inspection -------------------------------------------------------

TEST(HttpInspector, WebSocketUpgradeReleasesAfterPassingTheSwitchingHead) {
    Flow t;
    std::string req =
        "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    std::string head =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n";
    std::string frames = "\x81\x05hello not http at all";
    t.client(req);
    EXPECT_EQ(t.wire.out(C2S), req);
    t.server(head + frames);
    EXPECT_EQ(t.wire.out(S2C), head + frames);
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::Upgrade);
    t.client("\x81\x85garbage frames");
    EXPECT_EQ(t.wire.out(C2S), req + "\x81\x85garbage frames");
    EXPECT_TRUE(t.host.fallbacks.empty());
    EXPECT_EQ(t.host.resets, 0);
}

TEST(HttpInspector, RefusedUpgradeKeepsParsingHttp) {
    Flow t;
    std::string req =
        "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    t.client(req);
    t.server(ok("no websockets here"));
    ASSERT_EQ(t.host.scans.size(), 1u);
    t.verdict(0, ScanVerdict::clean());
    EXPECT_TRUE(t.host.releases.empty());
    t.client(get("/next"));
    t.server(ok("next"));
    EXPECT_EQ(t.host.scans.size(), 2u);
}

TEST(HttpInspector, ConnectTunnelIsReleasedOnA2xxAnswer) {
    Flow t;
    std::string req = "CONNECT secure.example:443 HTTP/1.1\r\nHost: secure.example:443\r\n\r\n";
    std::string resp = "HTTP/1.1 200 Connection Established\r\n\r\n";
    t.client(req);
    t.server(resp + "\x16\x03\x03 tls bytes");
    EXPECT_EQ(t.wire.out(S2C), resp + "\x16\x03\x03 tls bytes");
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::Upgrade);
}

TEST(HttpInspector, TlsFromTheClientReleasesTheFlow) {
    Flow t;
    std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
    t.client(hello);
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::Tls);
    EXPECT_EQ(t.wire.out(C2S), hello);
    t.server(std::string("\x16\x03\x03\x00\x10server hello", 17));
    EXPECT_EQ(t.wire.out(S2C).size(), 17u);
}

TEST(HttpInspector, BytesThatAreNotHttpAtTheStartReleaseTheFlow) {
    Flow t;
    t.client("SSH-2.0-OpenSSH_9.2\r\n");
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::NotProtocol);
    EXPECT_EQ(t.wire.out(C2S), "SSH-2.0-OpenSSH_9.2\r\n");
    EXPECT_TRUE(t.host.fallbacks.empty());
}

TEST(HttpInspector, ServerSpeakingFirstIsNotHttp) {
    Flow t;
    t.server("220 mail.example ESMTP\r\n");
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::NotProtocol);
    EXPECT_EQ(t.wire.out(S2C), "220 mail.example ESMTP\r\n");
}

TEST(HttpInspector, GarbageAfterAMessageIsAProtocolErrorThatResetsByDefault) {
    Flow t;
    std::string resp = ok("fine");
    t.client(get("/a") + get("/b"));
    t.server(resp);
    t.verdict(0, ScanVerdict::clean());
    t.server("\x01\x02 this is no status line\r\n\r\n");
    EXPECT_EQ(t.host.resets, 1);
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].what, "protocol-error");
    EXPECT_EQ(t.host.fallbacks[0].action, "reset");
    EXPECT_EQ(t.wire.out(S2C), resp);
    t.server("more garbage");
    EXPECT_EQ(t.wire.out(S2C), resp);
}

TEST(HttpInspector, ProtocolErrorWithPassFallbackPassesTheRestAndReleases) {
    Flow t;
    t.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    std::string req = get("/a");
    std::string junk = "GET /b HTTP/1.1\r\nBad Header Without Colon\r\n\r\nrest";
    t.client(req + junk);
    EXPECT_EQ(t.wire.out(C2S), req + junk);
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::NotProtocol);
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].action, "pass");
}

// Found by http_inspector_fuzz: the host passes every byte from release()
// on, so a release while an object awaits its verdict let it through
// unscanned. A client could fetch an infected response by pipelining a
// malformed request behind its GET (with the protocol-error fallback pass).
TEST(HttpInspector, ProtocolErrorWhileAResponseAwaitsItsVerdictReleasesOnlyAfterIt) {
    Flow t;
    t.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    t.client(get("/eicar.com"));
    t.server(ok(kEicar));
    t.client("\x01junk\r\n\r\n");
    EXPECT_TRUE(t.host.releases.empty());
    ASSERT_EQ(t.host.scans.size(), 1u);
    t.verdict(0, virus());
    EXPECT_EQ(t.wire.out(S2C).find("EICAR"), std::string::npos);
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_TRUE(t.host.releases.empty());
}

TEST(HttpInspector, ProtocolErrorWhileAResponseAwaitsItsVerdictPassesItWhenClean) {
    Flow t;
    t.host.policy_.fallback[size_t(Category::ProtocolError)] = Action::Pass;
    t.client(get("/a"));
    t.server(ok("fine"));
    t.client("\x01junk\r\n\r\n");
    EXPECT_TRUE(t.host.releases.empty());
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), ok("fine"));
    ASSERT_EQ(t.host.releases.size(), 1u);
    EXPECT_EQ(t.host.releases[0], ReleaseReason::NotProtocol);
}

// The same through an upgrade: a server that switches protocols before the
// upload's verdict does not release the upload with the flow.
TEST(HttpInspector, SwitchingProtocolsBeforeAnUploadsVerdictKeepsTheUploadHeld) {
    Flow t;
    t.client(
        "POST /ws HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nContent-Length: " +
        std::to_string(kEicar.size()) + "\r\n\r\n" + kEicar);
    t.server("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    EXPECT_TRUE(t.host.releases.empty());
    ASSERT_EQ(t.host.scans.size(), 1u);
    t.verdict(0, virus());
    EXPECT_EQ(t.wire.out(C2S).find("EICAR"), std::string::npos);
    EXPECT_EQ(t.host.closes.size(), 1u);
    EXPECT_TRUE(t.host.releases.empty());
}

TEST(HttpInspector, HeaderBombIsBoundedAndEndsAsAProtocolError) {
    Flow t;
    t.client(get("/ok"));
    std::string bomb = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i < 100000 && bomb.size() < (2u << 20); ++i)
        bomb += "X-Bomb: aaaaaaaaaa\r\n";
    t.wire.deliver(S2C, bomb);
    EXPECT_EQ(t.host.resets, 1);
    EXPECT_EQ(t.host.fallbacks.at(0).reason, "too many header fields");
    EXPECT_EQ(t.wire.out(S2C), "");  // nothing of it reached the client
    EXPECT_EQ(t.wire.dir(S2C).forced, 0u);
    EXPECT_LT(t.inspector.memory_bytes(), 128u << 10);
}

TEST(HttpInspector, OneHugeHeaderLineIsBounded) {
    Flow t;
    std::string req = "GET / HTTP/1.1\r\nHost: h\r\nCookie: " + std::string(200000, 'c');
    t.client(req);
    EXPECT_EQ(t.host.resets, 1);
    EXPECT_EQ(t.wire.out(C2S), "");
}

TEST(HttpInspector, StalledHeadInPiecesIsRelayedInsteadOfForced) {
    Flow t;
    t.wire.deliver(C2S, "GET /slow HTTP/1.1\r\nHo");
    t.wire.stall(C2S);
    EXPECT_TRUE(t.wire.dir(C2S).relay);  // the engine acknowledges the sender
    EXPECT_EQ(t.wire.out(C2S), "");
    t.wire.deliver(C2S, "st: h\r\n\r\n");
    EXPECT_EQ(t.wire.out(C2S), "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    EXPECT_FALSE(t.wire.dir(C2S).relay);
}

TEST(HttpInspector, PipelinedRequestsBeyondTheQueueWaitForResponses) {
    Flow t;
    std::string reqs;
    for (size_t i = 0; i < HttpInspector::kMaxQueuedRequests + 6; ++i)
        reqs += get("/" + std::to_string(i));
    t.wire.deliver(C2S, reqs);
    std::string first;
    for (size_t i = 0; i < HttpInspector::kMaxQueuedRequests; ++i)
        first += get("/" + std::to_string(i));
    EXPECT_EQ(t.wire.out(C2S), first);
    t.wire.stall(C2S);
    EXPECT_FALSE(t.wire.dir(C2S).relay);  // the client's retransmissions drive it on
    for (int i = 0; i < 6; ++i)
        t.server("HTTP/1.1 204 No Content\r\n\r\n");
    t.wire.stall(C2S);
    EXPECT_EQ(t.wire.out(C2S), reqs);
}

// -- Trickling ----------------------------------------------------------------

// A response held for trickling: Content-Length `size`, `sent` body bytes of
// it delivered so far.
struct Trickle {
    Flow t;
    std::string head, body, resp;
    explicit Trickle(size_t size, uint32_t after_s = 2) {
        t.host.policy_.trickle_after_s = after_s;
        for (size_t i = 0; i < size; ++i)
            body += char('a' + i % 26);
        resp = ok(body);
        head = resp.substr(0, resp.size() - body.size());
        t.client(get("/big.iso"));
    }
    std::string got() { return t.wire.out(S2C); }
    size_t body_got() { return got().size() > head.size() ? got().size() - head.size() : 0; }
};

TEST(HttpInspector, TrickleIsOffByDefault) {
    Trickle k(40000, 0);
    k.t.server(k.resp.substr(0, k.head.size() + 20000));
    k.t.advance(600'000);
    EXPECT_FALSE(k.t.host.ticks);  // the worker is not even asked for ticks
    EXPECT_EQ(k.got(), "");
    EXPECT_EQ(k.t.inspector.counters().trickled, 0u);
}

TEST(HttpInspector, TrickleStartsOnlyAfterTrickleAfterS) {
    Trickle k(40000, 5);
    k.t.server(k.resp.substr(0, k.head.size() + 20000));
    EXPECT_TRUE(k.t.host.ticks);
    k.t.advance(4000);
    EXPECT_EQ(k.got(), "");  // 4 s: nothing yet
    k.t.advance(1000);
    EXPECT_EQ(k.got(), k.head);  // 5 s: the head alone
    EXPECT_EQ(k.t.inspector.counters().trickled, 1u);
    EXPECT_TRUE(k.t.wire.dir(S2C).relay);  // the rest is still held
}

TEST(HttpInspector, TrickleIsBoundedByTimeAndByAShareOfWhatArrived) {
    Trickle k(400000);
    k.t.server(k.resp.substr(0, k.head.size() + 40000));
    k.t.advance(2000);
    ASSERT_EQ(k.got(), k.head);
    k.t.advance(1000);
    EXPECT_EQ(k.body_got(), 1024u);  // 1 KiB per second
    k.t.advance(3000);
    EXPECT_EQ(k.body_got(), 4096u);
    k.t.advance(60'000);
    EXPECT_EQ(k.body_got(), 40000u / HttpInspector::kTrickleShare);  // 1/8 of what arrived
    k.t.server(k.resp.substr(k.head.size() + 40000, 80000));
    k.t.advance(1000);
    EXPECT_EQ(k.body_got(), 120000u / HttpInspector::kTrickleShare);
    EXPECT_EQ(k.got(), k.resp.substr(0, k.got().size()));  // a prefix of the original
}

TEST(HttpInspector, TrickleNeverGivesTheLastByte) {
    for (size_t size : {1u, 2u, 9u, 100u, 5000u}) {
        Trickle k(size, 1);
        k.t.server(k.resp);  // complete: waiting for its verdict
        ASSERT_EQ(k.t.host.scans.size(), 1u);
        k.t.advance(3600'000);
        EXPECT_EQ(k.got().substr(0, k.head.size()), k.head) << size;
        EXPECT_LT(k.body_got(), size) << size;
        EXPECT_LE(k.body_got(), size / HttpInspector::kTrickleShare) << size;
    }
}

TEST(HttpInspector, TrickleOfAChunkedBodyNeverGivesItsTerminatingChunk) {
    Flow t;
    t.host.policy_.trickle_after_s = 1;
    std::string resp = chunked({std::string(3000, 'x'), std::string(5, 'y')}, "X-T: 1\r\n");
    t.client(get("/c"));
    t.server(resp);
    t.advance(3600'000);
    std::string got = t.wire.out(S2C);
    ASSERT_GT(got.size(), resp.find("\r\n\r\n") + 4);  // the head and some of the body
    EXPECT_EQ(got, resp.substr(0, got.size()));
    EXPECT_EQ(got.find('y'), std::string::npos);  // nothing of the last chunk
    t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(t.wire.out(S2C), resp);
}

TEST(HttpInspector, TrickledCleanResponseArrivesWholeAndTheNextIsHeldAgain) {
    Trickle k(20000, 1);
    k.t.server(k.resp.substr(0, k.head.size() + 10000));
    k.t.advance(5000);
    ASSERT_GT(k.body_got(), 0u);
    k.t.server(k.resp.substr(k.head.size() + 10000));
    ASSERT_EQ(k.t.host.scans.size(), 1u);
    EXPECT_EQ(k.t.host.scans[0].bytes, k.body);  // scanned whole
    k.t.verdict(0, ScanVerdict::clean());
    EXPECT_EQ(k.got(), k.resp);  // byte-identical
    EXPECT_FALSE(k.t.wire.dir(S2C).relay);
    EXPECT_FALSE(k.t.host.ticks);
    EXPECT_TRUE(k.t.host.records.empty());
    // Keep-alive: the next response is held from its first byte again.
    std::string second = ok("second body");
    k.t.client(get("/next"));
    k.t.server(second);
    EXPECT_EQ(k.got(), k.resp);
    k.t.verdict(1, ScanVerdict::clean());
    EXPECT_EQ(k.got(), k.resp + second);
}

TEST(HttpInspector, TrickledInfectedResponseEndsInResetsNeverWhole) {
    Flow t;
    t.host.policy_.trickle_after_s = 1;
    std::string body = std::string(20000, 'z') + kEicar;
    std::string resp = ok(body);
    t.client(get("/eicar.bin"));
    t.server(resp);
    t.advance(10'000);
    ASSERT_GT(t.wire.out(S2C).size(), resp.size() - body.size());
    t.verdict(0, virus());
    EXPECT_EQ(t.host.resets, 1);
    EXPECT_TRUE(t.host.closes.empty());  // no block page after a head
    ASSERT_EQ(t.host.records.size(), 1u);
    EXPECT_EQ(t.host.records[0].what, "Eicar-Test-Signature");
    EXPECT_EQ(t.host.records[0].action, "reset");
    std::string got = t.wire.out(S2C);
    EXPECT_LT(got.size(), resp.size());
    EXPECT_EQ(got, resp.substr(0, got.size()));
    EXPECT_EQ(got.find("EICAR"), std::string::npos);
    EXPECT_EQ(t.wire.mapped_after_close(), 0u);
    EXPECT_EQ(t.inspector.counters().objects_blocked, 1u);
}

TEST(HttpInspector, InfectedResponseBeforeTrickleStartsStillGetsTheBlockPage) {
    Flow t;
    t.host.policy_.trickle_after_s = 30;
    t.client(get("/eicar.bin"));
    t.server(ok(kEicar));
    t.advance(5000);
    t.verdict(0, virus());
    EXPECT_EQ(t.host.resets, 0);
    ASSERT_EQ(t.host.closes.size(), 1u);
    EXPECT_EQ(t.host.records.at(0).action, "block");
    EXPECT_EQ(t.wire.out(S2C).rfind("HTTP/1.1 403", 0), 0u);
}

TEST(HttpInspector, ContentSizeBlockWhileTricklingResets) {
    Flow t;
    t.host.policy_.trickle_after_s = 1;
    t.host.limits_.max_content_size = 10000;
    t.host.policy_.fallback[size_t(Category::ContentSize)] = Action::Block;
    std::string resp = chunked({std::string(6000, 'a'), std::string(6000, 'b')});
    size_t second = resp.find('b');
    t.client(get("/stream"));
    t.server(resp.substr(0, second));
    t.advance(3000);
    ASSERT_GT(t.wire.out(S2C).size(), 0u);
    t.server(resp.substr(second));
    ASSERT_EQ(t.host.fallbacks.size(), 1u);
    EXPECT_EQ(t.host.fallbacks[0].what, "content-size");
    EXPECT_EQ(t.host.fallbacks[0].action, "reset");
    EXPECT_EQ(t.host.resets, 1);
    EXPECT_TRUE(t.host.closes.empty());
    EXPECT_EQ(t.wire.out(S2C).find('b'), std::string::npos);
}

// -- Properties ---------------------------------------------------------------

TEST(HttpInspector, CleanTrafficIsByteIdenticalForRandomPieceSizes) {
    for (uint32_t seed = 1; seed <= 300; ++seed) {
        Flow t;
        t.rng.seed(seed);
        std::mt19937 pick(seed);
        std::string reqs, resps;
        int n = 1 + int(pick() % 4);
        for (int i = 0; i < n; ++i) {
            std::string body(pick() % 3000, char('a' + i));
            reqs += get("/" + std::to_string(i));
            if (i == n - 1 && pick() % 4 == 0) {
                // Close-delimited: it ends with the server's FIN.
                resps += "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body;
                continue;
            }
            switch (pick() % 3) {
                case 0:
                    resps += ok(body);
                    break;
                case 1:
                    resps +=
                        chunked({body.substr(0, body.size() / 2), body.substr(body.size() / 2)},
                                pick() % 2 ? "X-T: 1\r\n" : "");
                    break;
                default:
                    resps += "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                             "\r\nConnection: keep-alive\r\n\r\n" + body;
            }
        }
        t.wire.send(C2S, reqs, t.rng, 1 + pick() % 200);
        // The server's bytes come in pieces; verdicts come as objects finish.
        size_t at = 0, judged = 0;
        while (at < resps.size()) {
            size_t piece = t.rng() % 4 == 0 ? 1 : 1 + t.rng() % 300;
            piece = std::min(piece, resps.size() - at);
            t.wire.deliver(S2C, resps.substr(at, piece));
            at += piece;
            while (judged < t.host.scans.size())
                t.verdict(judged++, ScanVerdict::clean());
        }
        t.wire.fin(S2C);
        while (judged < t.host.scans.size())
            t.verdict(judged++, ScanVerdict::clean());
        ASSERT_EQ(t.wire.out(S2C), resps) << "seed " << seed;
        ASSERT_EQ(t.wire.out(C2S), reqs) << "seed " << seed;
        ASSERT_EQ(t.wire.dir(S2C).forced, 0u) << "seed " << seed;
        ASSERT_EQ(t.inspector.counters().responses, uint64_t(n)) << "seed " << seed;
        ASSERT_TRUE(t.host.fallbacks.empty()) << "seed " << seed;
    }
}

TEST(HttpInspector, TrickledTrafficIsByteIdenticalAndNeverGivesAnObjectsEndEarly) {
    for (uint32_t seed = 1; seed <= 200; ++seed) {
        Flow t;
        t.host.policy_.trickle_after_s = 1 + seed % 2;
        t.rng.seed(seed);
        std::mt19937 pick(seed);
        std::string reqs, resps;
        std::vector<size_t> ends;  // where each response ends in resps
        int n = 1 + int(pick() % 3);
        for (int i = 0; i < n; ++i) {
            std::string body(1 + pick() % 20000, char('a' + i));
            reqs += get("/" + std::to_string(i));
            resps += pick() % 2
                         ? ok(body)
                         : chunked({body.substr(0, body.size() / 3), body.substr(body.size() / 3)});
            ends.push_back(resps.size());
        }
        t.wire.send(C2S, reqs, t.rng);
        size_t at = 0, judged = 0;
        while (at < resps.size() || judged < t.host.scans.size()) {
            if (at < resps.size()) {
                size_t piece = std::min<size_t>(1 + t.rng() % 2000, resps.size() - at);
                t.wire.deliver(S2C, resps.substr(at, piece));
                at += piece;
            }
            t.advance(1000 * (t.rng() % 3));
            // Until its verdict, no response's last byte reaches the client.
            ASSERT_LT(t.wire.out(S2C).size(), ends[judged]) << seed;
            if (judged < t.host.scans.size() && t.rng() % 3 == 0)
                t.verdict(judged++, ScanVerdict::clean());
        }
        EXPECT_EQ(t.wire.out(S2C), resps) << seed;
        EXPECT_EQ(t.wire.dir(S2C).forced, 0u) << seed;
    }
}

TEST(HttpInspector, ArbitraryBytesNeverCrashOrHoldWithoutBound) {
    for (uint32_t seed = 1; seed <= 200; ++seed) {
        Flow t;
        t.rng.seed(seed);
        std::string prefix = seed % 2 ? get("/x") : "";
        std::string noise;
        for (int i = 0; i < 2000; ++i)
            noise += char(t.rng() % 256);
        t.client(prefix);
        t.client(noise);
        t.server(seed % 3 ? ok("abc") + noise : noise);
        size_t judged = 0;
        auto judge_all = [&] {
            while (judged < t.host.scans.size())
                t.verdict(judged++, ScanVerdict::clean());
        };
        judge_all();
        t.wire.fin(C2S);
        t.wire.fin(S2C);
        judge_all();
        ASSERT_LE(t.inspector.memory_bytes(), 64u << 10) << "seed " << seed;
    }
}

}  // namespace
}  // namespace nfqscan
