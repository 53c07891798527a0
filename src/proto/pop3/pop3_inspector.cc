#include "pop3_inspector.h"

#include <algorithm>

#include "../line_reader.h"
#include "../mail/held_message.h"
#include "../mail/mail.h"
#include "../map_cursor.h"
#include "../text.h"

namespace nfqscan {

namespace {

using text::chomp;
using text::upper;

constexpr uint8_t kTlsHandshake = 0x16;
constexpr auto C2S = Direction::ClientToServer;
constexpr auto S2C = Direction::ServerToClient;
// Kept of a command's argument for the event log ("RETR 17").
constexpr size_t kMaxNamedArgument = 64;

// The status of a response line (RFC 1939 3: "+OK" and "-ERR" in upper
// case, followed by a space or the line end; RFC 5034: "+ " continues AUTH).
enum class Status : uint8_t { Ok, Err, Continue, Other };
Status status_of(std::string_view line) {
    line = chomp(line);
    auto is = [&](std::string_view word) {
        return line.starts_with(word) && (line.size() == word.size() || line[word.size()] == ' ');
    };
    if (is("+OK")) return Status::Ok;
    if (is("-ERR")) return Status::Err;
    if (is("+")) return Status::Continue;
    return Status::Other;
}

}  // namespace

// Client -> server: command lines, queued for their responses.
class Pop3Inspector::Client final : public StreamTransform {
  public:
    explicit Client(Pop3Inspector& in) : in_(in), lines_(kMaxLine) {}

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;

    // The server asked for the next line of an AUTH exchange.
    void on_continuation() { ++auth_credit_; }
    // The command `e` is answered: the client may go on.
    void on_answered(Expect e) {
        if (e == Expect::Auth) auth_open_ = false, auth_credit_ = 0;
        if (e == Expect::Stls) stls_open_ = false;
    }
    // Bytes wait for an answer of the server (on_answered, on_continuation).
    bool waiting() const { return waiting_; }

  private:
    // Whether the next line must wait: an AUTH exchange or an STLS waits for
    // the server (what follows is SASL data or TLS, not commands), and the
    // queue is bounded.
    bool blocked() const {
        if (auth_open_) return auth_credit_ == 0;
        return stls_open_ || in_.commands_.size() >= kMaxQueuedCommands;
    }
    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    void on_line(std::string_view line, StreamSink& sink);

    Pop3Inspector& in_;
    LineReader lines_;
    bool passthrough_ = false;
    bool relay_ = false;
    bool auth_open_ = false;
    unsigned auth_credit_ = 0;  // "+ " continuations not answered by a client line yet
    bool stls_open_ = false;
    bool waiting_ = false;
};

// Server -> client: the greeting, then one response per queued command.
class Pop3Inspector::Server final : public StreamTransform {
  public:
    explicit Server(Pop3Inspector& in)
        : in_(in), lines_(kMaxLine), held_(in.host_, Service::Pop3, S2C) {}

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;
    // A verdict of the judge's scans (false: not one of them).
    bool on_verdict(uint64_t id, const ScanVerdict& verdict);
    // A message is held or judged: the flow cannot be released yet.
    bool holds_message() const {
        return mode_ == Mode::Holding || mode_ == Mode::Judging || mode_ == Mode::Draining;
    }
    size_t memory_bytes() const { return held_.memory_bytes(); }
    // The flow is released for a protocol error (fallback pass): a message
    // being held goes as it is (logged as that error), the rest passes.
    // The rest of a blocked message is being dropped: its end must be found
    // (what follows it is the next response).
    bool drops_message() const { return mode_ == Mode::Draining; }
    void abandon_message() {
        if (mode_ != Mode::Holding) return;
        held_.drop();
        mode_ = Mode::Status;
    }

  private:
    enum class Mode : uint8_t {
        Status,     // before a response's status line (kept until complete)
        Listing,    // a multi-line response, passing as it comes
        Capa,       // CAPA's lines, one at a time (STLS may go)
        Holding,    // a message accumulating, unmapped (relayed)
        Judging,    // the message is complete; its outcome is awaited
        Unscanned,  // the rest of a message not scanned (fallback pass), passing
        Draining,   // the rest of a message replaced unscanned (fallback block), dropped
    };
    using Cursor = MapCursor;

    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    // One step in the current mode; false: nothing more can be done now.
    bool step(Cursor& c, Push push);
    bool on_status_line(Cursor& c, uint64_t line_end);
    bool decode_message(Cursor& c, Push push);
    // Skips a multi-line block (Listing, Unscanned: passed; Draining: dropped).
    bool skip_block(Cursor& c);
    void start_message(Cursor& c, uint64_t body);
    void submit(Cursor& c);
    void fallback(Cursor& c, Category category, const std::string& reason);
    void deliver(Cursor& c);
    // The current response is complete and mapped.
    void finish_response(Cursor& c);
    std::string response_for(const mail::Outcome& outcome) const;

