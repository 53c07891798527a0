#include "http_inspector.h"

#include <gmime/gmime.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <mutex>

namespace nfqscan {

namespace {

constexpr uint8_t kTlsHandshake = 0x16;

std::string lowercase(std::string_view s) {
    std::string out(s);
    for (char& ch : out)
        ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// "text/html; charset=utf-8" -> "text/html"
std::string media_type(std::string_view content_type) {
    return lowercase(trim(content_type.substr(0, content_type.find(';'))));
}

// The last segment of a request target's path ("/a/b.zip?x=1" -> "b.zip").
std::string last_segment(std::string_view path) {
    path = path.substr(0, path.find_first_of("?#"));
    size_t slash = path.rfind('/');
    return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

void ensure_gmime() {
    static std::once_flag once;
    std::call_once(once, [] { g_mime_init(); });
}

std::string http_block_response(const std::string& page) {
    std::string out =
        "HTTP/1.1 403 Forbidden\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Length: " +
        std::to_string(page.size()) +
        "\r\n"
        "Connection: close\r\n"
        "Cache-Control: no-store\r\n"
        "\r\n";
    return out + page;
}

void collect_files(GMimeObject* object, std::vector<FormFile>& files) {
    if (GMIME_IS_MULTIPART(object)) {
        GMimeMultipart* multipart = GMIME_MULTIPART(object);
        int count = g_mime_multipart_get_count(multipart);
        for (int i = 0; i < count; ++i)
            collect_files(g_mime_multipart_get_part(multipart, i), files);
        return;
    }
    if (!GMIME_IS_PART(object)) return;
    GMimePart* part = GMIME_PART(object);
    const char* name = g_mime_part_get_filename(part);
    if (!name) return;
    FormFile file;
    file.file_name = name;
    if (GMimeContentType* type = g_mime_object_get_content_type(object)) {
        char* mime = g_mime_content_type_get_mime_type(type);
        if (mime) file.mime_type = lowercase(mime);
        g_free(mime);
    }
    if (GMimeDataWrapper* content = g_mime_part_get_content(part)) {
        GMimeStream* out = g_mime_stream_mem_new();
        g_mime_data_wrapper_write_to_stream(content, out);
        GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out));
        file.bytes.assign(bytes->data, bytes->data + bytes->len);
        g_object_unref(out);
    }
    files.push_back(std::move(file));
}

}  // namespace

std::vector<FormFile> form_data_files(std::string_view content_type,
                                      std::span<const uint8_t> body) {
    std::vector<FormFile> files;
    if (media_type(content_type) != "multipart/form-data") return files;
    ensure_gmime();
    // GMime parses MIME entities: the request's Content-Type becomes the
    // entity's only header, the body its content.
    std::string header = "Content-Type: " + std::string(content_type) + "\r\n\r\n";
    GMimeStream* stream = g_mime_stream_mem_new();
    g_mime_stream_write(stream, header.data(), header.size());
    g_mime_stream_write(stream, reinterpret_cast<const char*>(body.data()), body.size());
    g_mime_stream_seek(stream, 0, GMIME_STREAM_SEEK_SET);
    GMimeParser* parser = g_mime_parser_new_with_stream(stream);
    if (GMimeObject* object = g_mime_parser_construct_part(parser, nullptr)) {
        collect_files(object, files);
        g_object_unref(object);
    }
    g_object_unref(parser);
    g_object_unref(stream);
    return files;
}

std::string disposition_filename(std::string_view value) {
    ensure_gmime();
    std::string text(value);
    GMimeContentDisposition* disposition = g_mime_content_disposition_parse(nullptr, text.c_str());
    if (!disposition) return {};
    const char* name = g_mime_content_disposition_get_parameter(disposition, "filename");
    std::string out = name ? name : "";
    g_object_unref(disposition);
    return out;
}

// One direction: requests (client) or responses (server). Both follow one
// message at a time through the modes below; an object is held unmapped
// (relayed) from its first byte until its verdicts are in.
class HttpInspector::Side final : public StreamTransform, public HttpBodyListener {
  public:
    Side(HttpInspector& inspector, Direction direction, HttpFramerLimits limits)
        : in_(inspector),
          direction_(direction),
          framer_(direction == Direction::ClientToServer ? HttpFramer::Kind::Request
                                                         : HttpFramer::Kind::Response,
                  limits) {}

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override {
        input_end_ = offset + pending.size();
        map(offset, pending, push, sink);
        in_.release_if_allowlisted();
        in_.release_host_if_idle();
    }
    void on_body(uint64_t, std::span<const uint8_t> data) override;

