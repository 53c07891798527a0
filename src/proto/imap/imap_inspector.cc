#include "imap_inspector.h"

#include <algorithm>
#include <charconv>
#include <optional>

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
constexpr size_t kMaxLiteralDigits = 19;  // fits uint64_t

// A literal announced at the end of a line: "{N}", "{N+}" (LITERAL+),
// "~{N}" (BINARY).
struct Literal {
    uint64_t size = 0;
    size_t marker = 0;    // where "~{" or "{" starts in the line
    bool binary = false;  // "~{"
    bool sync = true;     // "{N}": the sender waits for "+" (not "{N+}", "{N-}")
};

// The literal a line (without its CRLF) announces, if any. A malformed one
// ("{12x}") is none: the line is then just text, as a server would read it.
std::optional<Literal> literal_of(std::string_view line) {
    if (!line.ends_with('}')) return std::nullopt;
    size_t open = line.rfind('{');
    if (open == std::string_view::npos) return std::nullopt;
    std::string_view digits = line.substr(open + 1, line.size() - open - 2);
    bool sync = !(digits.ends_with('+') || digits.ends_with('-'));
    if (!sync) digits.remove_suffix(1);
    if (digits.empty() || digits.size() > kMaxLiteralDigits) return std::nullopt;
    Literal l;
    l.sync = sync;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), l.size);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    l.binary = open > 0 && line[open - 1] == '~';
    l.marker = l.binary ? open - 1 : open;
    return l;
}

// `message` in exactly `size` bytes, for a server that waits for that many:
// padded with empty lines, or cut (a notice longer than the message it
// replaces: what remains is still no part of the original).
std::string fit_to(std::string message, uint64_t size) {
    while (message.size() + 2 <= size)
        message += "\r\n";
    message.resize(size_t(size), ' ');
    return message;
}

// What the literal of a FETCH data item carries.
enum class Item : uint8_t {
    Other,    // not a message's content (not a FETCH, or another item)
    Message,  // the whole message: BODY[], RFC822, BINARY[]
    Header,   // a header only: RFC822.HEADER, BODY[HEADER...], BODY[n.MIME]
    Partial,  // a part or a range: BODY[1], BODY[TEXT], BODY[]<0>, RFC822.TEXT
};
struct ItemName {
    Item kind = Item::Other;
    std::string name;  // "BODY[]<0>", for the event log
    bool origin = false;
    bool whole_section = false;  // "[]"
};

// The data item whose value is the literal: the text before the literal's
// marker ("... BODY[HEADER.FIELDS (FROM TO)] " or "... RFC822 ").
ItemName item_before(std::string_view before) {
    ItemName out;
    before = text::trim(before);
    size_t end = before.size();
    if (before.ends_with('>')) {
        size_t lt = before.rfind('<');
        if (lt == std::string_view::npos) return out;
        out.origin = true;
        end = lt;
    }
    std::string_view head = before.substr(0, end);
    std::string section;
    bool has_section = false;
    if (head.ends_with(']')) {
        size_t lb = head.rfind('[');
        if (lb == std::string_view::npos) return out;
        section = upper(head.substr(lb + 1, head.size() - lb - 2));
        has_section = true;
        head = head.substr(0, lb);
    }
    size_t start = head.find_last_of(" (");
    std::string name = upper(head.substr(start == std::string_view::npos ? 0 : start + 1));
    out.name = std::string(before.substr(start == std::string_view::npos ? 0 : start + 1));
    if (!has_section) {
        if (name == "RFC822") out.kind = Item::Message;
        if (name == "RFC822.HEADER") out.kind = Item::Header;
        if (name == "RFC822.TEXT") out.kind = Item::Partial;
        return out;
    }
    if (name != "BODY" && name != "BODY.PEEK" && name != "BINARY" && name != "BINARY.PEEK")
        return out;
    out.whole_section = section.empty();
    if (section.empty())
        out.kind = out.origin ? Item::Partial : Item::Message;
    else if (section.starts_with("HEADER") || section.find(".HEADER") != std::string::npos ||
             section.ends_with("MIME"))
        out.kind = Item::Header;
    else
        out.kind = Item::Partial;
    return out;
}

// "* 12 FETCH ..." -> "12"; empty when the line is no FETCH response.
std::string fetch_number(std::string_view line) {
    if (!line.starts_with("* ")) return {};
    size_t digits = 2;
    while (digits < line.size() && line[digits] >= '0' && line[digits] <= '9')
        ++digits;
    if (digits == 2 || upper(line.substr(digits, 7)) != " FETCH ") return {};
    return std::string(line.substr(2, digits - 2));
}

