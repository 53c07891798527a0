// The HTTP/1.x inspector (DESIGN.md "The inspector layer", issue 9): request
// bodies (uploads; each file of a multipart/form-data body on its own) and
// whole responses (head and body) are objects, held from their first byte
// until their verdict. Framing is HttpFramer's (libhttp-parser); this class
// decides what the framed messages mean: which request a response answers,
// what is scanned, what passes, what becomes a block page. See dev_notes.txt.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "http_framer.h"
#include "nfqscan/inspector.h"

namespace nfqscan {

struct HttpCounters {
    uint64_t requests = 0;
    uint64_t responses = 0;        // final responses (1xx not counted)
    uint64_t objects_scanned = 0;  // handed to host.scan()
    uint64_t objects_blocked = 0;  // by a verdict or a fallback
    uint64_t fallbacks = 0;        // objects not scanned for a Category
    uint64_t allowlisted = 0;
    uint64_t protocol_errors = 0;
    uint64_t trickled = 0;  // responses whose head went before their verdict
};

class HttpInspector final : public Inspector {
  public:
    // Requests queued for their responses before the client side stops
    // parsing (pipelining is bounded; the client's bytes wait).
    static constexpr size_t kMaxQueuedRequests = 64;
    // Trickling: body bytes a held response may give its client per second
    // since trickling began, and at most 1/kTrickleShare of the body
    // received so far (never its last byte).
    static constexpr uint64_t kTrickleBytesPerSecond = 1024;
    static constexpr uint64_t kTrickleShare = 8;

    explicit HttpInspector(InspectorHost& host, HttpFramerLimits limits = {});
    ~HttpInspector() override;

    StreamTransform& transform(Direction d) override;
    void on_verdict(uint64_t id, const ScanVerdict& verdict) override;
    bool on_tick(uint64_t now_ms) override;
    size_t memory_bytes() const override;

    const HttpCounters& counters() const { return counters_; }

  private:
    struct Request {
        http_method method = HTTP_GET;
        std::string host;
        std::string url;             // absolute: "http://host/path?query"
        std::string path;            // the request target's path
        bool wants_upgrade = false;  // CONNECT or Upgrade: what follows waits for the answer
        // Its Host is on allow_hosts (not only its URL on allow_urls) and
        // its target is in origin form ("/path"): an absolute URL goes to a
        // proxy, whose connection serves every origin.
        bool origin_allowlisted = false;
    };
    class Side;
    struct Pending {
        Side* side;
        ObjectInfo info;
    };

    // The flow leaves inspection: every direction passes all it gets once
    // its current object (if any) is done. The host hears of it only then
    // (release_host_if_idle()): from host.release() on, it passes every byte
    // without asking the inspector, so an object still held or awaiting its
    // verdict would reach its receiver unscanned.
    void release(ReleaseReason reason);
    void release_host_if_idle();
    // [protocols.http] allowlist_release: the connection leaves inspection
    // (reason Allowlisted) once the client's last request went to an
    // allow_hosts host, every request still awaiting its response did too,
    // and the client has nothing after it in the engine (see dev_notes.txt).
    void release_if_allowlisted();
    // Ends the flow with a block page to the client.
    void block(const ObjectInfo& info, std::string detection, std::string category,
               const std::string& event_id);

    InspectorHost& host_;
    std::unique_ptr<Side> client_;  // ClientToServer: requests
    std::unique_ptr<Side> server_;  // ServerToClient: responses
    std::deque<Request> requests_;  // awaiting their responses, oldest first
    bool any_request_ = false;      // the client sent an HTTP head
    // The client's latest request head named an allow_hosts host.
    bool last_request_allowlisted_ = false;
    bool released_ = false;
    bool host_released_ = false;
    ReleaseReason release_reason_ = ReleaseReason::NotProtocol;
    bool closing_ = false;  // send_and_close or reset_both issued: nothing more is mapped
    uint64_t next_id_ = 1;
    std::map<uint64_t, Pending> scanning_;  // object id -> who waits for it
    HttpCounters counters_;
};

// The files of a multipart/form-data body: each part with a filename
// (Content-Disposition or Content-Type name), its content decoded of any
// Content-Transfer-Encoding. Split with GMime. Empty when there is none or
// the body is not multipart.
struct FormFile {
    std::string file_name;
    std::string mime_type;
    std::vector<uint8_t> bytes;
};
std::vector<FormFile> form_data_files(std::string_view content_type, std::span<const uint8_t> body);

// The filename parameter of a Content-Disposition value ("" if none).
std::string disposition_filename(std::string_view value);

}  // namespace nfqscan
