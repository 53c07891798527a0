#include "smtp_inspector.h"

#include <algorithm>
#include <cctype>

#include "../mail/mail.h"
#include "../map_cursor.h"
#include "../text.h"

namespace nfqscan {

namespace {

constexpr uint8_t kTlsHandshake = 0x16;
constexpr std::string_view kOwn354 = "354 End data with <CR><LF>.<CR><LF>\r\n";

std::string_view without_line_end(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
        line.remove_suffix(1);
    return line;
}

// The command's verb ("mail from:<a>" -> "MAIL"), read as servers read it:
// the first word, after any leading white space, up to white space of any
// kind (Postfix's smtpd_token() splits at isspace()) or a NUL (a C string
// ends there). Otherwise "DATA\t" or " BDAT 9" would pass as an unknown
// command that the server takes as DATA or BDAT, and its message unscanned.
std::string verb_of(std::string_view line) {
    constexpr std::string_view kBreak{" \t\r\n\v\f\0", 7};
    size_t first = line.find_first_not_of(kBreak);
    if (first == std::string_view::npos) return "";
    line.remove_prefix(first);
    return text::upper(line.substr(0, line.find_first_of(kBreak)));
}

// The address of MAIL FROM / RCPT TO ("FROM:<a@b> SIZE=1" -> "<a@b>").
std::string address_of(std::string_view line) {
    line = without_line_end(line);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return "";
    std::string_view rest = line.substr(colon + 1);
    while (!rest.empty() && rest.front() == ' ')
        rest.remove_prefix(1);
    if (!rest.empty() && rest.front() == '<') {
        size_t close = rest.find('>');
        return std::string(
            rest.substr(0, close == std::string_view::npos ? rest.size() : close + 1));
    }
    return std::string(rest.substr(0, rest.find(' ')));
}

// Text from a verdict for a reply line: no line breaks, printable.
std::string reply_safe(std::string_view s) {
    std::string out;
    for (char ch : s)
        out += std::isprint(static_cast<unsigned char>(ch)) ? ch : '?';
    return out.substr(0, 400);
}

}  // namespace

// ---------------------------------------------------------------------------
// The client's bytes: commands, and the messages after DATA.
class SmtpInspector::Client final : public StreamTransform {
  public:
    explicit Client(SmtpInspector& in) : in_(in) {}

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;

    // The server's answer to the DATA sent after a verdict.
    void go(bool accepted);
    // The verdict of the message held (all its scans are in).
    void judged() { outcome_ = in_.judge_.outcome(); }
    // The client's bytes wait for replies; redrive() once they are in.
    bool waiting() const { return waiting_; }
    // A message is held, judged, or waits for the server's 354 to go.
    bool holds_message() const {
        return mode_ == Mode::Message || mode_ == Mode::Judging || mode_ == Mode::AwaitGo;
    }
    void stop_waiting() { waiting_ = false; }
    size_t memory_bytes() const {
        return (body_ ? size_t(body_->memory_bytes()) : 0) + head_.capacity();
    }

  private:
    enum class Mode : uint8_t {
        Command,
        Message,  // after our 354: the message accumulates, unmapped
        Judging,  // complete, awaiting its verdict
        AwaitGo,  // DATA went to the server: waiting for its 354
        Stream,   // a message too big to hold, passing (fallback pass)
        Discard,  // a message too big to hold, dropped as it comes (fallback block)
    };
    enum class Go : uint8_t { Waiting, Yes, No };

    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    // The client's bytes from here on wait for replies (redrive() once
    // they are in). The engine keeps them (relay): in pass mode it would
    // pass them on unparsed at the client's FIN, or beyond its pending
    // limit, and they may hold a DATA and its message, which only the
    // replies can frame.
    void wait_for_replies(StreamSink& sink) {
        set_relay(sink, true);
        waiting_ = true;
    }
    // false: stop (the line waits for replies).
    bool command(MapCursor& c, std::string_view line);
    // Feeds the message bytes in [parsed_, end) to the decoder.
    void decode(std::span<const uint8_t> pending, uint64_t offset);
    // The message cannot be held whole: the fallback decides, at once.
    void cannot_hold(MapCursor& c, Category category, const std::string& reason,
                     std::span<const uint8_t> pending, uint64_t offset);
    // Carries out outcome_ once the whole message is in (Judging -> ...).
    void act(MapCursor& c);
    void queue_own(std::string text);
    void finish(MapCursor& c);
    ObjectInfo info() const;
    mail::Envelope envelope() const {
        return {in_.sender_, in_.envelope_recipients(), {}, in_.helo_};
    }