// The line with every capability STARTTLS removed (from "* CAPABILITY" and
// "[CAPABILITY ...]").
std::string without_starttls(std::string_view line) {
    std::string out(line);
    for (;;) {
        std::string up = upper(out);
        size_t at = up.find(" STARTTLS");
        if (at == std::string::npos) return out;
        size_t after = at + 9;
        if (after < up.size() && up[after] != ' ' && up[after] != ']' && up[after] != '\r' &&
            up[after] != '\n')
            return out;  // another word that starts so
        out.erase(at, 9);
    }
}

bool mentions_capabilities(std::string_view line) {
    std::string up = upper(line.substr(0, std::min<size_t>(line.size(), 4096)));
    return up.starts_with("* CAPABILITY ") || up.find("[CAPABILITY ") != std::string::npos;
}

// The tag and the command (upper case) of a command line.
std::pair<std::string, std::string> tag_and_command(std::string_view line) {
    line = chomp(line);
    size_t space = line.find(' ');
    if (space == std::string_view::npos) return {std::string(line), {}};
    std::string_view rest = line.substr(space + 1);
    size_t next = rest.find(' ');
    std::string command = upper(rest.substr(0, next));
    if (command == "UID" && next != std::string_view::npos) {
        std::string_view after = rest.substr(next + 1);
        command += " " + upper(after.substr(0, after.find(' ')));
    }
    return {std::string(line.substr(0, space)), command};
}

// L of the first "[]<0.L>" in a FETCH command (the length a client asks
// of a message it reads in pieces).
std::optional<uint64_t> partial_length(std::string_view line) {
    std::string up = upper(line);
    size_t at = up.find("[]<0.");
    if (at == std::string::npos) return std::nullopt;
    uint64_t length = 0;
    const char* from = up.data() + at + 5;
    auto [end, ec] = std::from_chars(from, up.data() + up.size(), length);
    if (ec != std::errc() || end == from || *end != '>') return std::nullopt;
    return length;
}

}  // namespace

// Client -> server: commands, their literals passed as they come.
class ImapInspector::Client final : public StreamTransform {
  public:
    explicit Client(ImapInspector& in)
        : in_(in), lines_(kMaxLine), held_(in.host_, Service::Imap, C2S) {}
    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;
    bool on_verdict(uint64_t id, const ScanVerdict& verdict);
    // The STARTTLS the client waits on was refused by the server.
    void resume() { waiting_tls_ = false; }
    bool waiting() const { return waiting_; }
    // A message is held, judged or being dropped: the flow is not released
    // before it is done (what passes unchanged from a release would include
    // it).
    bool holds_message() const {
        return upload_ == Upload::Holding || upload_ == Upload::Judging ||
               upload_ == Upload::Draining;
    }
    size_t memory_bytes() const { return held_.memory_bytes(); }

  private:
    // An APPEND's message literal.
    enum class Upload : uint8_t {
        None,
        Holding,    // accumulating, unmapped (relayed)
        Judging,    // complete; its outcome is awaited
        Unscanned,  // too big, passing as it comes
        Draining,   // too big and replaced: dropped as it comes
    };
    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    // A whole line (segment) of a command, [c.at, end).
    void on_line(MapCursor& c, uint64_t end);
    // One step of an upload; false: nothing more can be done now.
    bool upload_step(MapCursor& c, Push push);
    void start_upload(MapCursor& c, uint64_t end, const Literal& literal);
    void finish_upload(MapCursor& c, const mail::Outcome& outcome);
    // The literal's marker as the server gets it: non-synchronising, since
    // the client had its "+" from nfqscand already.
    std::string marker_for(uint64_t size) const {
        return std::string(binary_ ? "~{" : "{") + std::to_string(size) + "+}\r\n";
    }

    ImapInspector& in_;
    LineReader lines_;
    mail::HeldMessage held_;
    bool passthrough_ = false;
    bool relay_ = false;
    bool command_start_ = true;  // the next line starts a command
    bool long_line_ = false;     // part of the current line passed already
    uint64_t literal_left_ = 0;
    bool waiting_tls_ = false;  // STARTTLS sent: what follows is TLS, once answered OK
    bool waiting_ = false;
    // The current command is an APPEND: its literals are messages.
    bool append_ = false;
    std::string mailbox_;
    Upload upload_ = Upload::None;
    ObjectInfo info_;
    bool binary_ = false;
    // The server waits for exactly the announced size ("{N}" passed to a
    // server without LITERAL+): a replacement is fitted to it.
    bool fixed_size_ = false;
    uint64_t size_ = 0;    // announced
    uint64_t body_ = 0;    // input offset of its first byte
    uint64_t parsed_ = 0;  // taken up to
};

