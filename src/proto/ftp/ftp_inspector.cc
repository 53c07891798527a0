#include "ftp_inspector.h"

#include <algorithm>

#include "../map_cursor.h"
#include "../text.h"

namespace nfqscan {

namespace {

using text::chomp;

constexpr uint8_t kTlsHandshake = 0x16;
constexpr auto C2S = Direction::ClientToServer;
constexpr auto S2C = Direction::ServerToClient;
// The longest notice a 550 reply carries (the template's first line).
constexpr size_t kMaxNotice = 400;

bool is_transfer(std::string_view verb) {
    return verb == "RETR" || verb == "STOR" || verb == "APPE" || verb == "STOU" || verb == "LIST" ||
           verb == "NLST" || verb == "MLSD";
}

std::string bounded(std::string_view s, size_t max) {
    return std::string(s.substr(0, std::min(s.size(), max)));
}

std::string_view basename_of(std::string_view path) {
    size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// The 550 text: the first line of the template, control characters gone
// (a value from the traffic must not end the reply early).
std::string notice_line(std::string text) {
    size_t end = text.find_first_of("\r\n");
    if (end != std::string::npos) text.resize(end);
    for (char& ch : text)
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';
    if (text.size() > kMaxNotice) text.resize(kMaxNotice);
    if (text.empty()) text = "Transfer refused by the security scanner of this network";
    return text;
}

// A template of the configured folder, or the built-in text when the
// folder predates the FTP templates.
std::string render(InspectorHost& host, std::string_view name, const MessageFields& f) {
    if (host.messages().has(name)) return host.render_message(name, f);
    return MessageTemplates::builtin()->render(name, f);
}

}  // namespace

// -- control: client -> server -------------------------------------------------

class FtpControlInspector::Client final : public StreamTransform {
  public:
    explicit Client(FtpControlInspector& in) : in_(in), lines_(kMaxLine) {}
    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;
    bool waiting() const { return waiting_; }

  private:
    FtpControlInspector& in_;
    LineReader lines_;
    bool waiting_ = false;
};

void FtpControlInspector::Client::on_bytes(uint64_t offset, std::span<const uint8_t> pending,
                                           Push push, StreamSink& sink) {
    MapCursor c{offset, pending, sink, offset};
    waiting_ = false;
    while (!in_.closing_ && c.at < c.end()) {
        if (in_.released_) {
            c.pass_to(c.end());
            break;
        }
        if (c.at == 0 && pending[0] == kTlsHandshake) {
            // TLS from the first byte (implicit FTPS on a port claimed for FTP).
            in_.release(ReleaseReason::Tls);
            continue;
        }
        if (in_.tls_asked_ || in_.commands_.size() >= kMaxQueuedCommands) {
            // After AUTH TLS the next bytes are a TLS handshake, not commands.
            waiting_ = true;
            break;
        }
        uint64_t line_end = 0;
        LineReader::Status found = lines_.find(offset, pending, c.at, &line_end);
        if (found == LineReader::Status::NeedMore) break;
        if (found == LineReader::Status::TooLong) {
            in_.protocol_error(C2S, "a command line longer than " + std::to_string(kMaxLine));
            break;
        }
        in_.on_command(ftp::parse_command(chomp(text::of(c.range(c.at, line_end)))));
        // What the command predicted is in the table before the server can
        // act on it.
        c.pass_to(line_end);
    }
    if (push == Push::End && !in_.closing_) c.pass_to(c.end());
}

// -- control: server -> client -------------------------------------------------

class FtpControlInspector::Server final : public StreamTransform {
  public:
    explicit Server(FtpControlInspector& in) : in_(in), lines_(kMaxLine) {}
    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;
    bool holds() const { return hold_; }
    bool waiting() const { return waiting_; }