    SmtpInspector& in_;
    Mode mode_ = Mode::Command;
    bool relay_ = false;
    bool waiting_ = false;
    bool wait_for_replies_ = false;  // AUTH and DATA-without-transaction: the next line waits
    uint64_t data_begin_ = 0;        // input offset of the DATA line
    uint64_t body_begin_ = 0;        // of the message's first byte
    uint64_t parsed_ = 0;            // message bytes decoded up to here
    uint64_t message_end_ = 0;       // after the terminating ".\r\n"
    mail::DotDecoder decoder_;
    std::shared_ptr<ObjectBuffer> body_;
    std::string head_;  // the message's first kHeadKept bytes, decoded
    bool overflow_ = false;
    std::string no_resource_;
    std::optional<mail::Outcome> outcome_;
    Go go_ = Go::Waiting;
    // The message was dropped as it came (Discard): nothing of it is pending,
    // so no call of on_bytes() follows the server's 354 to map it.
    bool discarded_ = false;
    // A message streamed unscanned with its Subject tagged: the new header
    // block (dot-stuffed) for the input up to header_end_.
    std::string tagged_header_;
    uint64_t header_end_ = 0;
};

void SmtpInspector::Client::go(bool accepted) {
    go_ = accepted ? Go::Yes : Go::No;
    if (mode_ != Mode::AwaitGo || !discarded_ || message_end_ == 0) return;
    if (accepted && outcome_->kind == mail::Outcome::Kind::Rewrite) {
        in_.host_.send(Direction::ClientToServer, text::bytes(mail::dot_stuff(outcome_->message)));
        in_.expects_.push_back({Expect::Kind::DataEnd, {}});
    }
    // The relay is turned off with the next bytes the client sends.
    body_.reset();
    head_.clear();
    outcome_.reset();
    go_ = Go::Waiting;
    mode_ = Mode::Command;
}

ObjectInfo SmtpInspector::Client::info() const {
    ObjectInfo i;
    i.protocol = Service::Smtp;
    i.direction = Direction::ClientToServer;
    i.name = "message from " + (in_.sender_.empty() ? std::string("<>") : in_.sender_) + " to " +
             in_.envelope_recipients();
    i.mime_type = "message/rfc822";
    return i;
}

void SmtpInspector::Client::queue_own(std::string text) {
    if (in_.expects_.empty()) {
        in_.host_.send(Direction::ServerToClient, text::bytes(text));
        return;
    }
    in_.expects_.push_back({Expect::Kind::Own, std::move(text)});
}

void SmtpInspector::Client::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                     StreamSink& sink) {
    MapCursor c{offset, pending, sink, offset};
    const uint64_t end = offset + pending.size();
    for (;;) {
        if (in_.closing_) return;
        if (in_.passthrough_) {
            c.pass_to(end);
            set_relay(sink, false);
            return;
        }
        switch (mode_) {
            case Mode::Command: {
                if (c.at >= end) return;
                if (c.at == 0 && pending[0] == kTlsHandshake) {
                    in_.release(ReleaseReason::Tls);  // SMTPS (465): nothing to read
                    continue;
                }
                if ((wait_for_replies_ && in_.replies_outstanding()) ||
                    in_.expects_.size() >= kMaxOutstanding) {
                    wait_for_replies(sink);
                    return;
                }
                wait_for_replies_ = false;
                set_relay(sink, false);
                std::span<const uint8_t> rest = pending.subspan(size_t(c.at - offset));
                std::string_view text = text::of(rest.first(std::min(rest.size(), kMaxLine)));
                size_t lf = text.find('\n');
                if (lf == std::string_view::npos) {
                    if (rest.size() >= kMaxLine) {
                        in_.protocol_error("a command line longer than " +
                                           std::to_string(kMaxLine) + " bytes");
                        continue;
                    }
                    // A line cut by the sender's FIN: nothing of a message in it.
                    if (push == Push::End) c.pass_to(end);
                    return;
                }
                if (!command(c, text.substr(0, lf + 1))) return;
                continue;
            }
            case Mode::Message: {
                decode(pending, offset);
                if (decoder_.failed()) {
                    // SMTP smuggling: whatever the fallback, never passed
                    // (a second message would reach the server unjudged).
                    in_.protocol_error(std::string("message: ") + decoder_.error(), Action::Block);
                    continue;
                }
                if (!no_resource_.empty()) {
                    cannot_hold(c, Category::OutOfResource, no_resource_, pending, offset);
                    continue;
                }
                if (overflow_) {
                    cannot_hold(c, Category::ContentSize, "message larger than max_content_size",
                                pending, offset);
                    continue;
                }
                if (decoder_.done()) {
                    message_end_ = parsed_;
                    in_.counters_.add(&SmtpCounters::messages);
                    mode_ = Mode::Judging;
                    in_.judge_.submit(in_.next_id_, info(), std::move(body_), envelope());
                    body_.reset();
                    continue;
                }
                if (push == Push::End) {
                    // The client left inside its message: the server never
                    // heard DATA, and gets nothing of it.
                    in_.counters_.add(&SmtpCounters::aborted);
                    c.replace_to(end, "");
                    body_.reset();
                    set_relay(sink, false);
                    mode_ = Mode::Command;
                    return;
                }
                if (push == Push::Stalled && relay_) {
                    cannot_hold(c, Category::OutOfResource, "relay store full", pending, offset);
                    continue;
                }
                return;
            }
            case Mode::Judging:
                if (!outcome_) return;
                act(c);
                continue;
            case Mode::AwaitGo:
                if (go_ == Go::Waiting) return;
                if (go_ == Go::No) {
                    // The server refused DATA; its reply went to the client
                    // as the answer to the message, which goes nowhere.
                    if (message_end_ == 0) {
                        mode_ = Mode::Discard;  // still arriving
                        continue;
                    }
                    c.replace_to(message_end_, "");
                    finish(c);
                    continue;
                }
                if (message_end_ == 0) {
                    mode_ = Mode::Stream;
                    if (!tagged_header_.empty()) {
                        c.replace_to(header_end_, tagged_header_);
                        tagged_header_.clear();
                    }
                    continue;
                }
                if (outcome_->kind == mail::Outcome::Kind::Rewrite ||
                    outcome_->kind == mail::Outcome::Kind::Forward) {
                    c.replace_to(message_end_, mail::dot_stuff(outcome_->message));
                } else {
                    c.pass_to(message_end_);
                }
                in_.expects_.push_back({Expect::Kind::DataEnd, {}});
                finish(c);
                continue;
            case Mode::Stream:
            case Mode::Discard: {
                decode(pending, offset);
                if (decoder_.failed()) {
                    // SMTP smuggling: whatever the fallback, never passed
                    // (a second message would reach the server unjudged).
                    in_.protocol_error(std::string("message: ") + decoder_.error(), Action::Block);
                    continue;
                }
                if (mode_ == Mode::Stream) {
                    c.pass_to(parsed_);
                    set_relay(sink, false);
                } else {
                    c.replace_to(parsed_, "");
                }
                if (!decoder_.done()) {
                    if (push == Push::End) {
                        in_.counters_.add(&SmtpCounters::aborted);
                        c.replace_to(end, "");
                    }
                    return;
                }
                message_end_ = parsed_;
                if (mode_ == Mode::Stream) {
                    in_.expects_.push_back({Expect::Kind::DataEnd, {}});
                    finish(c);
                } else if (go_ == Go::No) {
                    finish(c);
                } else {
                    act(c);  // the fallback's outcome, now that the message is over
                }
                continue;
            }
        }
    }
}