// Server -> client: responses; whole-message FETCH literals are objects.
class ImapInspector::Server final : public StreamTransform {
  public:
    explicit Server(ImapInspector& in)
        : in_(in), lines_(kMaxLine), held_(in.host_, Service::Imap, S2C) {}
    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;
    bool on_verdict(uint64_t id, const ScanVerdict& verdict);
    bool holds_message() const {
        return mode_ == Mode::Holding || mode_ == Mode::Judging || mode_ == Mode::HeadHold ||
               mode_ == Mode::Draining;
    }
    // At a response boundary: own replies may go to the client now.
    bool at_boundary() const { return mode_ == Mode::Line && response_start_ && !long_line_; }
    size_t memory_bytes() const { return held_.memory_bytes() + head_.capacity(); }

  private:
    enum class Mode : uint8_t {
        Line,       // in a response line (kept until its LF, bounded)
        Literal,    // a literal that is no object, passing as it comes
        Holding,    // a message literal accumulating, unmapped from its "{"
        Judging,    // complete; its outcome is awaited
        HeadHold,   // a message too big to scan: its header is kept for the fallback
        Unscanned,  // the rest of a too-big message, passing
        Draining,   // the rest of a message replaced unscanned, dropped
    };
    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    bool step(MapCursor& c, Push push);
    bool on_line(MapCursor& c, uint64_t end);
    void on_literal(MapCursor& c, std::string_view line, uint64_t end, const Literal& literal);
    void start_message(MapCursor& c, uint64_t marker, uint64_t end, const Literal& literal,
                       const ItemName& item);
    bool hold(MapCursor& c, Push push);
    bool hold_head(MapCursor& c, Push push);
    void fallback_with_head(MapCursor& c, Category category, const std::string& reason);
    void submit();
    void deliver(MapCursor& c);
    std::string literal_for(const std::string& message) const {
        return std::string(binary_ ? "~{" : "{") + std::to_string(message.size()) + "}\r\n" +
               message;
    }
    std::string replacement_for(const mail::Outcome& outcome) const;

    ImapInspector& in_;
    LineReader lines_;
    mail::HeldMessage held_;
    Mode mode_ = Mode::Line;
    bool relay_ = false;
    bool passthrough_ = false;
    bool greeted_ = false;
    bool response_start_ = true;  // the next line starts a response
    bool long_line_ = false;
    std::string fetch_;  // the current response is "* <fetch_> FETCH"
    uint64_t literal_left_ = 0;
    // The current message literal.
    ObjectInfo info_;
    bool binary_ = false;
    uint64_t begin_ = 0;   // input offset of its marker ("{" or "~{")
    uint64_t body_ = 0;    // of its first byte
    uint64_t parsed_ = 0;  // taken up to
    std::string head_;     // HeadHold: what is kept of it
};

// -- client ------------------------------------------------------------------

void ImapInspector::Client::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                     StreamSink& sink) {
    if (in_.closing_) return;
    MapCursor c{offset, pending, sink, offset};
    waiting_ = false;
    while (!in_.closing_) {
        if (in_.released_ && !holds_message()) passthrough_ = true;
        if (passthrough_) {
            c.pass_to(c.end());
            set_relay(sink, false);
            break;
        }
        if (c.at == c.end()) break;
        if (c.at == 0 && pending[0] == kTlsHandshake) {
            in_.release(ReleaseReason::Tls);  // IMAPS on a port claimed for IMAP
            continue;
        }
        if (upload_ != Upload::None) {
            if (upload_step(c, push)) continue;
            break;
        }
        if (literal_left_ > 0) {
            uint64_t n = std::min(literal_left_, c.end() - c.at);
            c.pass_to(c.at + n);
            literal_left_ -= n;
            continue;
        }
        if (waiting_tls_) {
            waiting_ = true;
            break;
        }
        uint64_t line_end = 0;
        LineReader::Status found = lines_.find(c.offset, c.pending, c.at, &line_end);
        if (found == LineReader::Status::NeedMore) break;
        if (found == LineReader::Status::TooLong) {
            // A long command (a UID set): only its end can announce a literal.
            if (command_start_ && !long_line_) {
                on_line(c, c.at);  // its first bytes name the command
            }
            // Only bytes searched (kMaxLine of them) pass, never beyond.
            long_line_ = true;
            c.pass_to(c.at + kMaxLine - kLineTail);
            continue;
        }
        on_line(c, line_end);
        if (upload_ == Upload::None) set_relay(sink, false);  // an upload stays relayed
    }
    if (in_.closing_ || passthrough_ || c.at == c.end() || upload_ != Upload::None) {
        in_.release_host_if_idle();
        return;
    }
    if (push == Push::End) {
        c.pass_to(c.end());
        set_relay(sink, false);
    } else if (push == Push::Stalled && !waiting_) {
        set_relay(sink, true);  // a line in pieces: acknowledged while kept
    }
    in_.release_host_if_idle();
}