    // A verdict of one of this side's objects.
    void on_verdict(const ObjectInfo& info, const ScanVerdict& verdict);
    // The answer to a request that asked to switch protocols was not a switch:
    // the client's bytes after it are HTTP again.
    void resume_after_refused_upgrade() {
        if (mode_ != Mode::WaitUpgrade) return;
        framer_.restart();
        mode_ = Mode::Idle;
    }
    size_t memory_bytes() const {
        return (body_ ? static_cast<size_t>(body_->memory_bytes()) : 0) + framer_.memory_bytes();
    }
    // An object of this side is held or awaits its verdicts.
    bool holds_object() const { return mode_ == Mode::Holding || mode_ == Mode::Judging; }
    // Between messages with every byte the engine showed parsed and mapped:
    // the next input byte starts a message not seen yet.
    bool idle_at_input_end() const {
        return mode_ == Mode::Idle && !passthrough_ && !framer_.in_message() &&
               framer_.parsed() >= input_end_;
    }
    // Responses: a tick of the host's clock; true if more may be mapped now.
    bool on_tick(uint64_t now_ms);

  private:
    enum class Mode : uint8_t {
        Idle,         // between messages, or in a head (kept unmapped until complete)
        Passing,      // the rest of the current message goes as it is parsed
        Holding,      // an object accumulates, unmapped (relayed)
        Judging,      // the object is complete; its verdicts are awaited
        WaitUpgrade,  // requests: the last one asked to switch protocols
    };
    // Maps input up to an offset (the sink takes lengths).
    struct Cursor {
        uint64_t at;
        StreamSink& sink;
        void pass_to(uint64_t offset) {
            if (offset > at) sink.pass(size_t(offset - at));
            at = std::max(at, offset);
        }
    };

    bool requests() const { return direction_ == Direction::ClientToServer; }
    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    // What happens at a boundary between messages before parsing goes on;
    // false: stop (nothing more can be mapped now).
    void map(uint64_t offset, std::span<const uint8_t> pending, Push push, StreamSink& sink);
    bool before_message(Cursor& c, uint64_t offset, std::span<const uint8_t> pending);
    void on_head(Cursor& c);
    void on_message_end(Cursor& c);
    void finish_message(Cursor& c);
    void on_protocol_error(Cursor& c, const std::string& why);
    void start_holding(Cursor& c, uint64_t from);
    void fallback(Cursor& c, Category category, std::string reason);
    void submit_scan();
    ObjectInfo describe(const Request& r, const HttpHead& h) const;
    // At the end of the input (and, while relaying, when the store is full).
    void at_end(Cursor& c, uint64_t end, Push push);
    // Ends the flow for a blocked object: the block page, or resets when the
    // client has part of the response already (trickling).
    void block(const ObjectInfo& info, std::string detection, std::string category,
               const std::string& event_id);
    // The action an object not judged clean gets when it is blocked.
    std::string_view block_action() const { return trickling_ ? "reset" : "block"; }
    void stop_trickling();