  private:
    enum class Decision : uint8_t { Pass, Replace, Wait };
    // What becomes of the held final reply of `transfer`: a completion
    // (2xx) waits for the verdict; a failure (4xx, 5xx: the data connection
    // was reset, by nfqscand when it blocked, or failed) never waits, and
    // says 550 only when the file was blocked.
    Decision decide(uint64_t transfer, std::string* notice);
    // The held reply (complete, up to parsed_) goes or is replaced; false:
    // it waits for the data connection's verdict.
    bool settle_held(MapCursor& c);
    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }

    FtpControlInspector& in_;
    LineReader lines_;
    ftp::ReplyFramer framer_;
    uint64_t parsed_ = 0;   // lines parsed up to (beyond c.at while a reply is held)
    bool hold_ = false;     // the reply being parsed completes a transfer: held
    bool waiting_ = false;  // a complete held reply waits for its verdict
    uint64_t held_transfer_ = 0;
    bool held_success_ = false;  // the held reply is a 2xx
    uint64_t wait_since_ = 0;
    uint64_t drop_wait_since_ = 0;  // a blocked download's 550 waits for its reader
    bool relay_ = false;
    bool greeted_ = false;
};

FtpControlInspector::Server::Decision FtpControlInspector::Server::decide(uint64_t number,
                                                                          std::string* notice) {
    FtpSession& session = *in_.session_;
    std::optional<FtpTransfer> t = session.transfer(number);
    if (!t || t->kind == FtpTransfer::Kind::Listing) return Decision::Pass;
    if (!held_success_) {
        if (t->state != FtpTransfer::State::Done || !t->blocked) return Decision::Pass;
        *notice = t->notice;
        return Decision::Replace;
    }
    switch (t->state) {
        case FtpTransfer::State::Done: {
            if (!t->blocked) return Decision::Pass;
            *notice = t->notice;
            if (t->kind != FtpTransfer::Kind::Download || t->receiver_closed)
                return Decision::Replace;
            uint64_t now = in_.host_.now_ms();
            if (drop_wait_since_ == 0) drop_wait_since_ = now;
            return now - drop_wait_since_ >= kDropReadGraceMs ? Decision::Replace : Decision::Wait;
        }
        case FtpTransfer::State::Receiving:
            return Decision::Wait;
        case FtpTransfer::State::Waiting:
            break;
    }
    if (t->aborted) return Decision::Pass;
    if (!session.claimed_since(t->generation)) {
        // Its data connection never crossed nfqscand (another path, or a
        // flow picked up without its SYN): the file was not scanned.
        ++in_.counters().data_unseen;
        ObjectInfo info;
        info.protocol = Service::Ftp;
        info.direction = t->kind == FtpTransfer::Kind::Download ? S2C : C2S;
        info.name = t->path;
        in_.host_.record_fallback(info, Category::Partial,
                                  "the data connection did not cross nfqscand", "pass");
        return Decision::Pass;
    }
    // Claimed, no byte yet: an empty file, or its bytes are still on their
    // way through another worker.
    uint64_t now = in_.host_.now_ms();
    if (wait_since_ == 0) wait_since_ = now;
    return now - wait_since_ >= kEmptyTransferGraceMs ? Decision::Pass : Decision::Wait;
}

bool FtpControlInspector::Server::settle_held(MapCursor& c) {
    std::string notice;
    Decision d = decide(held_transfer_, &notice);
    if (d == Decision::Wait) {
        waiting_ = true;
        in_.host_.want_ticks(true);
        return false;
    }
    if (d == Decision::Replace) {
        c.replace_to(parsed_, "550 " + notice + "\r\n");
        ++in_.counters().replies_replaced;
    } else {
        c.pass_to(parsed_);
    }
    in_.session_->forget(held_transfer_);
    hold_ = waiting_ = false;
    wait_since_ = drop_wait_since_ = 0;
    held_transfer_ = 0;
    in_.host_.want_ticks(false);
    set_relay(c.sink, false);
    return true;
}

void FtpControlInspector::Server::on_bytes(uint64_t offset, std::span<const uint8_t> pending,
                                           Push push, StreamSink& sink) {
    MapCursor c{offset, pending, sink, offset};
    parsed_ = std::max(parsed_, offset);
    while (!in_.closing_) {
        if (waiting_ && !settle_held(c)) break;
        if (in_.released_ && !hold_) {
            c.pass_to(c.end());
            set_relay(sink, false);
            break;
        }
        if (parsed_ >= c.end()) break;
        if (parsed_ == 0 && pending[0] == kTlsHandshake) {
            in_.release(ReleaseReason::Tls);
            continue;
        }
        uint64_t line_end = 0;
        LineReader::Status found = lines_.find(offset, pending, parsed_, &line_end);
        if (found == LineReader::Status::NeedMore) break;
        if (found == LineReader::Status::TooLong) {
            in_.protocol_error(S2C, "a reply line longer than " + std::to_string(kMaxLine));
            break;
        }
        std::string_view line = chomp(text::of(c.range(parsed_, line_end)));
        bool first = !framer_.inside();
        ftp::ReplyFramer::Step step = framer_.feed(line);
        if (step == ftp::ReplyFramer::Step::Invalid) {
            if (!greeted_) {
                in_.release(ReleaseReason::NotProtocol);  // not an FTP server
                continue;
            }
            in_.protocol_error(S2C, "not an FTP reply line");
            break;
        }
        greeted_ = true;
        if (first && !in_.commands_.empty() && in_.commands_.front().transfer &&
            line.front() >= '2') {
            // A transfer's final reply: held until its data connection's
            // verdict (relayed, so the server is acknowledged meanwhile).
            hold_ = true;
            held_transfer_ = in_.commands_.front().transfer;
            held_success_ = line.front() == '2';
            set_relay(sink, true);
        }
        parsed_ = line_end;
        if (!hold_) c.pass_to(line_end);
        if (step != ftp::ReplyFramer::Step::Complete) continue;
        in_.on_reply(framer_.code(), line);
        if (hold_) settle_held(c);
    }
    if (push == Push::End && !in_.closing_ && !hold_) c.pass_to(c.end());
}

// -- control ---------------------------------------------------------------------

FtpControlInspector::FtpControlInspector(InspectorHost& host)
    : host_(host),
      expectations_(host.ftp_expectations()),
      client_(std::make_unique<Client>(*this)),
      server_(std::make_unique<Server>(*this)) {
    counters_ = expectations_ ? &expectations_->counters() : &own_counters_;
    session_ = std::make_shared<FtpSession>(host.waker(), counters_);
    ++counters().sessions;
}

FtpControlInspector::~FtpControlInspector() {
    if (expectations_) expectations_->forget(session_.get());
}

StreamTransform& FtpControlInspector::transform(Direction d) {
    return d == C2S ? static_cast<StreamTransform&>(*client_) : *server_;
}

bool FtpControlInspector::on_tick(uint64_t) {
    return !closing_ && server_->waiting();
}

size_t FtpControlInspector::memory_bytes() const {
    return sizeof(*this) + cwd_.size() + commands_.size() * sizeof(Pending);
}

void FtpControlInspector::expect(const IpAddress& from, const ftp::HostPort& to,
                                 const IpAddress& also_to) {
    generation_ = session_->next_generation();
    if (!expectations_) return;
    expectations_->expect(from, to.has_address ? to.address : also_to, also_to, to.port, session_,
                          generation_, host_.now_ms());
}

void FtpControlInspector::on_command(const ftp::Command& command) {
    Pending p{command.verb, {}, 0};
    const std::string& verb = command.verb;
    FlowAddresses a = host_.addresses();
    if (verb == "PORT" || verb == "EPRT") {
        // Active: the server connects to the address the client gives.
        std::optional<ftp::HostPort> hp =
            verb == "PORT" ? ftp::parse_port_arg(command.arg) : ftp::parse_eprt_arg(command.arg);
        if (hp)
            expect(a.server, *hp, a.client);
        else
            ++counters().refused_addresses;
    } else if (is_transfer(verb)) {
        FtpTransfer t;
        t.command = verb;
        if (verb == "RETR") {
            t.kind = FtpTransfer::Kind::Download;
            ++counters().downloads;
        } else if (verb == "LIST" || verb == "NLST" || verb == "MLSD") {
            t.kind = FtpTransfer::Kind::Listing;
            ++counters().listings;
        } else {
            t.kind = FtpTransfer::Kind::Upload;
            ++counters().uploads;
        }
        std::string_view name = text::trim(command.arg);
        t.path =
            name.empty() && verb == "STOU" ? std::string("(STOU)") : ftp::join_path(cwd_, name);
        t.resumed = resume_ && t.kind != FtpTransfer::Kind::Listing;
        if (t.resumed) ++counters().resumed;
        t.generation = generation_;
        resume_ = false;
        p.transfer = session_->begin(std::move(t));
    } else if (verb == "REST") {
        std::string_view n = text::trim(command.arg);
        resume_ = !n.empty() && n.find_first_not_of('0') != std::string_view::npos;
    } else if (verb == "CWD" || verb == "XCWD") {
        p.arg = bounded(text::trim(command.arg), ftp::kMaxPath);
    } else if (verb == "CDUP" || verb == "XCUP") {
        p.arg = "..";
    } else if (verb == "ABOR") {
        std::optional<FtpTransfer> t;
        for (const Pending& q : commands_)
            if (q.transfer) t = session_->transfer(q.transfer);
        if (t && t->kind != FtpTransfer::Kind::Listing && t->state != FtpTransfer::State::Done) {
            ++counters().aborted;
            if (t->state == FtpTransfer::State::Receiving) {
                ObjectInfo info;
                info.protocol = Service::Ftp;
                info.direction = t->kind == FtpTransfer::Kind::Download ? S2C : C2S;
                info.name = t->path;
                host_.record_fallback(info, Category::Partial,
                                      "ABOR: the transfer ended before its last byte; what "
                                      "crossed is not delivered",
                                      "drop");
            }
        }
        session_->abort_current();
    } else if (verb == "AUTH") {
        std::string mechanism = text::upper(text::trim(command.arg));
        tls_asked_ = mechanism == "TLS" || mechanism == "SSL" || mechanism == "TLS-C" ||
                     mechanism == "TLS-P";
    }
    commands_.push_back(std::move(p));
}

void FtpControlInspector::on_reply(uint16_t code, std::string_view last_line) {
    FlowAddresses a = host_.addresses();
    std::string_view text = last_line.size() > 4 ? last_line.substr(4) : std::string_view();
    if (code == 227 || code == 229) {
        // Passive: the client connects to the address the server gives.
        std::optional<ftp::HostPort> hp =
            code == 227 ? ftp::parse_pasv_reply(text) : ftp::parse_epsv_reply(text);
        if (hp)
            expect(a.client, *hp, a.server);
        else
            ++counters().refused_addresses;
    }
    if (commands_.empty() || code < 200) return;  // the greeting, or a preliminary reply
    Pending p = std::move(commands_.front());
    commands_.pop_front();
    bool ok = code < 300;
    if (ok && (p.verb == "CWD" || p.verb == "XCWD" || p.verb == "CDUP" || p.verb == "XCUP")) {
        if (p.arg == "..") {
            size_t slash = cwd_.rfind('/');
            if (cwd_.starts_with('/') && slash != std::string::npos)
                cwd_.resize(std::max<size_t>(1, slash));
            else
                cwd_.clear();  // unknown
        } else if (p.arg.starts_with('/') || !cwd_.empty()) {
            cwd_ = ftp::join_path(cwd_, p.arg);
        }
    } else if (code == 257 && (p.verb == "PWD" || p.verb == "XPWD")) {
        if (std::optional<std::string> dir = ftp::parse_257(text)) cwd_ = *dir;
    } else if (p.verb == "AUTH") {
        tls_asked_ = false;
        if (code == 234) {
            ++counters().tls;
            release(ReleaseReason::Tls);
        }
    }
    // A transfer's final reply was held: the server side settles it (and
    // forgets the transfer) once its verdict allows.
    if (client_->waiting()) host_.redrive();
}

void FtpControlInspector::release(ReleaseReason reason) {
    if (!released_) {
        released_ = true;
        release_reason_ = reason;
    }
    if (host_released_ || closing_ || server_->holds()) return;
    host_released_ = true;
    host_.release(release_reason_);
}

void FtpControlInspector::protocol_error(Direction d, const std::string& why) {
    if (closing_) return;
    ++counters().protocol_errors;
    ObjectInfo info;
    info.protocol = Service::Ftp;
    info.direction = d;
    info.name = commands_.empty() ? std::string("control") : commands_.front().verb;
    if (host_.policy().fallback_for(Category::ProtocolError) == Action::Block) {
        host_.record_fallback(info, Category::ProtocolError, why, "reset");
        closing_ = true;
        host_.reset_both();
        return;
    }
    if (released_) return;
    host_.record_fallback(info, Category::ProtocolError, why, "pass");
    release(ReleaseReason::NotProtocol);
}

// -- data connections ----------------------------------------------------------

// One direction of a data connection: whichever sends bytes carries the
// file (the server in passive RETR and active RETR alike, whichever side
// opened the connection).
class FtpDataInspector::Side final : public StreamTransform {
  public:
    Side(FtpDataInspector& in, Direction d) : in_(in), direction_(d) {}
    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;
    bool on_verdict(uint64_t id, const ScanVerdict& verdict);
    size_t memory_bytes() const { return object_ ? size_t(object_->memory_bytes()) : 0; }
    // The client sent ABOR before the transfer's completion: true when this
    // side reset the data connection (the server, which does not see ABOR
    // while it waits on the data connection, then answers it).
    bool abort_if_asked();
    // The flow ends: a transfer never finished (its data connection reset
    // mid-way) lets its completion reply go; a blocked one's 550 need not
    // wait for its reader any longer.
    void end() {
        if (transfer_ && !finished_) finish(false, {});
        note_receiver_closed(true);
    }
    // A blocked file's receiver closed the data connection, having read the
    // drop message (`gone`: the flow is over anyway): the control side may
    // now say 550.
    void note_receiver_closed(bool gone) {
        if (!blocked_ || receiver_closed_ || !transfer_) return;
        Direction receiver = direction_ == C2S ? S2C : C2S;
        if (!gone && !in_.host_.ended(receiver)) return;
        receiver_closed_ = true;
        in_.session_->receiver_closed(transfer_);
    }