void ImapInspector::Client::on_line(MapCursor& c, uint64_t end) {
    // end == c.at: only the command's start is known (a long line).
    std::string_view line = text::of(c.range(c.at, end == c.at ? c.end() : end));
    if (command_start_ && !long_line_) {
        in_.counters_.add(&ImapCounters::commands);
        auto [tag, command] = tag_and_command(line.substr(0, std::min<size_t>(line.size(), 256)));
        if (command == "STARTTLS") {
            if (in_.host_.policy().starttls == StartTls::Allow) {
                in_.starttls_tag_ = tag;
                waiting_tls_ = true;
            } else {
                // Never forwarded: the client gets NO in the server's stead.
                c.replace_to(end, {});
                in_.counters_.add(&ImapCounters::starttls_refused);
                if (in_.host_.policy().starttls == StartTls::Block) {
                    ObjectInfo info;
                    info.protocol = Service::Imap;
                    info.direction = C2S;
                    info.name = "STARTTLS";
                    Detection d;
                    d.signature = "STARTTLS refused";  // as SMTP logs it
                    d.category = ThreatCategory::Policy;
                    in_.host_.record(info, ScanVerdict::infected(d), "block");
                }
                in_.queue_reply(tag + " NO STARTTLS is not available through this network\r\n");
                return;
            }
        } else if (command == "APPEND") {
            append_ = true;
            std::string_view words = chomp(line);
            std::string_view rest = words.substr(std::min(words.size(), tag.size() + 8));
            mailbox_ = std::string(rest.substr(0, std::min<size_t>(rest.find(' '), 64)));
        } else if (command == "FETCH" || command == "UID FETCH") {
            if (auto length = partial_length(line)) {
                if (in_.partial_lengths_.size() >= kMaxRememberedTags)
                    in_.partial_lengths_.erase(in_.partial_lengths_.begin());
                in_.partial_lengths_[tag] = *length;
            }
        }
    }
    if (end == c.at) return;
    std::optional<Literal> literal = literal_of(chomp(line));
    long_line_ = false;
    command_start_ = !literal;
    if (literal && append_ && literal->size > 0) {
        start_upload(c, end, *literal);
        return;
    }
    c.pass_to(end);
    literal_left_ = literal ? literal->size : 0;
    if (!literal) append_ = false;  // the command ends here
}

void ImapInspector::Client::start_upload(MapCursor& c, uint64_t end, const Literal& literal) {
    info_ = {};
    info_.protocol = Service::Imap;
    info_.direction = C2S;
    info_.name = "APPEND " + mailbox_;
    info_.mime_type = "message/rfc822";
    info_.declared_size = literal.size;
    binary_ = literal.binary;
    size_ = literal.size;
    body_ = parsed_ = end;
    // The command's words go on; the literal waits for its verdict.
    c.pass_to(c.at + literal.marker);
    fixed_size_ = literal.sync && !in_.literal_plus_;
    if (fixed_size_) {
        // The server must see "{N}" to say "+": it then waits for N bytes,
        // so a replacement has that size.
        c.pass_to(end);
    } else if (literal.sync) {
        // The client waits for "+": nfqscand says it, and the server gets
        // the literal as non-synchronising (LITERAL+) once it is judged.
        in_.queue_reply("+ Ready for literal data\r\n");
    }
    set_relay(c.sink, true);
    if (size_ > in_.host_.limits().max_content_size) {
        in_.counters_.add(&ImapCounters::fallbacks);
        mail::Outcome outcome = held_.judge().fallback(
            info_, Category::ContentSize, "APPEND literal larger than max_content_size", {}, {});
        if (outcome.kind == mail::Outcome::Kind::Deliver) {
            if (!fixed_size_) c.replace_to(end, marker_for(size_));
            upload_ = Upload::Unscanned;
        } else {
            in_.counters_.add(&ImapCounters::messages_blocked);
            std::string message = outcome.kind == mail::Outcome::Kind::Rewrite
                                      ? outcome.message
                                      : mail::replace_body({}, outcome.reply_text, {});
            c.replace_to(
                end, fixed_size_ ? fit_to(message, size_) : marker_for(message.size()) + message);
            upload_ = Upload::Draining;
        }
        return;
    }
    held_.start();
    upload_ = Upload::Holding;
}