    HttpInspector& in_;
    Direction direction_;
    HttpFramer framer_;
    Mode mode_ = Mode::Idle;
    bool relay_ = false;
    bool passthrough_ = false;  // everything passes from here on
    uint64_t input_end_ = 0;    // input offset after the last byte the engine showed
    // The current message.
    ObjectInfo info_;
    std::string content_type_;  // requests: of the body (multipart)
    bool interim_ = false;      // responses: 1xx, the request waits for its final answer
    bool switches_ = false;     // responses: 101, or 2xx to CONNECT
    // Decoded, while Holding: written once from the relay store into a memory
    // file that the scanner process maps (the one copy of the object).
    std::shared_ptr<ObjectBuffer> body_;
    bool body_overflow_ = false;
    std::string body_failed_;  // why the body could not be kept (no memory), if so
    uint64_t message_end_ = 0;
    size_t awaiting_ = 0;  // verdicts still to come
    bool verdicts_in_ = false;
    std::vector<std::pair<ObjectInfo, ScanVerdict>> results_;
    // The body for the quarantine, until the message's verdicts are in.
    std::shared_ptr<const QuarantineSource> original_;
    // Trickling (responses, [protocols.http] trickle_after_s): while the
    // object is held, the head and then a bounded prefix of its body are
    // mapped up to trickle_to_. Invariant: trickle_to_ < body_end_ once the
    // head has passed, so the object's last byte (and a chunked body's
    // terminating chunk, which follows it) never reaches the client before
    // the verdict.
    bool ticking_ = false;        // ticks asked of the host for this object
    bool trickling_ = false;      // its head has been mapped
    uint64_t held_since_ms_ = 0;  // when its head completed
    uint64_t trickle_since_ms_ = 0;
    uint64_t head_end_ = 0;    // input offset of its first body byte
    uint64_t body_end_ = 0;    // input offset after its last body byte so far
    uint64_t trickle_to_ = 0;  // input offset up to which it may be mapped
};

bool HttpInspector::Side::on_tick(uint64_t now_ms) {
    if (!ticking_ || (mode_ != Mode::Holding && mode_ != Mode::Judging) || verdicts_in_)
        return false;
    if (!trickling_) {
        uint64_t after_ms = uint64_t(in_.host_.policy().trickle_after_s) * 1000;
        if (now_ms - std::min(now_ms, held_since_ms_) < after_ms) return false;
        trickling_ = true;
        trickle_since_ms_ = now_ms;
        trickle_to_ = head_end_;
        ++in_.counters_.trickled;
        return true;
    }
    uint64_t received = body_end_ - std::min(body_end_, head_end_);
    if (received < 2) return false;
    uint64_t by_time = kTrickleBytesPerSecond * (now_ms - trickle_since_ms_) / 1000;
    uint64_t by_share = received / kTrickleShare;
    uint64_t to = std::min({head_end_ + std::min(by_time, by_share), body_end_ - 1});
    if (to <= trickle_to_) return false;
    trickle_to_ = to;
    return true;
}

void HttpInspector::Side::stop_trickling() {
    if (ticking_) in_.host_.want_ticks(false);
    ticking_ = trickling_ = false;
}

void HttpInspector::Side::block(const ObjectInfo& info, std::string detection, std::string category,
                                const std::string& event_id) {
    ++in_.counters_.objects_blocked;
    bool trickled = trickling_;
    stop_trickling();
    if (!trickled) {
        in_.block(info, std::move(detection), std::move(category), event_id);
        return;
    }
    // The client has the head: a block page cannot follow it. Resets end
    // both sides, so the client never mistakes what it got for the file.
    in_.closing_ = true;
    in_.host_.reset_both();
}

void HttpInspector::Side::on_body(uint64_t offset, std::span<const uint8_t> data) {
    if (mode_ != Mode::Holding || body_overflow_) return;
    body_end_ = offset + data.size();
    uint64_t max = in_.host_.limits().max_content_size;
    if (!body_failed_.empty()) return;
    if (body_->size() + data.size() > max) {
        // Bodies of unknown length (chunked, close-delimited) learn here that
        // they are too big: the caller falls back before anything more.
        body_overflow_ = true;
        return;
    }
    switch (body_->append(data)) {
        case ObjectBuffer::Append::Ok:
            break;
        case ObjectBuffer::Append::OverLimit:
            body_overflow_ = true;
            break;
        case ObjectBuffer::Append::NoResource:
            body_failed_ = "cannot keep the body: " + body_->error();
            break;
    }
}

void HttpInspector::Side::map(uint64_t offset, std::span<const uint8_t> pending, Push push,
                              StreamSink& sink) {
    Cursor c{offset, sink};
    uint64_t end = offset + pending.size();
    if (in_.closing_) return;
    if (!passthrough_ && offset > framer_.parsed()) {
        // The engine let bytes through that were never parsed (its pending
        // limit): the framing of this flow is lost. Not a release: a peer
        // could provoke it to get what follows unscanned.
        on_protocol_error(c, "bytes passed unparsed at the pending limit");
    }
    for (;;) {
        if (in_.closing_) return;
        if (passthrough_) {
            c.pass_to(end);
            set_relay(sink, false);
            return;
        }
        if (trickling_ && (mode_ == Mode::Holding || mode_ == Mode::Judging))
            c.pass_to(trickle_to_);
        if (mode_ == Mode::Judging) {
            if (!verdicts_in_) return;  // the object and all after it stay unmapped
            c.pass_to(message_end_);
            finish_message(c);
            continue;
        }
        if (mode_ == Mode::WaitUpgrade) {
            if (in_.released_) {
                passthrough_ = true;
                continue;
            }
            at_end(c, end, push);
            return;
        }
        if (mode_ == Mode::Idle && !framer_.in_message() && !before_message(c, offset, pending)) {
            at_end(c, end, push);
            return;
        }
        if (passthrough_ || in_.closing_) continue;
        HttpFramer::Event e = framer_.parse(offset, pending, this);
        bool at_fin = e == HttpFramer::Event::NeedMore && push == Push::End;
        if (at_fin) e = framer_.finish(this);
        if (mode_ == Mode::Holding && body_overflow_) {
            fallback(c, Category::ContentSize, "body larger than max_content_size");
            if (in_.closing_) return;
        }
        if (mode_ == Mode::Holding && !body_failed_.empty()) {
            fallback(c, Category::OutOfResource, body_failed_);
            if (in_.closing_) return;
        }
        switch (e) {
            case HttpFramer::Event::NeedMore:
                if (mode_ == Mode::Passing) c.pass_to(framer_.parsed());
                at_end(c, end, push);
                return;
            case HttpFramer::Event::HeadComplete:
                on_head(c);
                break;
            case HttpFramer::Event::MessageComplete:
                on_message_end(c);
                break;
            case HttpFramer::Event::Error:
                if (at_fin) {
                    // The sender closed inside a message: what it sent is all
                    // the receiver gets, so that is what is judged.
                    on_message_end(c);
                    break;
                }
                on_protocol_error(c, framer_.error());
                break;
        }
    }
}

bool HttpInspector::Side::before_message(Cursor& c, uint64_t offset,
                                         std::span<const uint8_t> pending) {
    if (in_.released_) {
        passthrough_ = true;
        return true;
    }
    if (framer_.parsed() >= offset + pending.size()) return false;  // nothing new
    if (requests()) {
        if (framer_.parsed() == 0 && offset == 0 && pending[0] == kTlsHandshake) {
            in_.release(ReleaseReason::Tls);
            passthrough_ = true;
            return true;
        }
        return in_.requests_.size() < kMaxQueuedRequests;
    }
    if (in_.requests_.empty()) {
        if (!in_.any_request_) {
            // The server speaks first: not HTTP.
            in_.release(ReleaseReason::NotProtocol);
            passthrough_ = true;
            return true;
        }
        on_protocol_error(c, "a response without a request");
        return !in_.closing_;
    }
    framer_.expect_response_to(in_.requests_.front().method);
    return true;
}

ObjectInfo HttpInspector::Side::describe(const Request& r, const HttpHead& h) const {
    ObjectInfo info;
    info.protocol = Service::Http;
    info.direction = direction_;
    info.name = r.url;
    if (auto disposition = h.header("Content-Disposition"))
        info.file_name = disposition_filename(*disposition);
    if (info.file_name.empty()) info.file_name = last_segment(r.path);
    if (auto type = h.header("Content-Type")) info.mime_type = media_type(*type);
    info.declared_size = h.content_length;
    return info;
}

void HttpInspector::Side::on_head(Cursor& c) {
    const HttpHead& h = framer_.head();
    const ProtocolPolicy& policy = in_.host_.policy();
    uint64_t max = in_.host_.limits().max_content_size;
    body_overflow_ = false;
    interim_ = switches_ = false;
    if (requests()) {
        ++in_.counters_.requests;
        Request r;
        r.method = h.method;
        r.host = std::string(trim(h.header("Host").value_or("")));
        r.path = h.url;
        bool absolute = h.url.starts_with("http://") || h.url.starts_with("https://");
        r.url = absolute || h.method == HTTP_CONNECT ? h.url : "http://" + r.host + h.url;
        r.wants_upgrade = h.method == HTTP_CONNECT;  // Upgrade: known at the message's end
        // Origin form only ("/path?query"; RFC 9112 3.2.1): any other target
        // (an absolute URL to a proxy, "*", CONNECT's authority) is not one
        // origin's connection.
        r.origin_allowlisted = h.url.starts_with('/') && policy.host_allowlisted(r.host);
        in_.any_request_ = true;
        in_.last_request_allowlisted_ = r.origin_allowlisted;
        in_.requests_.push_back(r);
        // A request head goes on at once: only its body can be an object.
        c.pass_to(framer_.head_end());
        info_ = describe(r, h);
        content_type_ = std::string(h.header("Content-Type").value_or(""));
        bool has_body = h.chunked || h.content_length.value_or(0) > 0;
        if (!has_body) {
            mode_ = Mode::Passing;
        } else if (policy.allowlisted(r.host, r.url)) {
            ++in_.counters_.allowlisted;
            in_.host_.note_allowlisted(info_);
            mode_ = Mode::Passing;
        } else if (h.content_length && *h.content_length > max) {
            fallback(c, Category::ContentSize,
                     "Content-Length " + std::to_string(*h.content_length) + " > max_content_size");
        } else {
            start_holding(c, framer_.head_end());
        }
        return;
    }
    const Request& r = in_.requests_.front();
    info_ = describe(r, h);
    interim_ = h.status / 100 == 1 && h.status != 101;
    switches_ = h.status == 101 || (r.method == HTTP_CONNECT && h.status / 100 == 2);
    bool no_body = r.method == HTTP_HEAD || h.status == 204 || h.status == 304 ||
                   h.status / 100 == 1 || switches_ ||
                   (!h.chunked && h.content_length && *h.content_length == 0);
    if (interim_ || switches_ || no_body) {
        mode_ = Mode::Passing;
    } else if (policy.allowlisted(r.host, r.url)) {
        ++in_.counters_.allowlisted;
        in_.host_.note_allowlisted(info_);
        mode_ = Mode::Passing;
    } else if (h.status == 206) {
        fallback(c, Category::Partial, "206 Partial Content");
        return;
    } else if (!h.chunked && h.content_length && *h.content_length > max) {
        fallback(c, Category::ContentSize,
                 "Content-Length " + std::to_string(*h.content_length) + " > max_content_size");
        return;
    } else {
        // The whole response is the object: its head too, so a blocked
        // response leaves nothing of itself with the client.
        start_holding(c, framer_.message_begin());
        return;
    }
    c.pass_to(framer_.parsed());
    set_relay(c.sink, false);
}

void HttpInspector::Side::start_holding(Cursor& c, uint64_t from) {
    (void)from;  // nothing from `from` on is mapped: c.at == from
    body_ = ObjectBuffer::make(in_.host_.limits().max_content_size);
    body_failed_.clear();
    mode_ = Mode::Holding;
    set_relay(c.sink, true);
    head_end_ = body_end_ = framer_.head_end();
    trickling_ = false;
    if (!requests() && in_.host_.policy().trickle_after_s > 0) {
        held_since_ms_ = in_.host_.now_ms();
        ticking_ = true;
        in_.host_.want_ticks(true);
    }
}

void HttpInspector::Side::on_message_end(Cursor& c) {
    message_end_ = framer_.parsed();
    if (mode_ == Mode::Holding) {
        if (body_->empty()) {
            // A close-delimited or chunked body that turned out empty.
            body_.reset();
            c.pass_to(message_end_);
            finish_message(c);
            return;
        }
        mode_ = Mode::Judging;
        submit_scan();
        return;
    }
    c.pass_to(message_end_);
    finish_message(c);
}

void HttpInspector::Side::finish_message(Cursor& c) {
    stop_trickling();
    set_relay(c.sink, false);
    body_.reset();
    results_.clear();
    verdicts_in_ = false;
    mode_ = Mode::Idle;
    if (requests()) {
        if (framer_.upgraded()) {
            // CONNECT or Upgrade: the answer says whether HTTP goes on.
            if (!in_.requests_.empty()) {
                in_.requests_.back().wants_upgrade = true;
                mode_ = Mode::WaitUpgrade;
            } else if (in_.released_) {
                passthrough_ = true;
            } else {
                framer_.restart();  // answered already, and not by a switch
            }
        }
        return;
    }
    if (interim_) return;  // the request still waits for its final response
    ++in_.counters_.responses;
    Request r = std::move(in_.requests_.front());
    in_.requests_.pop_front();
    if (switches_) {
        in_.release(ReleaseReason::Upgrade);
        passthrough_ = true;
        return;
    }
    if (r.wants_upgrade) in_.client_->resume_after_refused_upgrade();
}

void HttpInspector::Side::submit_scan() {
    std::vector<std::pair<ObjectInfo, std::shared_ptr<const ObjectBuffer>>> objects;
    if (requests()) {
        // Form uploads are judged by their files. GMime decodes each part into
        // memory of its own; the part is then copied into a memory file for
        // the scanner: one copy more than a plain body, for uploads only.
        for (FormFile& file : form_data_files(content_type_, body_->bytes())) {
            ObjectInfo info = info_;
            info.file_name = file.file_name;
            info.mime_type = file.mime_type;
            info.declared_size = file.bytes.size();
            auto part = ObjectBuffer::make(body_->limit());
            if (part->append(file.bytes) != ObjectBuffer::Append::Ok) {
                // A part is never longer than its body: only memory can fail
                // here. The body is then judged as a whole.
                objects.clear();
                break;
            }
            objects.emplace_back(std::move(info), std::move(part));
        }
    }
    // The quarantine keeps the whole body (de-chunked), also of a form
    // upload judged by its files.
    original_.reset();
    if (in_.host_.quarantining()) {
        auto source = std::make_shared<QuarantineSource>();
        source->bytes = body_;
        original_ = std::move(source);
    }
    if (objects.empty()) objects.emplace_back(info_, std::move(body_));
    body_.reset();
    awaiting_ = objects.size();
    verdicts_in_ = false;
    results_.clear();
    for (auto& [info, bytes] : objects) {
        uint64_t id = in_.next_id_++;
        in_.scanning_[id] = Pending{this, info};
        ++in_.counters_.objects_scanned;
        in_.host_.scan(id, info, std::move(bytes));
    }
}

void HttpInspector::Side::on_verdict(const ObjectInfo& info, const ScanVerdict& verdict) {
    results_.emplace_back(info, verdict);
    if (awaiting_ > 0 && --awaiting_ > 0) return;
    // All verdicts of the message are in: the worst decides.
    const ProtocolPolicy& policy = in_.host_.policy();
    const std::pair<ObjectInfo, ScanVerdict>* blocking = nullptr;
    for (const auto& result : results_)
        if (!blocking && policy.decide(result.second) == Action::Block) blocking = &result;
    if (!blocking) {
        original_.reset();
        for (const auto& [object, v] : results_)
            if (!v.is_clean()) in_.host_.record(object, v, "pass");
        verdicts_in_ = true;
        return;
    }
    std::string event_id;
    for (const auto& result : results_) {
        if (result.second.is_clean()) continue;
        if (&result != blocking) {
            in_.host_.record(result.first, result.second, block_action());
            continue;
        }
        ObjectInfo kept = result.first;
        kept.original = std::move(original_);
        event_id = in_.host_.record(kept, result.second, block_action());
    }
    const ScanVerdict& v = blocking->second;
    std::string detection, category;
    if (v.is_infected()) {
        detection = v.detection.signature;
        category = std::string(threat_category_name(v.detection.category));
    } else {
        detection = category = std::string(category_name(category_of(v.error)));
    }
    block(blocking->first, detection, category, event_id);
}

void HttpInspector::Side::fallback(Cursor& c, Category category, std::string reason) {
    ++in_.counters_.fallbacks;
    body_.reset();
    body_overflow_ = false;
    body_failed_.clear();
    if (in_.host_.policy().fallback_for(category) == Action::Pass) {
        in_.host_.record_fallback(info_, category, reason, "pass");
        // What was kept goes now, the rest of the object as it comes.
        stop_trickling();
        mode_ = Mode::Passing;
        c.pass_to(framer_.parsed());
        set_relay(c.sink, false);
        return;
    }
    std::string event_id = in_.host_.record_fallback(info_, category, reason, block_action());
    std::string name(category_name(category));
    block(info_, name, name, event_id);
}

void HttpInspector::Side::on_protocol_error(Cursor& c, const std::string& why) {
    if (requests() && !in_.any_request_ && !framer_.saw_header()) {
        // Not even a request line: the flow does not speak HTTP.
        in_.release(ReleaseReason::NotProtocol);
        passthrough_ = true;
        return;
    }
    ++in_.counters_.protocol_errors;
    ObjectInfo info;
    info.protocol = Service::Http;
    info.direction = direction_;
    info.name = in_.requests_.empty() ? std::string() : in_.requests_.front().url;
    if (requests() && !in_.requests_.empty()) info.name = in_.requests_.back().url;
    if (in_.host_.policy().fallback_for(Category::ProtocolError) == Action::Block) {
        in_.host_.record_fallback(info, Category::ProtocolError, why, "reset");
        in_.closing_ = true;
        in_.host_.reset_both();
        return;
    }
    in_.host_.record_fallback(info, Category::ProtocolError, why, "pass");
    body_.reset();
    if (mode_ == Mode::Holding) mode_ = Mode::Passing;  // what was held goes too
    passthrough_ = true;
    in_.release(ReleaseReason::NotProtocol);
    (void)c;
}

void HttpInspector::Side::at_end(Cursor& c, uint64_t end, Push push) {
    if (c.at >= end || in_.closing_) return;
    if (push == Push::End && mode_ != Mode::Holding && mode_ != Mode::Judging) {
        // The sender closed with a head (or bytes waiting for an upgrade's
        // answer) incomplete: nothing of an object is in them.
        c.pass_to(end);
        set_relay(c.sink, false);
        return;
    }
    if (push != Push::Stalled) return;
    if (mode_ == Mode::Holding && relay_) {
        fallback(c, Category::OutOfResource, "relay store full");
        return;
    }
    // The sender waits for a head that came in pieces: the engine
    // acknowledges it while it is kept. Bytes kept for another reason (a
    // full request queue, an upgrade's answer) stay unacknowledged: the
    // sender's retransmissions show them again once that reason is gone.
    if (mode_ == Mode::Idle && framer_.in_message()) set_relay(c.sink, true);
}

HttpInspector::HttpInspector(InspectorHost& host, HttpFramerLimits limits)
    : host_(host),
      client_(std::make_unique<Side>(*this, Direction::ClientToServer, limits)),
      server_(std::make_unique<Side>(*this, Direction::ServerToClient, limits)) {}

HttpInspector::~HttpInspector() = default;

StreamTransform& HttpInspector::transform(Direction d) {
    return d == Direction::ClientToServer ? static_cast<StreamTransform&>(*client_) : *server_;
}

void HttpInspector::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    auto it = scanning_.find(id);
    if (it == scanning_.end()) return;
    Pending p = std::move(it->second);
    scanning_.erase(it);
    if (closing_) return;
    p.side->on_verdict(p.info, verdict);
}