bool SmtpInspector::Client::command(MapCursor& c, std::string_view line) {
    in_.counters_.add(&SmtpCounters::commands);
    const uint64_t line_end = c.at + line.size();
    if (in_.sasl_next_) {
        // A SASL response: its reply says whether another follows.
        in_.sasl_next_ = false;
        c.pass_to(line_end);
        in_.expects_.push_back({Expect::Kind::Auth, {}});
        wait_for_replies_ = true;
        return true;
    }
    const std::string verb = verb_of(line);
    if (verb == "DATA") {
        if (in_.replies_outstanding()) {
            // The transaction is known only once MAIL's and RCPT's replies are in.
            wait_for_replies(c.sink);
            return false;
        }
        if (!in_.mail_accepted_ || in_.recipients_.empty()) {
            // Nothing the server would take: it refuses DATA itself.
            c.pass_to(line_end);
            in_.expects_.push_back({Expect::Kind::DataDirect, {}});
            wait_for_replies_ = true;
            return true;
        }
        data_begin_ = c.at;
        body_begin_ = parsed_ = line_end;
        message_end_ = 0;
        decoder_.reset();
        body_ = ObjectBuffer::make(in_.host_.limits().max_content_size);
        head_.clear();
        overflow_ = false;
        no_resource_.clear();
        outcome_.reset();
        go_ = Go::Waiting;
        discarded_ = false;
        set_relay(c.sink, true);
        in_.host_.send(Direction::ServerToClient, text::bytes(kOwn354));
        mode_ = Mode::Message;
        return true;
    }
    if (verb == "BDAT") {
        in_.protocol_error("BDAT (CHUNKING is not offered to clients: BDAT cannot be held whole)");
        return true;
    }
    if (verb == "STARTTLS" && in_.host_.policy().starttls != StartTls::Allow) {
        in_.counters_.add(&SmtpCounters::starttls_refused);
        c.replace_to(line_end, "");
        if (in_.host_.policy().starttls == StartTls::Block) {
            ObjectInfo i = info();
            i.name = "STARTTLS";
            Detection d;
            d.signature = "STARTTLS refused";
            d.category = ThreatCategory::Policy;
            in_.host_.record(i, ScanVerdict::infected(d), "block");
        }
        queue_own("454 4.7.0 TLS not available due to local policy\r\n");
        return true;
    }
    c.pass_to(line_end);
    Expect e;
    if (verb == "EHLO" || verb == "HELO") {
        e.kind = verb == "EHLO" ? Expect::Kind::Ehlo : Expect::Kind::Helo;
        std::string_view arg = without_line_end(line);
        arg.remove_prefix(std::min(arg.size(), arg.find_first_not_of(" \t")));
        arg.remove_prefix(std::min(arg.size(), size_t(4)));
        arg.remove_prefix(std::min(arg.size(), arg.find_first_not_of(" \t")));
        in_.helo_ = std::string(arg.substr(0, std::min(arg.size(), size_t(255))));
    } else if (verb == "MAIL") {
        e.kind = Expect::Kind::Mail;
        e.text = address_of(line);
    } else if (verb == "RCPT") {
        e.kind = Expect::Kind::Rcpt;
        e.text = address_of(line);
    } else if (verb == "RSET") {
        e.kind = Expect::Kind::Rset;
    } else if (verb == "STARTTLS") {
        e.kind = Expect::Kind::StartTls;
        wait_for_replies_ = true;
    } else if (verb == "AUTH") {
        e.kind = Expect::Kind::Auth;
        wait_for_replies_ = true;
    } else if (verb == "QUIT") {
        e.kind = Expect::Kind::Quit;
    }
    in_.expects_.push_back(std::move(e));
    return true;
}

