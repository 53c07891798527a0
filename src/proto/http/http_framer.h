// HTTP/1.x framing of one direction (Snort 3's PAF: where a message ends,
// kept apart from what it means). Built on libhttp-parser: it turns the
// ordered bytes of a direction into events at exact input offsets: a head
// complete, decoded (de-chunked) body data, a message complete. The parser is
// paused at each head and message end, so the caller can decide what to do
// with a message before a byte of what follows it is parsed; each input byte
// is consumed by the parser once.
#pragma once

#include <http_parser.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nfqscan {

// What a message head says.
struct HttpHead {
    http_method method = HTTP_GET;  // requests
    std::string url;                // requests: the request target as sent
    unsigned status = 0;            // responses
    unsigned short http_major = 1, http_minor = 1;
    std::vector<std::pair<std::string, std::string>> headers;  // in order, as sent
    bool chunked = false;
    std::optional<uint64_t> content_length;
    // The value of the first header `name` (case-insensitive), if any.
    std::optional<std::string_view> header(std::string_view name) const;
};

// Bounds on what a head may hold before it counts as a protocol error
// (libhttp-parser itself stops a head at 80 KiB).
struct HttpFramerLimits {
    size_t max_headers = 128;          // header fields of a head (trailers count too)
    size_t max_head_text = 64u << 10;  // bytes of URL, names and values kept
};

class HttpBodyListener {
  public:
    virtual ~HttpBodyListener() = default;
    // Decoded body bytes (chunk framing removed) at input offset `offset`
    // (for chunked bodies, the position of their first byte on the wire).
    virtual void on_body(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class HttpFramer {
  public:
    enum class Kind : uint8_t { Request, Response };
    enum class Event : uint8_t {
        NeedMore,         // every byte given was parsed; no boundary reached
        HeadComplete,     // head() is complete; its body (if any) starts at parsed()
        MessageComplete,  // the message ended at parsed()
        Error,            // the bytes do not frame as HTTP: error() says why
    };

    explicit HttpFramer(Kind kind, HttpFramerLimits limits = {});
    HttpFramer(const HttpFramer&) = delete;
    HttpFramer& operator=(const HttpFramer&) = delete;

    // Responses: the method of the request the next response answers. A
    // response to HEAD has no body; a 2xx response to CONNECT ends at its head
    // (a tunnel follows). Read when the response's head completes.
    void expect_response_to(http_method method) { answered_method_ = method; }

    // Parses the bytes of `input` (which starts at input offset `offset`)
    // from parsed() on, up to the next event. `offset` <= parsed().
    Event parse(uint64_t offset, std::span<const uint8_t> input, HttpBodyListener* listener);
    // The sender closed its side: a close-delimited body ends here
    // (MessageComplete), a message cut short is an Error, between messages
    // NeedMore.
    Event finish(HttpBodyListener* listener);

    // Input bytes consumed by the parser so far.
    uint64_t parsed() const { return parsed_; }
    // Where the current (or last) message began.
    uint64_t message_begin() const { return message_begin_; }
    // Where the last head ended (its first body byte).
    uint64_t head_end() const { return head_end_; }
    // A message has begun (its first byte was parsed) and not completed.
    bool in_message() const { return in_message_; }
    // The message just completed switches protocols (Upgrade or CONNECT):
    // what follows it is not HTTP unless the peer refuses.
    bool upgraded() const { return upgraded_; }
    // Any head field was parsed on this framer (the start line was HTTP).
    bool saw_header() const { return saw_header_; }
    const HttpHead& head() const { return head_; }
    const std::string& error() const { return error_; }
    // Parse the bytes from parsed() on as new messages (an upgrade was refused).
    void restart();
    // Bytes of head text held (for the memory budget).
    size_t memory_bytes() const;

  private:
    static int on_message_begin(http_parser* p);
    static int on_url(http_parser* p, const char* at, size_t length);
    static int on_status(http_parser* p, const char* at, size_t length);
    static int on_header_field(http_parser* p, const char* at, size_t length);
    static int on_header_value(http_parser* p, const char* at, size_t length);
    static int on_headers_complete(http_parser* p);
    static int on_body(http_parser* p, const char* at, size_t length);
    static int on_message_complete(http_parser* p);
    static const http_parser_settings kSettings;

    bool keep_text(std::string& into, const char* at, size_t length);
    Event run(const char* data, size_t length, uint64_t data_offset);

    Kind kind_;
    HttpFramerLimits limits_;
    http_parser parser_{};
    http_method answered_method_ = HTTP_GET;
    uint64_t parsed_ = 0;
    uint64_t message_begin_ = 0;
    uint64_t last_end_ = 0;  // where the last message ended: the next one begins there
    uint64_t head_end_ = 0;
    bool in_message_ = false;
    bool in_head_ = false;  // fields go to head_ (not trailers)
    bool last_was_value_ = false;
    bool upgraded_ = false;
    bool saw_header_ = false;
    bool failed_ = false;
    size_t fields_ = 0;     // header fields of the current message, trailers included
    size_t head_text_ = 0;  // bytes kept of the current message's head
    Event pending_event_ = Event::NeedMore;  // set by a callback that paused
    HttpHead head_;
    std::string error_;
    // Set during run(): where the parser's input buffer starts.
    const char* data_ = nullptr;
    uint64_t data_offset_ = 0;
    HttpBodyListener* listener_ = nullptr;
};

}  // namespace nfqscan