bool ImapInspector::Client::upload_step(MapCursor& c, Push push) {
    uint64_t left = size_ - (parsed_ - body_);
    switch (upload_) {
        case Upload::None:
            return false;
        case Upload::Unscanned:
        case Upload::Draining: {
            uint64_t n = std::min(left, c.end() - c.at);
            if (upload_ == Upload::Draining)
                c.replace_to(c.at + n, {});
            else
                c.pass_to(c.at + n);
            parsed_ += n;
            if (n < left) return false;
            upload_ = Upload::None;
            set_relay(c.sink, false);
            return true;
        }
        case Upload::Judging:
            if (!held_.ready()) return false;
            finish_upload(c, held_.take());
            return true;
        case Upload::Holding:
            break;
    }
    uint64_t n = std::min(left, c.end() - parsed_);
    if (n > 0 &&
        held_.buffer()->append(c.range(parsed_, parsed_ + n)) != ObjectBuffer::Append::Ok) {
        // The size was checked against the limit: only memory can fail.
        std::string why = "cannot keep the message: " + held_.buffer()->error();
        held_.drop();
        in_.counters_.add(&ImapCounters::fallbacks);
        mail::Outcome outcome = held_.judge().fallback(info_, Category::OutOfResource, why, {}, {});
        // What is held goes as judged; the rest follows in the same way.
        if (outcome.kind == mail::Outcome::Kind::Deliver) {
            if (!fixed_size_) c.replace_to(body_, marker_for(size_));
            c.pass_to(parsed_);
            upload_ = Upload::Unscanned;
        } else {
            std::string message = outcome.kind == mail::Outcome::Kind::Rewrite
                                      ? outcome.message
                                      : mail::replace_body({}, outcome.reply_text, {});
            c.replace_to(parsed_, fixed_size_ ? fit_to(message, size_)
                                              : marker_for(message.size()) + message);
            upload_ = Upload::Draining;
        }
        return true;
    }
    parsed_ += n;
    if (parsed_ - body_ == size_ || push == Push::End) {
        // At the End the client closed inside the literal: the server gets
        // no more than this either.
        upload_ = Upload::Judging;
        in_.counters_.add(&ImapCounters::messages_scanned);
        held_.submit(in_.next_id_, info_);
        return true;
    }
    return false;
}

bool ImapInspector::Client::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    return held_.on_verdict(id, verdict, in_.next_id_);
}

void ImapInspector::Client::finish_upload(MapCursor& c, const mail::Outcome& outcome) {
    if (outcome.kind == mail::Outcome::Kind::Deliver) {
        if (!fixed_size_) c.replace_to(body_, marker_for(size_));
        c.pass_to(parsed_);
    } else {
        if (outcome.blocked) in_.counters_.add(&ImapCounters::messages_blocked);
        // Stored replaced: what the server keeps is the judge's message.
        std::string message = outcome.kind == mail::Outcome::Kind::Rewrite
                                  ? outcome.message
                                  : mail::replace_body({}, outcome.reply_text, {});
        c.replace_to(parsed_,
                     fixed_size_ ? fit_to(message, size_) : marker_for(message.size()) + message);
    }
    // A literal the client cut short (FIN) leaves nothing more of it.
    size_ = parsed_ - body_;
    upload_ = Upload::None;
    set_relay(c.sink, false);
}

// -- server ------------------------------------------------------------------

void ImapInspector::Server::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                     StreamSink& sink) {
    MapCursor c{offset, pending, sink, offset};
    while (!in_.closing_ && step(c, push)) {
    }
    if (!in_.closing_ && !passthrough_ && c.at < c.end()) {
        if (push == Push::End &&
            (mode_ == Mode::Line || mode_ == Mode::Literal || mode_ == Mode::Unscanned)) {
            c.pass_to(c.end());
            set_relay(sink, false);
        } else if (push == Push::Stalled && mode_ == Mode::Line) {
            set_relay(sink, true);
        }
    }
    in_.release_host_if_idle();
}