bool HttpInspector::on_tick(uint64_t now_ms) {
    if (closing_) return false;
    return server_->on_tick(now_ms);
}

size_t HttpInspector::memory_bytes() const {
    return client_->memory_bytes() + server_->memory_bytes();
}

void HttpInspector::release(ReleaseReason reason) {
    if (released_) return;
    released_ = true;
    release_reason_ = reason;
    release_host_if_idle();
}

void HttpInspector::release_if_allowlisted() {
    if (released_ || closing_ || !last_request_allowlisted_ || !host_.policy().allowlist_release)
        return;
    // A request behind the allowlisted one, already in the engine (pipelined
    // or in pieces), is judged by its own Host first: the release point is a
    // request boundary with nothing of the client's after it.
    if (!client_->idle_at_input_end()) return;
    // An earlier request to another host still awaits its response, which
    // must be scanned.
    for (const Request& r : requests_)
        if (!r.origin_allowlisted) return;
    release(ReleaseReason::Allowlisted);
}

void HttpInspector::release_host_if_idle() {
    if (!released_ || host_released_ || closing_) return;
    if (client_->holds_object() || server_->holds_object()) return;
    host_released_ = true;
    host_.release(release_reason_);
}

void HttpInspector::block(const ObjectInfo& info, std::string detection, std::string category,
                          const std::string& event_id) {
    MessageFields fields = host_.message_fields();
    fields.detection = std::move(detection);
    fields.category = std::move(category);
    fields.object = info.name;
    fields.action = "block";
    fields.event_id = event_id;
    std::string response = http_block_response(host_.render_message("http-block", fields));
    closing_ = true;
    host_.send_and_close(Direction::ServerToClient,
                         {reinterpret_cast<const uint8_t*>(response.data()), response.size()});
}

}  // namespace nfqscan
