// MessageJudge: one mail message (SMTP DATA, a POP3 RETR, an IMAP literal)
// on its way through the scan service and the policy, shared by the mail
// inspectors so that every protocol blocks, strips, tags and logs the same
// way. The inspector frames the message and decides what the wire sees; the
// judge decides what the message becomes:
//
//   submit(message)   -> host.scan(whole message)
//   verdict clean     -> Deliver (the original bytes, byte-identical)
//   infected, block   -> Replace / Strip: each leaf part is scanned on its
//                        own to name (and strip) the infected ones, then the
//                        replacement is built; Reject / Drop: at once
//   infected, pass    -> Deliver, logged
//   error, fallback   -> as the category's fallback says: block = the virus
//                        action with the error in the notice; pass = Deliver,
//                        or Rewrite with a tagged Subject
//                        (notify_recipient_on_error_pass)
//   clean or spam     -> with [spam] engine set, the spam engine is asked
//                        (host.check_spam) before anything is decided; then
//   spam (a YARA spam rule or the engine) -> on_spam: Deliver (accept),
//                        Rewrite (tag), Reject, Drop, Forward; an engine
//                        that fails -> its category's fallback: pass =
//                        Deliver (logged), block = handled as spam
// Virus, policy and scan errors outrank spam: the engine is not asked then.
// IMAP APPEND uploads (a client storing its own message) get no spam
// handling: a YARA spam match there is logged and passed.
//
// Everything not clean is logged through the host (one event per message).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "mail.h"
#include "nfqscan/inspector.h"

namespace nfqscan::mail {

// What the envelope says (SMTP) or the header does (POP3/IMAP).
struct Envelope {
    std::string sender;      // "<a@example.com>", "<>" for the null sender
    std::string recipients;  // "<b@example.com>, <c@example.com>"
    // Whom notify_sender_on_* tells, "<a@example.com>"; empty: `sender`
    // (SMTP's MAIL FROM). POP3/IMAP: Summary::reply_address.
    std::string reply_to;
    std::string helo;  // SMTP: the client's EHLO/HELO name, for the spam engine
};

// POP3 and IMAP have no envelope: the message's header says who sent it to
// whom (From, To) and whom to tell (Return-Path, else From). Only the header
// is parsed, so this is cheap whatever the message's size.
Envelope envelope_from_header(std::span<const uint8_t> message);

struct Outcome {
    enum class Kind : uint8_t {
        Deliver,  // the original message
        Rewrite,  // `message` instead (replace, strip, tag)
        Reject,   // SMTP: refuse it (550); `reply_text` says why
        Drop,     // SMTP: accept it (250) and deliver nothing
        Forward,  // SMTP: `message` to `forward_to` only (on_spam = "forward")
    };
    Kind kind = Kind::Deliver;
    std::string message;     // Rewrite: the new message (not dot-stuffed), CRLF line ends
    std::string reply_text;  // Reject/Drop: "<detection> found (event <id>)" for a reply line
    std::string action;      // what the event log said: "pass", "replace", "strip", ...
    bool blocked = false;    // the message did not reach its receiver as sent
    bool error = false;      // not judged (a fallback)
    std::string forward_to;  // Forward: "<spam@example.com>"
};

class MessageJudge {
  public:
    MessageJudge(InspectorHost& host, Service protocol, Direction direction);

    // Starts the judgement of `message` (decoded: dot-unstuffed, literal
    // contents). Scan ids are taken from `next_id`. The outcome is ready once
    // on_verdict() returns true.
    void submit(uint64_t& next_id, ObjectInfo info, std::shared_ptr<ObjectBuffer> message,
                Envelope envelope);
    // A message not scanned (content-size, partial, protocol-error,
    // out-of-resource): judged at once by the category's fallback. `head`
    // is what is known of the message (at least its header, if it came), to
    // build a replacement or a tagged copy from.
    Outcome fallback(ObjectInfo info, Category category, std::string_view reason,
                     std::span<const uint8_t> head, Envelope envelope);

    bool owns(uint64_t scan_id) const { return scans_.count(scan_id) > 0; }
    // A verdict of one of its scans; true when the outcome is ready (more
    // scans, of the parts, may start: their ids from `next_id`).
    bool on_verdict(uint64_t scan_id, const ScanVerdict& verdict, uint64_t& next_id);
    bool busy() const { return !scans_.empty(); }
    const Outcome& outcome() const { return outcome_; }
    size_t memory_bytes() const { return message_ ? size_t(message_->memory_bytes()) : 0; }

  private:
    void decide(uint64_t& next_id);
    // Clean or spam so far: asks the spam engine first, if there is one
    // (true: its verdict is awaited).
    bool ask_spam_engine(uint64_t& next_id);
    // The message is clean or spam (`whole_`, `engine_`): on_spam.
    void decide_spam();
    Headers spam_headers(const ScanVerdict& spam) const;
    // What the event of a spam verdict describes. Reject and drop keep the
    // message from every receiver as a blocked virus does, so the original
    // is attached for the quarantine.
    ObjectInfo spam_record_info(SpamAction how);
    // info_ with the original attached, for the record() that blocks.
    ObjectInfo kept_info();
    // A mail to the sender (notify_sender_on_*): Envelope::reply_to, else
    // Envelope::sender.
    void notify_sender(const std::string& detection, const std::string& category,
                       std::span<const uint8_t> message);
    static constexpr size_t kNotifiedHeaderMax = 64 << 10;
    void finish_blocked(MailBlock how, const ScanVerdict& verdict, const std::string& event_id,
                        std::span<const uint8_t> message);
    std::string notice(const std::string& detection, const std::string& category,
                       const std::string& object, const std::string& action,
                       const std::string& event_id) const;
    Headers extra_headers(const std::string& detection, bool error, const std::string& action,
                          const std::string& event_id) const;

    InspectorHost& host_;
    Service protocol_;
    Direction direction_;
    ObjectInfo info_;
    Envelope envelope_;
    std::shared_ptr<const ObjectBuffer> message_;
    // What the quarantine keeps if the message is blocked (host_.quarantining()).
    std::shared_ptr<const QuarantineSource> original_;
    std::map<uint64_t, std::optional<size_t>> scans_;  // id -> part index (nullopt: whole)
    std::optional<ScanVerdict> whole_;                 // the whole message's verdict
    std::optional<uint64_t> spam_id_;                  // the spam engine's pending check
    std::optional<ScanVerdict> engine_;                // the spam engine's verdict
    bool spam_asked_ = false;
    std::string event_id_;
    std::vector<Part> parts_;
    std::set<size_t> infected_parts_;
    std::vector<std::string> part_detections_;
    Outcome outcome_;
};

}  // namespace nfqscan::mail