bool ImapInspector::Server::step(MapCursor& c, Push push) {
    if (in_.released_ && !holds_message()) passthrough_ = true;
    if (passthrough_) {
        c.pass_to(c.end());
        set_relay(c.sink, false);
        return false;
    }
    switch (mode_) {
        case Mode::Judging:
            if (!held_.ready()) return false;
            deliver(c);
            return true;
        case Mode::Holding:
            return hold(c, push);
        case Mode::HeadHold:
            return hold_head(c, push);
        case Mode::Literal:
        case Mode::Unscanned:
        case Mode::Draining: {
            uint64_t n = std::min(literal_left_, c.end() - c.at);
            if (mode_ == Mode::Draining)
                c.replace_to(c.at + n, {});
            else
                c.pass_to(c.at + n);
            literal_left_ -= n;
            if (literal_left_ > 0) return false;
            mode_ = Mode::Line;
            set_relay(c.sink, false);
            return true;
        }
        case Mode::Line:
            break;
    }
    if (at_boundary()) in_.flush_replies(&c.sink);
    if (c.at == c.end()) return false;
    if (!greeted_ &&
        !text::may_start_with(text::of(c.from(c.at)), {"* OK", "* PREAUTH", "* BYE"})) {
        in_.release(ReleaseReason::NotProtocol);  // not an IMAP server
        return true;
    }
    uint64_t line_end = 0;
    LineReader::Status found = lines_.find(c.offset, c.pending, c.at, &line_end);
    if (found == LineReader::Status::NeedMore) return false;
    if (found == LineReader::Status::TooLong) {
        if (!greeted_) {
            in_.release(ReleaseReason::NotProtocol);
            return true;
        }
        if (response_start_ && !long_line_)
            fetch_ = fetch_number(text::of(c.range(c.at, c.at + 64)));
        // Only bytes searched (kMaxLine of them) pass, never beyond.
        long_line_ = true;
        c.pass_to(c.at + kMaxLine - kLineTail);
        return true;
    }
    return on_line(c, line_end);
}

bool ImapInspector::Server::on_line(MapCursor& c, uint64_t end) {
    std::string_view line = text::of(c.range(c.at, end));
    bool whole = !long_line_;
    if (response_start_ && whole) fetch_ = fetch_number(line);
    if (!greeted_) greeted_ = true;
    if (response_start_ && whole && !in_.starttls_tag_.empty()) {
        auto [tag, status] = tag_and_command(line);
        if (tag == in_.starttls_tag_) {
            in_.starttls_tag_.clear();
            c.pass_to(end);
            if (status == "OK")
                in_.release(ReleaseReason::Tls);
            else
                in_.client_->resume();
            // What the client sent after the command (TLS, or commands after
            // a refusal) waits to be shown again.
            if (in_.client_->waiting()) in_.host_.redrive();
            return true;
        }
    }
    if (response_start_ && whole && !line.starts_with("* ") && !line.starts_with("+")) {
        // A tagged completion: a partial fetch's length is no longer needed.
        in_.partial_lengths_.erase(tag_and_command(line).first);
    }
    if (response_start_ && whole && mentions_capabilities(line) &&
        upper(line).find(" LITERAL+") != std::string::npos)
        in_.literal_plus_ = true;
    std::optional<Literal> literal = literal_of(chomp(line));
    if (!literal) {
        if (response_start_ && whole && in_.host_.policy().starttls != StartTls::Allow &&
            mentions_capabilities(line)) {
            c.replace_to(end, without_starttls(line));
        } else {
            c.pass_to(end);
        }
        long_line_ = false;
        response_start_ = true;
        set_relay(c.sink, false);
        return true;
    }
    on_literal(c, line, end, *literal);
    return true;
}

void ImapInspector::Server::on_literal(MapCursor& c, std::string_view line, uint64_t end,
                                       const Literal& literal) {
    long_line_ = false;
    response_start_ = false;  // the response goes on after the literal
    ItemName item;
    if (!fetch_.empty()) item = item_before(line.substr(0, literal.marker));
    if (item.kind == Item::Partial && item.origin && item.whole_section) {
        // An answer to "BODY[]<0.L>" shorter than L is the whole message.
        for (const auto& [tag, length] : in_.partial_lengths_)
            if (literal.size < length && item.name.ends_with("<0>")) item.kind = Item::Message;
    }
    uint64_t marker = c.at + literal.marker;
    if (literal.size == 0 || item.kind == Item::Other || item.kind == Item::Header) {
        c.pass_to(end);
        literal_left_ = literal.size;
        mode_ = Mode::Literal;
        set_relay(c.sink, false);
        return;
    }
    start_message(c, marker, end, literal, item);
}

