// The SMTP inspector (make_inspector(Service::Smtp, host)) between a fake
// InspectorHost and a simulator of the stream engine's contract
// (tcp_stream.h, StreamDirection::feed) and of the worker's host
// (FlowInspection, Worker::settle): the same engine model as
// http_inspector_fuzz.cc (a pending buffer per direction, the relay store
// with its Stalled push, the engine's forced maps at the End and beyond the
// pending limit, everything passed unchanged after host.release()), plus
// what an inspector that speaks for a peer needs: host.send() bytes are
// appended to the receiver's output after the call, and host.redrive()
// shows both directions their pending bytes again, a few rounds at most,
// as the worker does. Verdicts come later, in any order (the per-part scans
// of a blocked message among them). The server is fuzzed bytes, or a small
// SMTP server that answers what reached it (so deep sessions are reached).
// Checked:
// - the inspector maps only bytes it was shown;
// - the engine never maps C2S or S2C bytes on the inspector's behalf (the
//   pending limit, the FIN) while it inspects: those bytes would pass
//   unparsed (a DATA and its message among them, unscanned);
// - a message is held: the inspector answers the client's DATA itself (its
//   own 354) with the DATA line and everything after it unmapped, and from
//   then until the message's outcome is known (its scans answered, or a
//   fallback logged) nothing reaches the server: no pass, no replacement
//   bytes, no host.send() towards it;
// - a scanned message is the dot-unstuffed body after the DATA line up to
//   the first "CRLF.CRLF" (an independent reading of the wire), so what the
//   server is given is what was scanned;
// - a message whose verdict blocks (replace, strip, reject, drop) never
//   reaches the server as it was sent: no byte of its wire range (after the
//   DATA line up to its terminator, the test marker "EICAR" in it for
//   instance) is passed, ever, by the inspector, the engine or a release;
// - with reject / drop (and no subject tagging), the only bytes of its own
//   the inspector gives the server are "DATA" and "RSET" lines;
// - scans come only from held messages; ids are unique, objects within
//   max_content_size; release() never leaves a scan outstanding;
// - nothing is asked of the host after reset_both();
// - memory_bytes() stays within what the limits allow, and endless
//   pipelined commands without replies do not all go to the server
//   (at most SmtpInspector::kMaxOutstanding lines without a reply);
// - with the small server alone answering (its greeting too), every
//   message it takes was scanned or logged as a fallback.
//
// Input layout (make_corpus.py): u8 setup, u8 setup2, then operations,
// each an op byte (low 2 bits: kind):
//   0 client bytes: u8 length, bytes      1 server bytes: u8 length, bytes
//   2 a verdict: op bits 2-3: clean (or infected, setup2 bit 0), infected,
//     error, skipped; op bits 4-7: which outstanding scan (index modulo
//     their number, 0 the oldest), 15: a stale id
//   3 op bit 4: the small server answers what reached it, and greets first
//     (op bits 5-7: its variant: 5 RCPT refused, 6 DATA refused, 7 message
//     refused);
//     else the end of a direction (op bit 2: server): a FIN, or (op bit 3)
//     a Stalled push
// Setup: bits 0-2 on_virus: replace, strip, reject, drop, pass (5-7:
// replace, with the policy category going to mail_on_policy); bits 3-4
// starttls: allow, strip, block (3: allow); bit 5 protocol-error: pass;
// bit 6 content-size: block; bit 7 a small max_content_size.
// Setup2: bit 0 infected verdicts by default; bit 1 out-of-resource: block;
// bit 2 notify_recipient_on_error_pass; bit 3 policy detections.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "../../src/proto/smtp/smtp_inspector.h"
#include "engine_model.h"
#include "fuzz_check.h"
#include "fuzz_input.h"
#include "nfqscan/inspector.h"