void SmtpInspector::Client::decode(std::span<const uint8_t> pending, uint64_t offset) {
    const uint64_t end = offset + pending.size();
    if (parsed_ >= end || decoder_.done() || decoder_.failed()) return;
    std::span<const uint8_t> rest = pending.subspan(size_t(parsed_ - offset));
    const bool keep = mode_ == Mode::Message;
    parsed_ += decoder_.feed(rest, [&](std::span<const uint8_t> run) {
        if (!keep) return;
        if (head_.size() < kHeadKept) {
            size_t n = std::min(run.size(), kHeadKept - head_.size());
            head_.append(reinterpret_cast<const char*>(run.data()), n);
        }
        if (!body_ || overflow_ || !no_resource_.empty()) return;
        switch (body_->append(run)) {
            case ObjectBuffer::Append::Ok:
                break;
            case ObjectBuffer::Append::OverLimit:
                overflow_ = true;
                break;
            case ObjectBuffer::Append::NoResource:
                no_resource_ = "cannot keep the message: " + body_->error();
                break;
        }
    });
}

void SmtpInspector::Client::cannot_hold(MapCursor& c, Category category, const std::string& reason,
                                        std::span<const uint8_t> pending, uint64_t offset) {
    body_.reset();
    outcome_ = in_.judge_.fallback(info(), category, reason, text::bytes(head_), envelope());
    head_.clear();
    head_.shrink_to_fit();
    tagged_header_.clear();
    if (outcome_->kind == mail::Outcome::Kind::Deliver ||
        (outcome_->kind == mail::Outcome::Kind::Rewrite && !outcome_->blocked)) {
        // Passed unscanned (logged): DATA goes now, the message follows as it
        // comes. Tagged (notify_recipient_on_error_pass): the header block,
        // still unmapped, goes tagged; the rest as it is.
        if (outcome_->kind == mail::Outcome::Kind::Rewrite) {
            std::string_view raw = text::of(pending.subspan(size_t(body_begin_ - offset)));
            size_t blank = raw.find("\r\n\r\n");
            // Within the message (the decoder has been past it), and no stuffed
            // line in it: the raw header is the header.
            if (blank != std::string_view::npos && body_begin_ + blank + 4 <= parsed_ &&
                !raw.starts_with(".") && raw.substr(0, blank + 4).find("\n.") == raw.npos) {
                std::string_view header = raw.substr(0, blank + 4);
                std::string tagged =
                    mail::tag_subject(text::bytes(header), in_.host_.policy().error_pass_tag,
                                      {{"X-Nfqscan-Error", std::string(category_name(category))}});
                std::string stuffed = mail::dot_stuff(tagged);
                stuffed.resize(stuffed.size() - 3);  // not the end of the data: no ".\r\n"
                tagged_header_ = stuffed;
                header_end_ = body_begin_ + header.size();
            }
        }
        outcome_->kind = mail::Outcome::Kind::Deliver;
        c.pass_to(body_begin_);
        in_.expects_.push_back({Expect::Kind::DataGo, {}});
        mode_ = Mode::AwaitGo;
        return;
    }
    // Blocked: what came is dropped, and so is the rest; act() at its end.
    c.replace_to(parsed_, "");
    discarded_ = true;
    mode_ = Mode::Discard;
}

