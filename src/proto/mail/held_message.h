// HeldMessage: one mail message a POP3 or IMAP direction holds until it is
// judged: the buffer it accumulates in, its MessageJudge, and whether the
// outcome is ready. POP3 (RETR/TOP), IMAP FETCH literals and IMAP APPEND
// uploads share this glue; SMTP has an envelope of its own (MAIL FROM,
// RCPT TO) and keeps its judge itself.
#pragma once

#include <cstdint>
#include <memory>

#include "message_judge.h"

namespace nfqscan::mail {

class HeldMessage {
  public:
    HeldMessage(InspectorHost& host, Service protocol, Direction direction)
        : host_(host), judge_(host, protocol, direction) {}

    // A new message: an empty buffer (up to max_content_size), no outcome.
    void start() {
        message_ = ObjectBuffer::make(host_.limits().max_content_size);
        ready_ = false;
    }
    // Where the message accumulates; null when none does (submitted, dropped).
    ObjectBuffer* buffer() const { return message_.get(); }
    void drop() { message_.reset(); }

    // What accumulated goes to the judge, with the envelope its header gives
    // (envelope_from_header: these protocols have none of their own).
    void submit(uint64_t& next_id, const ObjectInfo& info) {
        Envelope envelope = envelope_from_header(message_->bytes());
        judge_.submit(next_id, info, std::move(message_), std::move(envelope));
        message_.reset();
    }
    // A verdict of one of the judge's scans (false: not one of them).
    bool on_verdict(uint64_t id, const ScanVerdict& verdict, uint64_t& next_id) {
        if (!judge_.owns(id)) return false;
        if (judge_.on_verdict(id, verdict, next_id)) ready_ = true;
        return true;
    }
    bool ready() const { return ready_; }
    // The outcome, taken: the next message may start.
    const Outcome& take() {
        ready_ = false;
        return judge_.outcome();
    }
    // A message not scanned after all (MessageJudge::fallback).
    MessageJudge& judge() { return judge_; }
    size_t memory_bytes() const {
        return (message_ ? size_t(message_->memory_bytes()) : 0) + judge_.memory_bytes();
    }

  private:
    InspectorHost& host_;
    MessageJudge judge_;
    std::shared_ptr<ObjectBuffer> message_;
    bool ready_ = false;
};

}  // namespace nfqscan::mail