    Pop3Inspector& in_;
    LineReader lines_;
    mail::DotDecoder dots_;
    mail::HeldMessage held_;
    Mode mode_ = Mode::Status;
    bool relay_ = false;
    bool passthrough_ = false;
    // The current message (RETR, TOP).
    ObjectInfo info_;
    uint64_t begin_ = 0;   // input offset of its status line
    uint64_t body_ = 0;    // of its first byte after the status line
    uint64_t parsed_ = 0;  // decoded up to
};

// -- client ------------------------------------------------------------------

void Pop3Inspector::Client::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                     StreamSink& sink) {
    if (in_.closing_) return;
    uint64_t at = offset;
    const uint64_t end = offset + pending.size();
    waiting_ = false;
    while (!in_.closing_) {
        if (in_.released_) passthrough_ = true;
        if (passthrough_) {
            if (end > at) sink.pass(size_t(end - at));
            at = end;
            set_relay(sink, false);
            break;
        }
        if (at == end) break;
        if (at == 0 && pending[0] == kTlsHandshake) {
            // TLS from the first byte (POP3S on a port claimed for POP3).
            in_.release(ReleaseReason::Tls);
            continue;
        }
        if (blocked()) {
            waiting_ = true;
            break;
        }
        uint64_t line_end = 0;
        LineReader::Status found = lines_.find(offset, pending, at, &line_end);
        if (found == LineReader::Status::NeedMore) break;
        if (found == LineReader::Status::TooLong) {
            in_.protocol_error(C2S, "a command line longer than " + std::to_string(kMaxLine));
            continue;
        }
        on_line(text::of(pending.subspan(size_t(at - offset), size_t(line_end - at))), sink);
        at = line_end;
        set_relay(sink, false);
    }
    if (in_.closing_ || passthrough_ || at == end) {
        in_.release_host_if_idle();
        return;
    }
    if (push == Push::End) {
        // The client closed: what it sent last is no command the server
        // answers before the end.
        sink.pass(size_t(end - at));
        set_relay(sink, false);
    } else if (push == Push::Stalled && !waiting_) {
        // A command in pieces: acknowledged by the engine while kept. Bytes
        // that wait for the server stay unacknowledged: the client's
        // retransmissions show them again once the answer is in.
        set_relay(sink, true);
    }
    in_.release_host_if_idle();
}

void Pop3Inspector::Client::on_line(std::string_view line, StreamSink& sink) {
    if (auth_open_) {
        // A SASL response (or "*" to cancel): data of the AUTH exchange.
        --auth_credit_;
        sink.pass(line.size());
        return;
    }
    in_.counters_.add(&Pop3Counters::commands);
    std::string_view words = chomp(line);
    size_t space = words.find(' ');
    std::string keyword = upper(words.substr(0, space));
    std::string_view args =
        space == std::string_view::npos ? std::string_view() : text::trim(words.substr(space + 1));
    Command command;
    command.name = keyword;
    if (keyword == "RETR" || keyword == "TOP") {
        command.expect = Expect::Message;
        command.name += " " + std::string(args.substr(0, kMaxNamedArgument));
    } else if (keyword == "LIST" || keyword == "UIDL") {
        command.expect = args.empty() ? Expect::Listing : Expect::Line;
    } else if (keyword == "CAPA") {
        command.expect = Expect::Capa;
    } else if (keyword == "AUTH") {
        // Without a mechanism, servers list theirs (multi-line).
        command.expect = args.empty() ? Expect::Listing : Expect::Auth;
        auth_open_ = !args.empty();
        auth_credit_ = 0;
    } else if (keyword == "STLS") {
        if (in_.host_.policy().starttls == StartTls::Allow) {
            command.expect = Expect::Stls;
            stls_open_ = true;
        } else {
            command.expect = Expect::Local;
            command.reply = "-ERR STLS is not available through this network\r\n";
        }
    }
    in_.commands_.push_back(command);
    if (command.expect != Expect::Local) {
        sink.pass(line.size());
        return;
    }
    // The server never sees it; the client gets -ERR in its turn.
    sink.replace(line.size(), {});
    in_.counters_.add(&Pop3Counters::starttls_refused);
    if (in_.host_.policy().starttls == StartTls::Block) {
        ObjectInfo info;
        info.protocol = Service::Pop3;
        info.direction = C2S;
        info.name = "STLS";
        Detection d;
        d.signature = "STARTTLS refused";  // as SMTP logs it
        d.category = ThreatCategory::Policy;
        in_.host_.record(info, ScanVerdict::infected(d), "block");
    }
    in_.answer_local(nullptr);
}