void SmtpInspector::Client::act(MapCursor& c) {
    const mail::Outcome& o = *outcome_;
    const bool held = c.at == data_begin_;  // the DATA line and the message still unmapped
    switch (o.kind) {
        case mail::Outcome::Kind::Deliver:
        case mail::Outcome::Kind::Rewrite:
            if (o.kind == mail::Outcome::Kind::Deliver) {
                in_.counters_.add(&SmtpCounters::delivered);
            } else {
                in_.counters_.add(&SmtpCounters::rewritten);
            }
            if (held) {
                c.pass_to(body_begin_);
            } else {
                c.replace_to(c.at, "DATA\r\n");  // the original DATA line was dropped
            }
            in_.expects_.push_back({Expect::Kind::DataGo, {}});
            mode_ = Mode::AwaitGo;
            return;
        case mail::Outcome::Kind::Reject:
        case mail::Outcome::Kind::Drop: {
            const bool reject = o.kind == mail::Outcome::Kind::Reject;
            in_.counters_.add(reject ? &SmtpCounters::rejected : &SmtpCounters::dropped);
            queue_own(
                reject
                    ? "550 5.7.1 Message rejected by nfqscan: " + reply_safe(o.reply_text) + "\r\n"
                    : "250 2.0.0 Ok: message dropped by nfqscan: " + reply_safe(o.reply_text) +
                          "\r\n");
            // The server's transaction (MAIL, RCPT) ends without a message.
            c.replace_to(message_end_, "RSET\r\n");
            in_.expects_.push_back({Expect::Kind::OwnRset, {}});
            finish(c);
            return;
        }
        case mail::Outcome::Kind::Forward: {
            // The server's transaction names the original recipients: it is
            // begun anew for spam_forward_to, one command per reply (the
            // server need not offer PIPELINING).
            in_.counters_.add(&SmtpCounters::forwarded);
            c.replace_to(held ? body_begin_ : c.at, "RSET\r\n");
            in_.expects_.push_back(
                {Expect::Kind::ForwardStep,
                 "MAIL FROM:" + (in_.sender_.empty() ? std::string("<>") : in_.sender_) +
                     "\r\nRCPT TO:" + o.forward_to + "\r\nDATA\r\n"});
            mode_ = Mode::AwaitGo;
            return;
        }
    }
}