  private:
    enum class Mode : uint8_t {
        Idle,      // no byte yet
        Passing,   // not a file (a listing, no transfer), or passed unscanned
        Holding,   // the file accumulates, relayed
        Judging,   // complete, scanned: its verdict is awaited
        Dropping,  // aborted: what is held and what comes is dropped
        Done,      // delivered or replaced
        Closed,    // send_and_close(): nothing more
    };
    void bind(MapCursor& c);
    void hold(MapCursor& c, Push push);
    void fallback(MapCursor& c, Category category, const std::string& reason);
    // The drop message and the 550 notice for a blocked file.
    void block_texts(const std::string& detection, const std::string& category,
                     const std::string& event_id);
    void set_relay(StreamSink& sink, bool on) {
        if (on != relay_) sink.relay(on);
        relay_ = on;
    }
    void finish(bool blocked, std::string notice) {
        finished_ = true;
        in_.session_->finish(transfer_, blocked, std::move(notice));
    }
    FtpCounters& counters() { return *in_.session_->counters(); }

    FtpDataInspector& in_;
    Direction direction_;
    Mode mode_ = Mode::Idle;
    bool relay_ = false;
    uint64_t transfer_ = 0;
    ObjectInfo info_;
    std::shared_ptr<ObjectBuffer> object_;
    // The file for the quarantine, until its verdict is in.
    std::shared_ptr<const QuarantineSource> original_;
    uint64_t appended_ = 0;  // input offset appended to object_ up to
    uint64_t scan_id_ = 0;
    bool ready_ = false;  // the verdict is in
    bool blocked_ = false;
    bool finished_ = false;         // the session has this transfer's outcome
    bool receiver_closed_ = false;  // told the session (note_receiver_closed())
    std::string drop_;              // blocked: what the receiver gets instead
};

bool FtpDataInspector::Side::abort_if_asked() {
    if (!transfer_ || mode_ == Mode::Closed) return false;
    std::optional<FtpTransfer> t = in_.session_->transfer(transfer_);
    if (!t || !t->aborted) return false;
    mode_ = Mode::Closed;
    object_.reset();
    if (!finished_) finish(false, {});
    in_.host_.reset_both();
    return true;
}

void FtpDataInspector::Side::bind(MapCursor& c) {
    std::optional<FtpTransfer> t = in_.session_->bind();
    if (!t || t->kind == FtpTransfer::Kind::Listing) {
        mode_ = Mode::Passing;
        return;
    }
    transfer_ = t->number;
    info_.protocol = Service::Ftp;
    info_.direction = t->kind == FtpTransfer::Kind::Download ? S2C : C2S;
    info_.name = t->path;
    info_.file_name = std::string(basename_of(t->path));
    if (t->resumed) {
        // REST: only the tail of the file crosses; what decides is the
        // fallback of category partial.
        fallback(c, Category::Partial, "REST: a resumed transfer carries part of the file");
        return;
    }
    object_ = ObjectBuffer::make(in_.host_.limits().max_content_size);
    appended_ = c.at;
    mode_ = Mode::Holding;
    set_relay(c.sink, true);
    // ABOR is looked for once a second until the flow ends.
    in_.host_.want_ticks(true);
}

void FtpDataInspector::Side::hold(MapCursor& c, Push push) {
    if (appended_ < c.end()) {
        switch (object_->append(c.from(appended_))) {
            case ObjectBuffer::Append::Ok:
                appended_ = c.end();
                break;
            case ObjectBuffer::Append::OverLimit:
                fallback(c, Category::ContentSize, "file larger than max_content_size");
                return;
            case ObjectBuffer::Append::NoResource:
                fallback(c, Category::OutOfResource, "cannot keep the file: " + object_->error());
                return;
        }
    }
    if (push == Push::End) {
        std::optional<FtpTransfer> t = in_.session_->transfer(transfer_);
        if (t && t->aborted) {
            // ABOR: logged by the control side; nothing of it is delivered.
            object_.reset();
            mode_ = Mode::Dropping;
            finish(false, {});
            return;
        }
        mode_ = Mode::Judging;
        scan_id_ = in_.next_id_++;
        ++counters().files_scanned;
        if (in_.host_.quarantining()) {
            auto source = std::make_shared<QuarantineSource>();
            source->bytes = object_;
            original_ = std::move(source);
        }
        in_.host_.scan(scan_id_, info_, std::move(object_));
        object_.reset();
        return;
    }
    if (push == Push::Stalled && relay_) fallback(c, Category::OutOfResource, "relay store full");
}

void FtpDataInspector::Side::block_texts(const std::string& detection, const std::string& category,
                                         const std::string& event_id) {
    MessageFields f = in_.host_.message_fields();
    f.detection = detection;
    f.category = category;
    f.object = info_.name;
    f.action = "block";
    f.event_id = event_id;
    drop_ = render(in_.host_, "ftp-drop", f);
    std::string notice = notice_line(render(in_.host_, "ftp-virus-notice", f));
    blocked_ = true;
    ++counters().files_blocked;
    finish(true, std::move(notice));
}

void FtpDataInspector::Side::fallback(MapCursor& c, Category category, const std::string& reason) {
    object_.reset();
    if (in_.host_.policy().fallback_for(category) == Action::Pass) {
        in_.host_.record_fallback(info_, category, reason, "pass");
        // What is held goes now, the rest as it comes.
        c.pass_to(c.end());
        set_relay(c.sink, false);
        mode_ = Mode::Passing;
        finish(false, {});
        return;
    }
    std::string event_id = in_.host_.record_fallback(info_, category, reason, "block");
    std::string name(category_name(category));
    block_texts(name, name, event_id);
    // The receiver gets the drop message and the end now; the sender a
    // reset (it would otherwise send a file nobody is to receive).
    mode_ = Mode::Closed;
    in_.host_.send_and_close(direction_, text::bytes(drop_));
}

bool FtpDataInspector::Side::on_verdict(uint64_t id, const ScanVerdict& v) {
    if (mode_ != Mode::Judging || id != scan_id_) return false;
    ready_ = true;
    if (v.is_clean()) {
        original_.reset();
        finish(false, {});
        return true;
    }
    Action action = in_.host_.policy().decide(v);
    ObjectInfo kept = info_;
    kept.original = std::move(original_);
    std::string event_id = in_.host_.record(kept, v, action_name(action));
    if (action == Action::Pass) {
        finish(false, {});
        return true;
    }
    if (v.is_infected())
        block_texts(v.detection.signature, std::string(threat_category_name(v.detection.category)),
                    event_id);
    else {
        std::string name(category_name(category_of(v.error)));
        block_texts(name, name, event_id);
    }
    return true;
}

void FtpDataInspector::Side::on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                                      StreamSink& sink) {
    MapCursor c{offset, pending, sink, offset};
    if (mode_ == Mode::Idle && !pending.empty()) bind(c);
    switch (mode_) {
        case Mode::Idle:
        case Mode::Closed:
            return;
        case Mode::Passing:
        case Mode::Done:
            c.pass_to(c.end());
            set_relay(sink, false);
            return;
        case Mode::Holding:
            hold(c, push);
            if (mode_ != Mode::Dropping) return;
            [[fallthrough]];
        case Mode::Dropping:
            c.replace_to(c.end(), {});
            if (push == Push::End) set_relay(sink, false);
            return;
        case Mode::Judging:
            if (!ready_) return;
            if (blocked_)
                c.replace_to(c.end(), drop_);
            else
                c.pass_to(c.end());
            mode_ = Mode::Done;
            set_relay(sink, false);
            return;
    }
}

FtpDataInspector::FtpDataInspector(InspectorHost& host, std::shared_ptr<FtpSession> session)
    : host_(host), session_(std::move(session)) {
    sides_[size_t(C2S)] = std::make_unique<Side>(*this, C2S);
    sides_[size_t(S2C)] = std::make_unique<Side>(*this, S2C);
}

FtpDataInspector::~FtpDataInspector() {
    for (auto& side : sides_)
        side->end();
}

bool FtpDataInspector::on_tick(uint64_t) {
    for (auto& side : sides_)
        side->note_receiver_closed(false);
    if (closing_) return false;
    for (auto& side : sides_)
        if (side->abort_if_asked()) {
            closing_ = true;
            return true;
        }
    return false;
}

StreamTransform& FtpDataInspector::transform(Direction d) {
    return *sides_[size_t(d)];
}

void FtpDataInspector::on_verdict(uint64_t id, const ScanVerdict& verdict) {
    for (auto& side : sides_)
        if (side->on_verdict(id, verdict)) return;
}

size_t FtpDataInspector::memory_bytes() const {
    return sides_[0]->memory_bytes() + sides_[1]->memory_bytes();
}

}  // namespace nfqscan