// -- server ------------------------------------------------------------------

void Pop3Inspector::Server::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                     StreamSink& sink) {
    Cursor c{offset, pending, sink, offset};
    while (!in_.closing_ && step(c, push)) {
    }
    if (!in_.closing_ && !passthrough_ && c.at < c.end()) {
        if (push == Push::End && (mode_ == Mode::Status || mode_ == Mode::Listing ||
                                  mode_ == Mode::Capa || mode_ == Mode::Unscanned)) {
            // The server closed inside a response that is no message.
            c.pass_to(c.end());
            set_relay(sink, false);
        } else if (push == Push::Stalled && mode_ == Mode::Status) {
            set_relay(sink, true);  // a status line in pieces
        }
    }
    in_.release_host_if_idle();
}

bool Pop3Inspector::Server::step(Cursor& c, Push push) {
    if (in_.released_ && !holds_message()) passthrough_ = true;
    if (passthrough_) {
        c.pass_to(c.end());
        set_relay(c.sink, false);
        return false;
    }
    switch (mode_) {
        case Mode::Judging:
            if (!held_.ready()) return false;  // the message and all after it wait
            deliver(c);
            return true;
        case Mode::Holding:
            return decode_message(c, push);
        case Mode::Listing:
        case Mode::Unscanned:
        case Mode::Draining:
            return skip_block(c);
        case Mode::Capa: {
            uint64_t line_end = 0;
            LineReader::Status found = lines_.find(c.offset, c.pending, c.at, &line_end);
            if (found == LineReader::Status::NeedMore) return false;
            if (found == LineReader::Status::TooLong) {
                in_.protocol_error(S2C, "a CAPA line longer than " + std::to_string(kMaxLine));
                return true;
            }
            std::string_view line = chomp(text::of(c.range(c.at, line_end)));
            if (line == ".") {
                c.pass_to(line_end);
                finish_response(c);
            } else if (in_.host_.policy().starttls != StartTls::Allow && upper(line) == "STLS") {
                c.replace_to(line_end, {});  // not offered: the client does not ask
            } else {
                c.pass_to(line_end);
            }
            return true;
        }
        case Mode::Status:
            break;
    }
    if (c.at == c.end()) return false;
    bool greeting = !in_.commands_.empty() && in_.commands_.front().expect == Expect::Greeting;
    if (greeting && !text::may_start_with(text::of(c.from(c.at)), {"+OK", "-ERR"})) {
        in_.release(ReleaseReason::NotProtocol);  // not a POP3 server
        return true;
    }
    if (!in_.commands_.empty() && in_.commands_.front().expect == Expect::Message)
        set_relay(c.sink, true);  // a message is held from its first byte
    uint64_t line_end = 0;
    LineReader::Status found = lines_.find(c.offset, c.pending, c.at, &line_end);
    if (found == LineReader::Status::NeedMore) return false;
    if (found == LineReader::Status::TooLong) {
        if (greeting) {
            in_.release(ReleaseReason::NotProtocol);
            return true;
        }
        in_.protocol_error(S2C, "a status line longer than " + std::to_string(kMaxLine));
        return true;
    }
    return on_status_line(c, line_end);
}

bool Pop3Inspector::Server::on_status_line(Cursor& c, uint64_t line_end) {
    std::string_view line = text::of(c.range(c.at, line_end));
    Status status = status_of(line);
    if (in_.commands_.empty()) {
        // Unasked: a server that ends the session says why ("-ERR
        // Disconnected for inactivity"); anything else is out of step.
        if (status != Status::Err) {
            in_.protocol_error(S2C, "a response without a command");
            return true;
        }
        c.pass_to(line_end);
        set_relay(c.sink, false);
        return true;
    }
    const Expect expect = in_.commands_.front().expect;
    if (expect == Expect::Greeting && status != Status::Ok && status != Status::Err) {
        in_.release(ReleaseReason::NotProtocol);
        return true;
    }
    if (status == Status::Other || (status == Status::Continue && expect != Expect::Auth)) {
        in_.protocol_error(S2C, "not a POP3 status line");
        return true;
    }
    if (expect == Expect::Message && status == Status::Ok) {
        start_message(c, line_end);
        return true;
    }
    c.pass_to(line_end);
    if (status == Status::Ok && (expect == Expect::Listing || expect == Expect::Capa)) {
        mode_ = expect == Expect::Listing ? Mode::Listing : Mode::Capa;
        dots_.reset();
        set_relay(c.sink, false);
        return true;
    }
    if (status == Status::Continue) {
        // AUTH goes on: the client's next line is its SASL response.
        in_.client_->on_continuation();
        if (in_.client_->waiting()) in_.host_.redrive();
        return true;
    }
    finish_response(c);
    if (expect == Expect::Stls && status == Status::Ok) in_.release(ReleaseReason::Tls);
    return true;
}

