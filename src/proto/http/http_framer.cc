#include "http_framer.h"

#include <strings.h>

#include <algorithm>

namespace nfqscan {

namespace {

HttpFramer& framer_of(http_parser* p) {
    return *static_cast<HttpFramer*>(p->data);
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::optional<std::string_view> HttpHead::header(std::string_view name) const {
    for (const auto& [field, value] : headers)
        if (iequals(field, name)) return std::string_view(value);
    return std::nullopt;
}

const http_parser_settings HttpFramer::kSettings = {
    .on_message_begin = &HttpFramer::on_message_begin,
    .on_url = &HttpFramer::on_url,
    .on_status = &HttpFramer::on_status,
    .on_header_field = &HttpFramer::on_header_field,
    .on_header_value = &HttpFramer::on_header_value,
    .on_headers_complete = &HttpFramer::on_headers_complete,
    .on_body = &HttpFramer::on_body,
    .on_message_complete = &HttpFramer::on_message_complete,
    .on_chunk_header = nullptr,
    .on_chunk_complete = nullptr,
};

HttpFramer::HttpFramer(Kind kind, HttpFramerLimits limits) : kind_(kind), limits_(limits) {
    restart();
}

void HttpFramer::restart() {
    http_parser_init(&parser_, kind_ == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE);
    parser_.data = this;
    in_message_ = false;
    upgraded_ = false;
    failed_ = false;
    error_.clear();
    pending_event_ = Event::NeedMore;
    message_begin_ = last_end_ = parsed_;
}

size_t HttpFramer::memory_bytes() const {
    return head_text_;
}

HttpFramer::Event HttpFramer::parse(uint64_t offset, std::span<const uint8_t> input,
                                    HttpBodyListener* listener) {
    if (failed_) return Event::Error;
    if (pending_event_ != Event::NeedMore) {
        // A message that ended together with its head (no body) is reported
        // by the call after the head's.
        Event e = pending_event_;
        pending_event_ = Event::NeedMore;
        if (e == Event::MessageComplete) last_end_ = parsed_;
        return e;
    }
    if (offset > parsed_ || offset + input.size() < parsed_) {
        failed_ = true;
        error_ = "input skipped bytes the parser has not seen";
        return Event::Error;
    }
    std::span<const uint8_t> fresh = input.subspan(size_t(parsed_ - offset));
    if (fresh.empty()) return Event::NeedMore;
    listener_ = listener;
    return run(reinterpret_cast<const char*>(fresh.data()), fresh.size(), parsed_);
}

HttpFramer::Event HttpFramer::finish(HttpBodyListener* listener) {
    if (failed_) return Event::Error;
    if (pending_event_ != Event::NeedMore) return parse(parsed_, {}, listener);
    listener_ = listener;
    return run(nullptr, 0, parsed_);
}

HttpFramer::Event HttpFramer::run(const char* data, size_t length, uint64_t data_offset) {
    data_ = data;
    data_offset_ = data_offset;
    // At the end of the input (length 0) in the middle of a message the
    // parser reports an error with one byte consumed: it never consumes
    // more than it was given.
    size_t n = std::min(http_parser_execute(&parser_, &kSettings, data, length), length);
    parsed_ = data_offset + n;
    Event event = pending_event_;
    pending_event_ = Event::NeedMore;
    http_errno err = HTTP_PARSER_ERRNO(&parser_);
    if (err == HPE_PAUSED) {
        http_parser_pause(&parser_, 0);
        if (event == Event::MessageComplete) last_end_ = parsed_;
        if (event == Event::HeadComplete) {
            // The parser stops on the head's last LF without consuming it:
            // consume it now, so the head ends at parsed(). A message
            // without a body completes on that byte; it is reported next.
            n = http_parser_execute(&parser_, &kSettings, data + n, 1);
            parsed_ += n;
            err = HTTP_PARSER_ERRNO(&parser_);
            if (err == HPE_PAUSED) {
                http_parser_pause(&parser_, 0);
                pending_event_ = Event::MessageComplete;
            } else if (err != HPE_OK) {
                pending_event_ = Event::Error;
                failed_ = true;
                if (error_.empty()) error_ = http_errno_description(err);
            }
            head_end_ = parsed_;
        }
        return event;
    }
    if (err != HPE_OK) {
        failed_ = true;
        if (error_.empty()) error_ = http_errno_description(err);
        // The end of the input inside a message ends that message.
        if (length == 0) in_message_ = false;
        return Event::Error;
    }
    return event;
}

bool HttpFramer::keep_text(std::string& into, const char* at, size_t length) {
    if (head_text_ + length > limits_.max_head_text) {
        error_ = "head larger than the framer keeps";
        return false;
    }
    head_text_ += length;
    into.append(at, length);
    return true;
}

int HttpFramer::on_message_begin(http_parser* p) {
    HttpFramer& f = framer_of(p);
    f.in_message_ = true;
    f.in_head_ = true;
    f.message_begin_ = f.last_end_;
    f.last_was_value_ = false;
    f.fields_ = 0;
    f.head_text_ = 0;
    f.head_ = HttpHead{};
    f.upgraded_ = false;
    return 0;
}

int HttpFramer::on_url(http_parser* p, const char* at, size_t length) {
    HttpFramer& f = framer_of(p);
    return f.keep_text(f.head_.url, at, length) ? 0 : 1;
}

int HttpFramer::on_status(http_parser*, const char*, size_t) {
    return 0;  // the reason phrase says nothing the code does not
}

int HttpFramer::on_header_field(http_parser* p, const char* at, size_t length) {
    HttpFramer& f = framer_of(p);
    f.saw_header_ = true;
    if (!f.in_head_) return 0;  // trailers: bounded by the parser, not kept
    if (f.last_was_value_ || f.head_.headers.empty()) {
        if (++f.fields_ > f.limits_.max_headers) {
            f.error_ = "too many header fields";
            return 1;
        }
        f.head_.headers.emplace_back();
    }
    f.last_was_value_ = false;
    return f.keep_text(f.head_.headers.back().first, at, length) ? 0 : 1;
}

int HttpFramer::on_header_value(http_parser* p, const char* at, size_t length) {
    HttpFramer& f = framer_of(p);
    if (!f.in_head_) return 0;
    f.last_was_value_ = true;
    return f.keep_text(f.head_.headers.back().second, at, length) ? 0 : 1;
}

int HttpFramer::on_headers_complete(http_parser* p) {
    HttpFramer& f = framer_of(p);
    f.saw_header_ = true;
    f.in_head_ = false;
    HttpHead& h = f.head_;
    h.http_major = p->http_major;
    h.http_minor = p->http_minor;
    h.chunked = (p->flags & F_CHUNKED) != 0;
    if (p->flags & F_CONTENTLENGTH) h.content_length = p->content_length;
    int answer = 0;
    if (f.kind_ == Kind::Request) {
        h.method = http_method(p->method);
    } else {
        h.status = p->status_code;
        // 2: no body, and what follows is another protocol (the tunnel).
        // 1: no body whatever the head says (RFC 9112 6.3: HEAD, 1xx, 204, 304).
        if (f.answered_method_ == HTTP_CONNECT && h.status / 100 == 2)
            answer = 2;
        else if (f.answered_method_ == HTTP_HEAD || h.status / 100 == 1 || h.status == 204 ||
                 h.status == 304)
            answer = 1;
    }
    f.pending_event_ = Event::HeadComplete;
    http_parser_pause(p, 1);
    return answer;
}

int HttpFramer::on_body(http_parser* p, const char* at, size_t length) {
    HttpFramer& f = framer_of(p);
    if (f.listener_)
        f.listener_->on_body(f.data_offset_ + uint64_t(at - f.data_),
                             {reinterpret_cast<const uint8_t*>(at), length});
    return 0;
}

int HttpFramer::on_message_complete(http_parser* p) {
    HttpFramer& f = framer_of(p);
    f.in_message_ = false;
    f.upgraded_ = p->upgrade != 0;
    f.pending_event_ = Event::MessageComplete;
    http_parser_pause(p, 1);
    return 0;
}

}  // namespace nfqscan