void SmtpInspector::Client::finish(MapCursor& c) {
    set_relay(c.sink, false);
    body_.reset();
    head_.clear();
    outcome_.reset();
    go_ = Go::Waiting;
    mode_ = Mode::Command;
}

// ---------------------------------------------------------------------------
// The server's bytes: replies, matched to what they answer.
class SmtpInspector::Server final : public StreamTransform {
  public:
    explicit Server(SmtpInspector& in) : in_(in) {}
    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;

  private:
    // One reply: [begin, end) with its code.
    void reply(MapCursor& c, uint64_t end, int code, std::string_view text);
    void send_own(MapCursor& c);
    // The EHLO reply without the extensions the client must not use.
    std::string filter_ehlo(std::string_view text) const;

    SmtpInspector& in_;
};

void SmtpInspector::Server::send_own(MapCursor& c) {
    while (!in_.expects_.empty() && in_.expects_.front().kind == Expect::Kind::Own) {
        c.sink.replace(0, text::bytes(in_.expects_.front().text));
        in_.expects_.pop_front();
    }
}

void SmtpInspector::Server::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                     StreamSink& sink) {
    MapCursor c{offset, pending, sink, offset};
    const uint64_t end = offset + pending.size();
    for (;;) {
        if (in_.closing_) return;
        if (in_.passthrough_) {
            c.pass_to(end);
            return;
        }
        send_own(c);
        // One whole reply: lines "ddd-..." up to "ddd ..." (or "ddd").
        std::string_view rest = text::of(pending.subspan(size_t(c.at - offset)));
        size_t at = 0, lines = 0;
        int code = -1;
        bool complete = false;
        while (!complete) {
            size_t lf = rest.find('\n', at);
            if (lf == std::string_view::npos) {
                if (rest.size() - at >= kMaxLine) {
                    in_.server_error("a reply line longer than " + std::to_string(kMaxLine) +
                                     " bytes");
                    break;
                }
                if (push == Push::End) c.pass_to(end);
                return;
            }
            std::string_view line = without_line_end(rest.substr(at, lf + 1 - at));
            const bool digits = line.size() >= 3 && std::isdigit(uint8_t(line[0])) &&
                                std::isdigit(uint8_t(line[1])) && std::isdigit(uint8_t(line[2]));
            const int line_code = digits ? std::stoi(std::string(line.substr(0, 3))) : -1;
            if (!digits || (line.size() > 3 && line[3] != '-' && line[3] != ' ') ||
                (code >= 0 && line_code != code) || ++lines > kMaxReplyLines) {
                if (in_.expects_.size() == 1 &&
                    in_.expects_.front().kind == Expect::Kind::Greeting) {
                    // The server's first words are not SMTP.
                    in_.release(ReleaseReason::NotProtocol);
                } else {
                    in_.server_error("a malformed reply");
                }
                break;
            }
            code = line_code;
            complete = line.size() == 3 || line[3] == ' ';
            at = lf + 1;
        }
        if (!complete) continue;  // released or failed
        reply(c, c.at + at, code, rest.substr(0, at));
        if (in_.closing_) return;  // the reply broke the session: nothing more is asked
        if (in_.client_->waiting() && in_.expects_.size() < kMaxOutstanding) {
            in_.client_->stop_waiting();
            in_.host_.redrive();
        }
    }
}