void Pop3Inspector::Server::start_message(Cursor& c, uint64_t body) {
    info_ = {};
    info_.protocol = Service::Pop3;
    info_.direction = S2C;
    info_.name = in_.commands_.front().name;
    info_.mime_type = "message/rfc822";
    begin_ = c.at;
    body_ = parsed_ = body;
    dots_.reset();
    held_.start();
    mode_ = Mode::Holding;
}

bool Pop3Inspector::Server::decode_message(Cursor& c, Push push) {
    bool over = false;
    std::string failed;
    size_t used = dots_.feed(c.from(parsed_), [&](std::span<const uint8_t> run) {
        if (over || !failed.empty()) return;
        switch (held_.buffer()->append(run)) {
            case ObjectBuffer::Append::Ok:
                break;
            case ObjectBuffer::Append::OverLimit:
                over = true;
                break;
            case ObjectBuffer::Append::NoResource:
                failed = "cannot keep the message: " + held_.buffer()->error();
                break;
        }
    });
    parsed_ += used;
    if (dots_.failed()) {
        in_.protocol_error(S2C, dots_.error());
        return true;
    }
    if (over) {
        fallback(c, Category::ContentSize, "message larger than max_content_size");
        return true;
    }
    if (!failed.empty()) {
        fallback(c, Category::OutOfResource, failed);
        return true;
    }
    if (dots_.done() || push == Push::End) {
        // At the End: the server closed inside the message, and what it sent
        // is all the client can get, so that is what is judged.
        submit(c);
        return true;
    }
    if (push == Push::Stalled && relay_) fallback(c, Category::OutOfResource, "relay store full");
    return false;
}

void Pop3Inspector::Server::submit(Cursor& c) {
    (void)c;
    mode_ = Mode::Judging;
    in_.counters_.add(&Pop3Counters::messages_scanned);
    held_.submit(in_.next_id_, info_);
}

bool Pop3Inspector::Server::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    return held_.on_verdict(id, verdict, in_.next_id_);
}

std::string Pop3Inspector::Server::response_for(const mail::Outcome& outcome) const {
    if (outcome.kind == mail::Outcome::Kind::Rewrite)
        return "+OK " + std::to_string(outcome.message.size()) + " octets\r\n" +
               mail::dot_stuff(outcome.message);
    // Reject and Drop are SMTP's (the configuration refuses them for POP3);
    // a message refused anyway is answered as a RETR of nothing.
    return "-ERR message refused by nfqscan: " + outcome.reply_text + "\r\n";
}

void Pop3Inspector::Server::deliver(Cursor& c) {
    const mail::Outcome& outcome = held_.take();
    if (outcome.kind == mail::Outcome::Kind::Deliver) {
        c.pass_to(parsed_);
    } else {
        if (outcome.blocked) in_.counters_.add(&Pop3Counters::messages_blocked);
        c.replace_to(parsed_, response_for(outcome));
    }
    finish_response(c);
}

void Pop3Inspector::Server::fallback(Cursor& c, Category category, const std::string& reason) {
    in_.counters_.add(&Pop3Counters::fallbacks);
    std::span<const uint8_t> held = held_.buffer()->bytes();
    size_t header = text::header_length(text::of(held));
    // The header, when it is all there: what a replacement or a tag keeps.
    std::span<const uint8_t> head =
        header == std::string_view::npos ? std::span<const uint8_t>() : held.first(header);
    mail::Envelope envelope = mail::envelope_from_header(held);
    mail::Outcome outcome = held_.judge().fallback(info_, category, reason, head, envelope);
    held_.drop();
    if (outcome.kind == mail::Outcome::Kind::Deliver) {
        // Passed unscanned: what is held goes now, the rest as it comes.
        c.pass_to(parsed_);
        mode_ = Mode::Unscanned;
        set_relay(c.sink, false);
    } else if (outcome.kind == mail::Outcome::Kind::Rewrite && !outcome.blocked) {
        // Passed with a tagged Subject: the header's transfer form is
        // rewritten, the rest of the message passes as it comes.
        uint64_t header_end = body_ + text::header_length(text::of(c.range(body_, parsed_)));
        std::string tagged = mail::dot_stuff(outcome.message);
        tagged.resize(tagged.size() - 3);  // its ".\r\n": the message goes on
        while (tagged.ends_with("\r\n"))
            tagged.resize(tagged.size() - 2);
        tagged += "\r\n\r\n";
        c.pass_to(body_);
        c.replace_to(header_end, tagged);
        c.pass_to(parsed_);
        mode_ = Mode::Unscanned;
        set_relay(c.sink, false);
    } else {
        // Blocked unscanned: the client gets the replacement now; the rest
        // of the original is dropped as it comes (still relayed: the server
        // is acknowledged while the client gets nothing of it).
        in_.counters_.add(&Pop3Counters::messages_blocked);
        c.replace_to(parsed_, response_for(outcome));
        mode_ = Mode::Draining;
    }
    if (dots_.done()) finish_response(c);
}