namespace {

using namespace nfqscan;
using nfqscan::fuzz::FuzzInput;
using Push = StreamTransform::Push;

constexpr Direction C2S = Direction::ClientToServer;
constexpr Direction S2C = Direction::ServerToClient;

using fuzz::EngineDirection;
using fuzz::kMaxContentSize;
constexpr uint64_t kSmallContentSize = 300;
constexpr int kRequestRounds = 8;  // Worker::settle

std::string_view text_of(std::span<const uint8_t> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    return true;
}

// Input ranges [begin, end), kept sorted and merged.
struct Ranges {
    std::vector<std::pair<uint64_t, uint64_t>> r;
    void add(uint64_t b, uint64_t e) {
        if (b >= e) return;
        if (!r.empty() && r.back().second == b) {
            r.back().second = e;
            return;
        }
        r.emplace_back(b, e);
    }
    bool overlaps(uint64_t b, uint64_t e) const {
        return std::any_of(r.begin(), r.end(),
                           [&](const auto& x) { return x.first < e && b < x.second; });
    }
};

// One direction: the engine's state (engine_model.h), and the input
// ranges that went to the receiver unchanged.
struct SimulatedDirection : EngineDirection {
    Ranges passed;
};

class Simulator;

class SimulatedSink : public fuzz::EngineSink {
  public:
    SimulatedSink(Simulator& sim, SimulatedDirection& d, Direction direction)
        : EngineSink(d), sim_(sim), direction_(direction) {}
    void pass(size_t length) override;
    void replace(size_t length, std::span<const uint8_t> bytes) override;

  private:
    Simulator& sim_;
    Direction direction_;
};

class Simulator : public fuzz::FuzzHostBase {
  public:
    explicit Simulator(FuzzInput& in) : FuzzHostBase("smtp", 25), in_(in) {}

    void run();

    // ---- InspectorHost
    void scan(uint64_t id, const ObjectInfo& info,
              std::shared_ptr<const ObjectBuffer> bytes) override;
    std::string record(const ObjectInfo& info, const ScanVerdict&,
                       std::string_view action) override {
        FUZZ_CHECK(!reset_);
        FUZZ_CHECK(info.protocol == Service::Smtp && !action.empty());
        return "event-" + std::to_string(++events_);
    }
    std::string record_fallback(const ObjectInfo& info, Category, std::string_view reason,
                                std::string_view action) override {
        FUZZ_CHECK(!reset_);
        FUZZ_CHECK(info.protocol == Service::Smtp && !action.empty() && !reason.empty());
        // A message that cannot be held (too big, no room) or a session
        // that breaks: the fallback decides, and the hold is over.
        end_hold(false);
        ++messages_let_go_;
        return "event-" + std::to_string(++events_);
    }
    // SMTP ends a session with resets, never with a message.
    void send_and_close(Direction, std::span<const uint8_t>) override { FUZZ_CHECK(false); }
    void reset_both() override {
        FUZZ_CHECK(!reset_);
        reset_ = true;
        end_hold(false);
    }
    void send(Direction d, std::span<const uint8_t> bytes) override;
    void redrive() override {
        FUZZ_CHECK(!reset_);
        redrive_asked_ = true;
    }
    // A notification only queues a mail: nothing for the wire.
    void notify(Notification) override { FUZZ_CHECK(!reset_); }
    void note_allowlisted(const ObjectInfo&) override { FUZZ_CHECK(false); }
    void release(ReleaseReason) override {
        FUZZ_CHECK(!reset_);
        FUZZ_CHECK(!released_);
        // From here on every byte passes unchanged: nothing may wait for a
        // verdict (a held message would go to the server unjudged).
        FUZZ_CHECK(outstanding_.empty());
        released_ = true;
        end_hold(false);
    }

    // ---- for SimulatedSink
    // `length` input bytes of d mapped, `out` bytes given to its receiver;
    // `passed`: unchanged, from input offset `at`.
    void mapping(Direction d, uint64_t at, size_t length, size_t unmapped, std::string_view out,
                 bool passed);

  private:
    struct Scan {
        uint64_t id;
    };

    void setup();
    void take(Direction d);
    void show(Direction d, Push push);
    void settle();
    void answer(int which, int kind);
    void serve(int variant);
    void check_memory() const;
    void end_hold(bool judged);
    void output(Direction d, std::string_view bytes);
    bool ended() const { return reset_; }
    // Reject / drop (and no subject tagging): no message is ever rewritten.
    bool own_words_only() const {
        return (policy_.mail_on_virus == MailBlock::Reject ||
                policy_.mail_on_virus == MailBlock::Drop) &&
               !policy_.notify_recipient_on_error_pass && !policy_detections_;
    }

    FuzzInput& in_;
    std::unique_ptr<Inspector> inspector_;
    SimulatedDirection dirs_[2];
    const SimulatedSink* shown_[2] = {nullptr, nullptr};

    bool infected_default_ = false;
    bool policy_detections_ = false;

    std::deque<Scan> outstanding_;
    std::set<uint64_t> scanned_;
    std::vector<uint64_t> answered_;
    bool reset_ = false;
    bool released_ = false;
    uint64_t events_ = 0;
    std::string own_[2];  // host.send() bytes, delivered after the call
    bool redrive_asked_ = false;