void SmtpInspector::Server::reply(MapCursor& c, uint64_t end, int code, std::string_view text) {
    Expect e;  // a reply nobody asked for (a 421 shutdown) passes
    if (!in_.expects_.empty()) {
        e = std::move(in_.expects_.front());
        in_.expects_.pop_front();
    }
    const bool ok = code / 100 == 2;
    switch (e.kind) {
        case Expect::Kind::Ehlo: {
            if (ok) in_.reset_transaction();
            std::string filtered = ok ? filter_ehlo(text) : std::string(text);
            if (filtered != text) {
                c.replace_to(end, filtered);
                return;
            }
            break;
        }
        case Expect::Kind::Helo:
        case Expect::Kind::Rset:
            if (ok) in_.reset_transaction();
            break;
        case Expect::Kind::Mail:
            if (ok) {
                in_.reset_transaction();
                in_.mail_accepted_ = true;
                in_.sender_ = e.text;
            }
            break;
        case Expect::Kind::Rcpt:
            if (ok) in_.recipients_.push_back(e.text);
            break;
        case Expect::Kind::DataDirect:
            if (code == 354) {
                // The server takes a message nfqscand cannot account for.
                in_.server_error("354 to a DATA without an accepted sender and recipient");
                return;
            }
            break;
        case Expect::Kind::DataGo:
            in_.client_->go(code == 354);
            in_.host_.redrive();
            if (code == 354) {
                c.replace_to(end, "");  // the client had ours
                return;
            }
            in_.reset_transaction();
            break;
        case Expect::Kind::DataEnd:
            in_.reset_transaction();
            break;
        case Expect::Kind::OwnRset:
            c.replace_to(end, "");
            in_.reset_transaction();
            return;
        case Expect::Kind::ForwardStep: {
            if (!ok) {
                // The forward failed: this reply answers the client's
                // message, which goes nowhere, and the server's half-begun
                // transaction ends (RSET, its reply swallowed).
                in_.client_->go(false);
                in_.host_.redrive();
                in_.reset_transaction();
                in_.host_.send(Direction::ClientToServer,
                               text::bytes(std::string_view("RSET\r\n")));
                in_.expects_.push_back({Expect::Kind::OwnRset, {}});
                break;
            }
            c.replace_to(end, "");
            const size_t lf = e.text.find('\n');
            std::string next = e.text.substr(0, lf + 1);
            std::string rest = e.text.substr(lf + 1);
            in_.host_.send(Direction::ClientToServer, text::bytes(next));
            in_.expects_.push_back(rest.empty() ? Expect{Expect::Kind::DataGo, {}}
                                                : Expect{Expect::Kind::ForwardStep, rest});
            return;
        }
        case Expect::Kind::StartTls:
            if (code == 220) {
                c.pass_to(end);
                in_.release(ReleaseReason::Tls);
                return;
            }
            break;
        case Expect::Kind::Auth:
            if (code == 334) in_.sasl_next_ = true;
            break;
        default:
            break;
    }
    c.pass_to(end);
}