bool Pop3Inspector::Server::skip_block(Cursor& c) {
    uint64_t from = c.at;
    if (from >= c.end()) return false;
    size_t used = dots_.feed(c.from(from), [](std::span<const uint8_t>) {});
    if (dots_.failed()) {
        in_.protocol_error(S2C, dots_.error());
        return true;
    }
    uint64_t to = from + used;
    parsed_ = to;
    if (mode_ == Mode::Draining)
        c.replace_to(to, {});
    else
        c.pass_to(to);
    if (dots_.done()) {
        finish_response(c);
        return true;
    }
    return false;
}

void Pop3Inspector::Server::finish_response(Cursor& c) {
    in_.counters_.add(&Pop3Counters::responses);
    mode_ = Mode::Status;
    set_relay(c.sink, false);
    if (in_.commands_.empty()) return;
    Expect answered = in_.commands_.front().expect;
    in_.commands_.pop_front();
    in_.client_->on_answered(answered);
    in_.answer_local(&c.sink);
    // The client may have a command waiting for this answer (a full queue,
    // the end of an AUTH or a refused STLS).
    if (in_.client_->waiting()) in_.host_.redrive();
}

// -- the inspector -----------------------------------------------------------

Pop3Inspector::Pop3Inspector(InspectorHost& host)
    : host_(host),
      client_(std::make_unique<Client>(*this)),
      server_(std::make_unique<Server>(*this)),
      counters_(host) {
    commands_.push_back({Expect::Greeting, "greeting", {}});
}

Pop3Inspector::~Pop3Inspector() = default;

StreamTransform& Pop3Inspector::transform(Direction d) {
    return d == C2S ? static_cast<StreamTransform&>(*client_) : *server_;
}

void Pop3Inspector::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    if (closing_) return;
    server_->on_verdict(id, verdict);
}

size_t Pop3Inspector::memory_bytes() const {
    return server_->memory_bytes();
}

void Pop3Inspector::answer_local(StreamSink* server_sink) {
    while (!commands_.empty() && commands_.front().expect == Expect::Local) {
        std::span<const uint8_t> reply = text::bytes(commands_.front().reply);
        if (server_sink)
            server_sink->replace(0, reply);
        else
            host_.send(S2C, reply);
        counters_.add(&Pop3Counters::responses);
        commands_.pop_front();
    }
}

void Pop3Inspector::release(ReleaseReason reason) {
    if (released_) return;
    released_ = true;
    release_reason_ = reason;
    release_host_if_idle();
}

void Pop3Inspector::release_host_if_idle() {
    if (!released_ || host_released_ || closing_ || server_->holds_message()) return;
    host_released_ = true;
    host_.release(release_reason_);
}

void Pop3Inspector::protocol_error(Direction d, const std::string& why) {
    if (closing_) return;
    ObjectInfo info;
    info.protocol = Service::Pop3;
    info.direction = d;
    info.name = commands_.empty() ? std::string() : commands_.front().name;
    // Inside a blocked message the rest of it cannot be told from what
    // follows: passing it would pass the message. Both peers are reset
    // whatever the fallback says.
    if (host_.policy().fallback_for(Category::ProtocolError) == Action::Block ||
        server_->drops_message()) {
        counters_.add(&Pop3Counters::protocol_errors);
        host_.record_fallback(info, Category::ProtocolError, why, "reset");
        closing_ = true;
        host_.reset_both();
        return;
    }
    server_->abandon_message();
    if (released_) return;  // logged once
    counters_.add(&Pop3Counters::protocol_errors);
    host_.record_fallback(info, Category::ProtocolError, why, "pass");
    release(ReleaseReason::NotProtocol);
}

}  // namespace nfqscan