void ImapInspector::Server::start_message(MapCursor& c, uint64_t marker, uint64_t end,
                                          const Literal& literal, const ItemName& item) {
    info_ = {};
    info_.protocol = Service::Imap;
    info_.direction = S2C;
    info_.name = "FETCH " + fetch_ + " " + item.name;
    info_.mime_type = "message/rfc822";
    info_.declared_size = literal.size;
    binary_ = literal.binary;
    begin_ = marker;
    body_ = parsed_ = end;
    literal_left_ = literal.size;
    c.pass_to(marker);
    set_relay(c.sink, true);  // nothing of the literal, its "{N}" included, before the verdict
    const ProtocolPolicy& policy = in_.host_.policy();
    if (item.kind == Item::Partial) {
        in_.counters_.add(&ImapCounters::partial);
        in_.counters_.add(&ImapCounters::fallbacks);
        mail::Outcome outcome =
            held_.judge().fallback(info_, Category::Partial, "partial fetch " + item.name, {}, {});
        if (outcome.kind == mail::Outcome::Kind::Deliver) {
            c.pass_to(end);
            mode_ = Mode::Literal;
            set_relay(c.sink, false);
        } else {
            in_.counters_.add(&ImapCounters::messages_blocked);
            c.replace_to(end, replacement_for(outcome));
            mode_ = Mode::Draining;
        }
        return;
    }
    if (literal.size > in_.host_.limits().max_content_size) {
        in_.counters_.add(&ImapCounters::fallbacks);
        bool plain_pass = policy.fallback_for(Category::ContentSize) == Action::Pass &&
                          !policy.notify_recipient_on_error_pass;
        if (plain_pass) {
            held_.judge().fallback(info_, Category::ContentSize,
                                   "literal larger than max_content_size", {}, {});
            c.pass_to(end);
            mode_ = Mode::Unscanned;
            set_relay(c.sink, false);
            return;
        }
        // Its header is needed: to tag it, or for the notice.
        head_.clear();
        mode_ = Mode::HeadHold;
        return;
    }
    held_.start();
    mode_ = Mode::Holding;
}

bool ImapInspector::Server::hold(MapCursor& c, Push push) {
    uint64_t n = std::min(literal_left_, c.end() - parsed_);
    if (n > 0) {
        switch (held_.buffer()->append(c.range(parsed_, parsed_ + n))) {
            case ObjectBuffer::Append::Ok:
                break;
            case ObjectBuffer::Append::OverLimit:  // the limit was checked against its size
            case ObjectBuffer::Append::NoResource:
                fallback_with_head(c, Category::OutOfResource,
                                   "cannot keep the message: " + held_.buffer()->error());
                return true;
        }
        parsed_ += n;
        literal_left_ -= n;
    }
    if (literal_left_ == 0 || push == Push::End) {
        // At the End: the server closed inside the literal; what it sent is
        // all the client gets, so that is what is judged.
        submit();
        return true;
    }
    if (push == Push::Stalled && relay_) {
        fallback_with_head(c, Category::OutOfResource, "relay store full");
        return true;
    }
    return false;
}

bool ImapInspector::Server::hold_head(MapCursor& c, Push push) {
    uint64_t n = std::min({literal_left_, c.end() - parsed_, uint64_t(kMaxHeader - head_.size())});
    head_ += text::of(c.range(parsed_, parsed_ + n));
    parsed_ += n;
    literal_left_ -= n;
    bool header_known = text::header_length(head_) != std::string::npos;
    if (header_known || head_.size() >= kMaxHeader || literal_left_ == 0 || push != Push::More) {
        fallback_with_head(c, Category::ContentSize, "literal larger than max_content_size");
        return true;
    }
    return false;
}