    // The message held: from the inspector's own 354 to its outcome.
    bool held_ = false;
    uint64_t held_begin_ = 0;  // input offset of its DATA line
    uint64_t held_body_ = 0;   // of its first byte (known at its scan)
    uint64_t held_end_ = 0;    // after its terminator
    std::optional<uint64_t> whole_id_;
    std::set<uint64_t> message_scans_;  // the whole message's scan and its parts'
    bool whole_blocks_ = false;
    Ranges blocked_;  // wire ranges of messages whose verdict blocked

    // Lines given to the server since it last said something (not counted
    // while it may be taking a message: after a 354).
    size_t lines_unanswered_ = 0;
    bool server_in_data_ = false;

    // The small server: what it has read of the C2S output.
    size_t served_ = 0;
    bool serving_data_ = false;
    int serving_rcpts_ = 0;
    size_t messages_taken_ = 0;
    bool greeted_ = false;       // the server said something
    bool honest_server_ = true;  // and only the small server spoke
    // Messages scanned, and fallbacks logged: what the server may take.
    size_t messages_let_go_ = 0;
};

void SimulatedSink::pass(size_t length) {
    sim_.mapping(
        direction_, at(), length, unmapped(),
        text_of(
            std::span<const uint8_t>(d_.pending).subspan(consumed_, std::min(length, unmapped()))),
        true);
    consumed_ += length;
}

void SimulatedSink::replace(size_t length, std::span<const uint8_t> bytes) {
    sim_.mapping(direction_, at(), length, unmapped(), text_of(bytes), false);
    consumed_ += length;
}

void Simulator::mapping(Direction d, uint64_t at, size_t length, size_t unmapped,
                        std::string_view out, bool passed) {
    FUZZ_CHECK(!reset_);
    FUZZ_CHECK(length <= unmapped);  // only bytes it was shown
    if (d == C2S) {
        // Nothing reaches the server while a message is held.
        FUZZ_CHECK(!held_ || out.empty());
        if (!passed && !out.empty()) {
            // With reject / drop, the inspector's own words to the server are
            // DATA and RSET only: never a message (of its own or the client's).
            FUZZ_CHECK(!own_words_only() || out == "DATA\r\n" || out == "RSET\r\n");
        }
        if (passed) {
            FUZZ_CHECK(!blocked_.overlaps(at, at + length));
            dirs_[size_t(d)].passed.add(at, at + length);
        }
    }
    output(d, out);
}

void Simulator::output(Direction d, std::string_view bytes) {
    dirs_[size_t(d)].output.append(bytes);
    if (d != C2S) return;
    lines_unanswered_ += size_t(std::count(bytes.begin(), bytes.end(), '\n'));
    FUZZ_CHECK(released_ || server_in_data_ ||
               lines_unanswered_ <= SmtpInspector::kMaxOutstanding + 4);
}

void Simulator::send(Direction d, std::span<const uint8_t> bytes) {
    FUZZ_CHECK(!reset_);
    FUZZ_CHECK(!released_);
    FUZZ_CHECK(!bytes.empty());
    std::string_view text = text_of(bytes);
    if (d == C2S) {
        FUZZ_CHECK(!held_);
        FUZZ_CHECK(!own_words_only() || text == "DATA\r\n" || text == "RSET\r\n");
    } else if (text.starts_with("354")) {
        // The client's DATA, answered on the server's behalf: the message
        // is held from its DATA line on, which the inspector left unmapped.
        const SimulatedSink* sink = shown_[size_t(C2S)];
        FUZZ_CHECK(sink != nullptr);
        FUZZ_CHECK(!held_);
        std::string_view rest = text_of(sink->shown().subspan(sink->consumed()));
        size_t verb = rest.find_first_not_of(std::string_view(" \t\r\v\f\0", 6));
        FUZZ_CHECK(verb != std::string_view::npos && starts_with_nocase(rest.substr(verb), "DATA"));
        held_ = true;
        held_begin_ = sink->at();
        held_end_ = 0;
        whole_id_.reset();
        message_scans_.clear();
        whole_blocks_ = false;
    }
    own_[size_t(d)].append(text);
}

void Simulator::scan(uint64_t id, const ObjectInfo& info,
                     std::shared_ptr<const ObjectBuffer> bytes) {
    FUZZ_CHECK(!reset_);
    FUZZ_CHECK(!released_);
    FUZZ_CHECK(bytes != nullptr);
    FUZZ_CHECK(info.protocol == Service::Smtp && info.direction == C2S);
    FUZZ_CHECK(bytes->size() <= limits_.max_content_size);
    FUZZ_CHECK(scanned_.insert(id).second);
    // Only a held message is scanned (or its parts).
    FUZZ_CHECK(held_);
    outstanding_.push_back({id});
    message_scans_.insert(id);
    if (whole_id_) return;  // a part, asked for inside on_verdict()
    whole_id_ = id;
    ++messages_let_go_;
    // The whole message, handed over while the client's bytes are shown:
    // read the wire independently. The DATA line, then the body up to the
    // first line ".".
    const SimulatedSink* sink = shown_[size_t(C2S)];
    FUZZ_CHECK(sink != nullptr);
    std::string_view wire = text_of(dirs_[size_t(C2S)].pending);
    const uint64_t offset = dirs_[size_t(C2S)].offset;
    FUZZ_CHECK(held_begin_ >= offset && held_begin_ < offset + wire.size());
    size_t lf = wire.find('\n', size_t(held_begin_ - offset));
    FUZZ_CHECK(lf != std::string_view::npos);
    size_t body = lf + 1, end;
    held_body_ = offset + body;
    if (wire.substr(body).starts_with(".\r\n")) {
        end = body + 3;
    } else {
        size_t t = wire.find("\r\n.\r\n", body);
        FUZZ_CHECK(t != std::string_view::npos);
        end = t + 5;
    }
    held_end_ = offset + end;
    // Dot-unstuffed, it is what was scanned.
    std::string message;
    std::string_view raw = wire.substr(body, end - 3 - body);
    for (size_t at = 0; at < raw.size();) {
        size_t eol = raw.find("\r\n", at);
        size_t next = eol == std::string_view::npos ? raw.size() : eol + 2;
        std::string_view line = raw.substr(at, next - at);
        if (line.starts_with(".")) line.remove_prefix(1);
        message.append(line);
        at = next;
    }
    FUZZ_CHECK(text_of(bytes->bytes()) == message);
}

void Simulator::end_hold(bool judged) {
    if (!held_) return;
    held_ = false;
    if (judged && whole_blocks_) {
        // The message as sent never reaches the server, now or later.
        FUZZ_CHECK(held_end_ > held_body_ && held_body_ > held_begin_);
        FUZZ_CHECK(!dirs_[size_t(C2S)].passed.overlaps(held_body_, held_end_));
        blocked_.add(held_body_, held_end_);
    }
}

void Simulator::check_memory() const {
    // A message below max_content_size (the inspector's and the judge's
    // copy, each at most twice that while growing) and the head kept for a
    // replacement.
    FUZZ_CHECK(inspector_->memory_bytes() <=
               4 * limits_.max_content_size + SmtpInspector::kHeadKept + 4096);
}

void Simulator::setup() {
    uint8_t setup = in_.u8(), setup2 = in_.u8();
    switch (setup & 7) {
        case 0:
            policy_.mail_on_virus = MailBlock::Replace;
            break;
        case 1:
            policy_.mail_on_virus = MailBlock::Strip;
            break;
        case 2:
            policy_.mail_on_virus = MailBlock::Reject;
            break;
        case 3:
            policy_.mail_on_virus = MailBlock::Drop;
            break;
        case 4:
            policy_.on_virus = Action::Pass;
            break;
        default:
            policy_.mail_on_policy = MailBlock(setup & 3);
            break;
    }
    switch ((setup >> 3) & 3) {
        case 1:
            policy_.starttls = StartTls::Strip;
            break;
        case 2:
            policy_.starttls = StartTls::Block;
            break;
        default:
            policy_.starttls = StartTls::Allow;
            break;
    }
    auto& fallback = policy_.fallback;
    if (setup & 32) fallback[size_t(Category::ProtocolError)] = Action::Pass;
    if (setup & 64) fallback[size_t(Category::ContentSize)] = Action::Block;
    limits_.max_content_size = (setup & 128) ? kSmallContentSize : kMaxContentSize;
    infected_default_ = (setup2 & 1) != 0;
    if (setup2 & 2) fallback[size_t(Category::OutOfResource)] = Action::Block;
    policy_.notify_recipient_on_error_pass = (setup2 & 4) != 0;
    policy_detections_ = (setup2 & 8) != 0;
}

void Simulator::run() {
    setup();
    inspector_ = make_inspector(Service::Smtp, *this);
    FUZZ_CHECK(inspector_ != nullptr);
    for (int ops = 0; ops < 4096 && !in_.exhausted(); ++ops) {
        uint8_t op = in_.u8();
        switch (op & 3) {
            case 0:
            case 1: {
                Direction d = (op & 3) == 0 ? C2S : S2C;
                if (d == S2C) {
                    honest_server_ = false;
                    greeted_ = true;
                }
                std::span<const uint8_t> bytes = in_.bytes(in_.u8());
                SimulatedDirection& s = dirs_[size_t(d)];
                if (s.fin_at_sender) break;
                s.sender.insert(s.sender.end(), bytes.begin(), bytes.end());
                take(d);
                break;
            }
            case 2:
                answer(op >> 4, (op >> 2) & 3);
                break;
            case 3: {
                Direction d = (op & 4) ? S2C : C2S;
                if (op & 16) {
                    serve(op >> 5);
                } else if (op & 8) {
                    show(d, Push::Stalled);
                } else {
                    dirs_[size_t(d)].fin_at_sender = true;
                    take(d);
                }
                break;
            }
        }
        settle();
        check_memory();
    }
    // Every verdict comes in the end; the session closes.
    for (int i = 0; i < 64 && !outstanding_.empty() && !ended(); ++i) {
        answer(0, 0);
        settle();
        serve(0);
        settle();
    }
    for (Direction d : {C2S, S2C}) {
        dirs_[size_t(d)].fin_at_sender = true;
        take(d);
        settle();
    }
    check_memory();
}

// The engine takes what the sender sent: all of it in pass mode, what fits
// in the relay store while relaying.
void Simulator::take(Direction d) {
    SimulatedDirection& s = dirs_[size_t(d)];
    if (s.ended) return;
    if (s.stalled()) {
        show(d, Push::Stalled);
        return;
    }
    size_t n = s.takeable();
    if (d == S2C && n > 0) {
        // The server spoke: what the client's lines waited for may be here.
        lines_unanswered_ = 0;
        server_in_data_ = text_of(std::span<const uint8_t>(s.sender).first(n)).find("354") !=
                          std::string_view::npos;
    }
    s.take(n);
    show(d, Push::More);
}

// The engine's feed().
void Simulator::show(Direction d, Push push) {
    SimulatedDirection& s = dirs_[size_t(d)];
    if (ended()) {
        s.pending.clear();
        s.sender.clear();
        return;
    }
    push = s.shown(push);
    if (s.pending.empty()) {
        s.end_relay();
        return;
    }
    if (released_) {
        // FlowInspection without an inspector: everything, unchanged.
        FUZZ_CHECK(outstanding_.empty());
        s.relay_requested = false;
        if (d == C2S) {
            FUZZ_CHECK(!blocked_.overlaps(s.offset, s.offset + s.pending.size()));
            s.passed.add(s.offset, s.offset + s.pending.size());
        }
        output(d, text_of(s.pending));
        s.offset += s.pending.size();
        s.pending.clear();
        s.end_relay();
        return;
    }
    SimulatedSink sink(*this, s, d);
    shown_[size_t(d)] = &sink;
    inspector_->transform(d).on_bytes(s.offset, s.pending, push, sink);
    shown_[size_t(d)] = nullptr;
    size_t consumed = sink.consumed();
    size_t forced = ended() ? 0 : s.forced(push, consumed);
    // Bytes the engine maps for the inspector pass unparsed: a command the
    // inspector never framed, a DATA and a message never scanned.
    FUZZ_CHECK(forced == 0 || released_);
    if (ended()) {
        s.pending.clear();
        s.sender.clear();
        return;
    }
    s.pending.erase(s.pending.begin(), s.pending.begin() + ptrdiff_t(consumed));
    s.offset += consumed;
    s.end_relay();
}

// Worker::settle: own bytes first, then a redrive, a few rounds.
void Simulator::settle() {
    for (int round = 0; round < kRequestRounds; ++round) {
        if (own_[0].empty() && own_[1].empty() && !redrive_asked_) return;
        for (Direction d : {C2S, S2C}) {
            std::string own = std::move(own_[size_t(d)]);
            own_[size_t(d)].clear();
            if (!ended() && !own.empty()) output(d, own);
        }
        if (redrive_asked_ && !ended()) {
            redrive_asked_ = false;
            for (Direction d : {C2S, S2C})
                show(d, Push::More);
        }
        redrive_asked_ = false;
    }
}

void Simulator::answer(int which, int kind) {
    if (ended()) return;
    std::optional<Scan> scan = fuzz::pick_scan(which, outstanding_, answered_, in_);
    if (!scan) return;
    const uint64_t id = scan->id;
    Detection detection{ScanEngineKind::ClamAV, "Eicar-Signature", "", {}};
    if (policy_detections_) detection.category = ThreatCategory::Policy;
    ScanVerdict v = fuzz::fuzz_verdict(kind, infected_default_, detection);
    const bool mine = which != 15 && message_scans_.erase(id) > 0;
    if (mine && whole_id_ && id == *whole_id_) whole_blocks_ = policy_.decide(v) == Action::Block;
    inspector_->on_verdict(id, v);
    // Every scan of the held message answered (no part scans started): its
    // outcome is known.
    if (mine && message_scans_.empty()) end_hold(true);
    // continueReading(): both directions see their pending bytes again.
    for (Direction d : {C2S, S2C}) {
        if (dirs_[size_t(d)].sender_waits())
            take(d);
        else
            show(d, Push::More);
    }
}

// A small SMTP server: answers what reached it (the C2S output).
void Simulator::serve(int variant) {
    const std::string& input = dirs_[size_t(C2S)].output;
    std::string out;
    if (!greeted_) out = "220 mx.fuzz ESMTP\r\n";
    greeted_ = true;
    while (served_ < input.size() && out.size() < 4096) {
        if (serving_data_) {
            size_t end = input.find("\r\n.\r\n", served_ - std::min<size_t>(served_, 2));
            if (end == std::string::npos) break;
            served_ = end + 5;
            serving_data_ = false;
            // A message the server takes was judged (scanned, or a logged
            // fallback), unless the session was released. Only a server
            // whose every reply is its own: fuzzed replies in between
            // answer commands the small server answers again.
            ++messages_taken_;
            FUZZ_CHECK(released_ || !honest_server_ || messages_taken_ <= messages_let_go_);
            serving_rcpts_ = 0;
            out += variant == 7 ? "451 4.3.0 Error: queue file write error\r\n"
                                : "250 2.0.0 Ok: queued as FUZZ\r\n";
            continue;
        }
        size_t lf = input.find('\n', served_);
        if (lf == std::string::npos) break;
        std::string line = input.substr(served_, lf - served_);
        served_ = lf + 1;
        // As Postfix's smtpd_token(): words between white space.
        size_t first = line.find_first_not_of(" \t\r\v\f");
        std::string verb = first == std::string::npos
                               ? ""
                               : line.substr(first, line.find_first_of(" \t\r\v\f", first) - first);
        for (char& c : verb)
            c = char(std::toupper(static_cast<unsigned char>(c)));
        if (verb == "STARTTLS") verb = "STAR";
        if (verb == "EHLO")
            out +=
                "250-mx.fuzz\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-STARTTLS\r\n"
                "250-BINARYMIME\r\n250 8BITMIME\r\n";
        else if (verb == "HELO")
            out += "250 mx.fuzz\r\n";
        else if (verb == "MAIL")
            out += (serving_rcpts_ = 0, "250 2.1.0 Ok\r\n");
        else if (verb == "RCPT" && variant == 5)
            out += "550 5.1.1 unknown\r\n";
        else if (verb == "RCPT")
            out += (++serving_rcpts_, "250 2.1.5 Ok\r\n");
        else if (verb == "DATA" && (serving_rcpts_ == 0 || variant == 6))
            out += "554 5.5.1 Error: no valid recipients\r\n";
        else if (verb == "DATA")
            out += (serving_data_ = true, "354 End data with <CR><LF>.<CR><LF>\r\n");
        else if (verb == "RSET")
            out += (serving_rcpts_ = 0, "250 2.0.0 Ok\r\n");
        else if (verb == "STAR")
            out += "220 2.0.0 Ready to start TLS\r\n";
        else if (verb == "AUTH")
            out += "334 VXNlcm5hbWU6\r\n";
        else if (verb == "QUIT")
            out += "221 2.0.0 Bye\r\n";
        else
            out += "502 5.5.2 Error: command not recognized\r\n";
    }
    SimulatedDirection& s = dirs_[size_t(S2C)];
    if (out.empty() || s.fin_at_sender) return;
    s.sender.insert(s.sender.end(), out.begin(), out.end());
    take(S2C);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzInput in(data, size);
    Simulator(in).run();
    return 0;
}