std::string SmtpInspector::Server::filter_ehlo(std::string_view text) const {
    std::vector<std::string_view> kept;
    size_t at = 0;
    bool first = true;
    while (at < text.size()) {
        size_t lf = text.find('\n', at);
        std::string_view line = text.substr(at, lf == std::string_view::npos ? lf : lf + 1 - at);
        at = lf == std::string_view::npos ? text.size() : lf + 1;
        // "250" alone is a reply line too: the keyword after the code is
        // read within the line without its end.
        std::string_view bare = without_line_end(line);
        std::string keyword = verb_of(bare.substr(std::min<size_t>(4, bare.size())));
        bool drop =
            !first && (keyword == "CHUNKING" || keyword == "BINARYMIME" ||
                       (keyword == "STARTTLS" && in_.host_.policy().starttls != StartTls::Allow));
        first = false;
        if (!drop) kept.push_back(line);
    }
    std::string out;
    for (size_t i = 0; i < kept.size(); ++i) {
        std::string line(kept[i]);
        // The separator after the code ("250" alone has none: it ends the reply).
        if (line.size() > 3 && (line[3] == '-' || line[3] == ' '))
            line[3] = i + 1 == kept.size() ? ' ' : '-';
        out += line;
    }
    return out;
}

// ---------------------------------------------------------------------------

SmtpInspector::SmtpInspector(InspectorHost& host)
    : host_(host),
      client_(std::make_unique<Client>(*this)),
      server_(std::make_unique<Server>(*this)),
      judge_(host, Service::Smtp, Direction::ClientToServer),
      counters_(host) {
    expects_.push_back({Expect::Kind::Greeting, {}});
}

SmtpInspector::~SmtpInspector() = default;

StreamTransform& SmtpInspector::transform(Direction d) {
    return d == Direction::ClientToServer ? static_cast<StreamTransform&>(*client_) : *server_;
}

void SmtpInspector::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    if (closing_ || !judge_.owns(id)) return;
    if (judge_.on_verdict(id, verdict, next_id_)) client_->judged();
}

size_t SmtpInspector::memory_bytes() const {
    return client_->memory_bytes() + judge_.memory_bytes();
}

void SmtpInspector::release(ReleaseReason reason) {
    if (passthrough_) return;
    passthrough_ = true;
    host_.release(reason);
}

void SmtpInspector::protocol_error(const std::string& why) {
    protocol_error(why, host_.policy().fallback_for(Category::ProtocolError));
}

void SmtpInspector::server_error(const std::string& why) {
    // A message nfqscand answered the DATA of is in its hands until its
    // outcome is carried out, which takes the server's framed replies:
    // released now, the server would get it unjudged (FlowInspection
    // passes every byte from release() on). The session ends instead.
    protocol_error(why, client_->holds_message()
                            ? Action::Block
                            : host_.policy().fallback_for(Category::ProtocolError));
}

void SmtpInspector::protocol_error(const std::string& why, Action action) {
    counters_.add(&SmtpCounters::protocol_errors);
    ObjectInfo info;
    info.protocol = Service::Smtp;
    info.direction = Direction::ClientToServer;
    info.name = "smtp session";
    if (action == Action::Block) {
        host_.record_fallback(info, Category::ProtocolError, why, "reset");
        closing_ = true;
        host_.reset_both();
        return;
    }
    host_.record_fallback(info, Category::ProtocolError, why, "pass");
    release(ReleaseReason::NotProtocol);
}

void SmtpInspector::reset_transaction() {
    mail_accepted_ = false;
    sender_.clear();
    recipients_.clear();
}

bool SmtpInspector::replies_outstanding() const {
    return std::any_of(expects_.begin(), expects_.end(),
                       [](const Expect& e) { return e.kind != Expect::Kind::Own; });
}

std::string SmtpInspector::envelope_recipients() const {
    std::string out;
    for (const std::string& r : recipients_)
        out += (out.empty() ? "" : ", ") + r;
    return out;
}

}  // namespace nfqscan