// A message not scanned after all: held bytes [begin_, parsed_), its first
// bytes in head_ or the held buffer.
void ImapInspector::Server::fallback_with_head(MapCursor& c, Category category,
                                               const std::string& reason) {
    if (held_.buffer()) {
        head_.assign(text::of(held_.buffer()->bytes()).substr(0, kMaxHeader));
        held_.drop();
        if (category != Category::ContentSize) in_.counters_.add(&ImapCounters::fallbacks);
    }
    size_t header = text::header_length(head_);
    std::span<const uint8_t> head =
        header == std::string::npos ? std::span<const uint8_t>() : text::bytes(head_).first(header);
    mail::Outcome outcome = held_.judge().fallback(info_, category, reason, head,
                                                   mail::envelope_from_header(text::bytes(head_)));
    uint64_t total = literal_left_ + (parsed_ - body_);  // the literal's size
    if (outcome.kind == mail::Outcome::Kind::Deliver) {
        c.pass_to(parsed_);
        mode_ = Mode::Unscanned;
        set_relay(c.sink, false);
    } else if (outcome.kind == mail::Outcome::Kind::Rewrite && !outcome.blocked) {
        // The Subject tagged: the header changes, the literal's size with it.
        std::string tagged = outcome.message;
        while (tagged.ends_with("\r\n"))
            tagged.resize(tagged.size() - 2);
        tagged += "\r\n\r\n";
        uint64_t size = total - header + tagged.size();
        c.replace_to(body_ + header,
                     std::string(binary_ ? "~{" : "{") + std::to_string(size) + "}\r\n" + tagged);
        c.pass_to(parsed_);
        mode_ = Mode::Unscanned;
        set_relay(c.sink, false);
    } else {
        in_.counters_.add(&ImapCounters::messages_blocked);
        c.replace_to(parsed_, replacement_for(outcome));
        mode_ = Mode::Draining;
    }
    head_.clear();
    head_.shrink_to_fit();
    if (literal_left_ == 0) {
        mode_ = Mode::Line;
        set_relay(c.sink, false);
    }
}

void ImapInspector::Server::submit() {
    mode_ = Mode::Judging;
    in_.counters_.add(&ImapCounters::messages_scanned);
    held_.submit(in_.next_id_, info_);
}

bool ImapInspector::Server::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    return held_.on_verdict(id, verdict, in_.next_id_);
}

std::string ImapInspector::Server::replacement_for(const mail::Outcome& outcome) const {
    if (outcome.kind == mail::Outcome::Kind::Rewrite) return literal_for(outcome.message);
    // Reject and Drop are SMTP's (the configuration refuses them for IMAP):
    // a message refused anyway is a notice of its own.
    return literal_for(mail::replace_body({}, outcome.reply_text, {}));
}

void ImapInspector::Server::deliver(MapCursor& c) {
    const mail::Outcome& outcome = held_.take();
    if (outcome.kind == mail::Outcome::Kind::Deliver) {
        c.pass_to(parsed_);
    } else {
        if (outcome.blocked) in_.counters_.add(&ImapCounters::messages_blocked);
        c.replace_to(parsed_, replacement_for(outcome));
    }
    // A literal the server cut short (FIN) leaves nothing to skip.
    literal_left_ = 0;
    mode_ = Mode::Line;
    set_relay(c.sink, false);
}

// -- the inspector -----------------------------------------------------------

ImapInspector::ImapInspector(InspectorHost& host)
    : host_(host),
      client_(std::make_unique<Client>(*this)),
      server_(std::make_unique<Server>(*this)),
      counters_(host) {}

ImapInspector::~ImapInspector() = default;

StreamTransform& ImapInspector::transform(Direction d) {
    return d == C2S ? static_cast<StreamTransform&>(*client_) : *server_;
}

void ImapInspector::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    if (closing_) return;
    if (!server_->on_verdict(id, verdict)) client_->on_verdict(id, verdict);
}

size_t ImapInspector::memory_bytes() const {
    return server_->memory_bytes() + client_->memory_bytes();
}

void ImapInspector::queue_reply(std::string reply) {
    replies_.push_back(std::move(reply));
    if (server_->at_boundary()) flush_replies(nullptr);
}

void ImapInspector::flush_replies(StreamSink* server_sink) {
    for (const std::string& reply : replies_) {
        if (server_sink)
            server_sink->replace(0, text::bytes(reply));
        else
            host_.send(S2C, text::bytes(reply));
    }
    replies_.clear();
}

void ImapInspector::release(ReleaseReason reason) {
    if (released_) return;
    released_ = true;
    release_reason_ = reason;
    release_host_if_idle();
}

void ImapInspector::release_host_if_idle() {
    if (!released_ || host_released_ || closing_ || server_->holds_message() ||
        client_->holds_message())
        return;
    host_released_ = true;
    host_.release(release_reason_);
}

}  // namespace nfqscan
