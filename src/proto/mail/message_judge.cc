// MessageJudge: verdicts -> what a mail message becomes (message_judge.h).
#include "message_judge.h"

#include <algorithm>
#include <cstdio>

#include "../text.h"

namespace nfqscan::mail {

namespace {

std::string detection_of(const ScanVerdict& v) {
    return v.is_infected() ? v.detection.signature
                           : std::string(category_name(category_of(v.error)));
}

std::string category_of_verdict(const ScanVerdict& v) {
    return v.is_infected() ? std::string(threat_category_name(v.detection.category))
                           : std::string(category_name(category_of(v.error)));
}

}  // namespace

Envelope envelope_from_header(std::span<const uint8_t> message) {
    size_t header = text::header_length(text::of(message));
    Summary s = summarize(message.first(std::min(header, message.size())));
    return {s.from, s.to, s.reply_address};
}

MessageJudge::MessageJudge(InspectorHost& host, Service protocol, Direction direction)
    : host_(host), protocol_(protocol), direction_(direction) {}

void MessageJudge::submit(uint64_t& next_id, ObjectInfo info, std::shared_ptr<ObjectBuffer> message,
                          Envelope envelope) {
    info_ = std::move(info);
    envelope_ = std::move(envelope);
    message_ = message;
    scans_.clear();
    whole_.reset();
    spam_id_.reset();
    engine_.reset();
    spam_asked_ = false;
    parts_.clear();
    infected_parts_.clear();
    part_detections_.clear();
    outcome_ = {};
    original_.reset();
    if (host_.quarantining()) {
        auto source = std::make_shared<QuarantineSource>();
        source->bytes = message;
        source->sender = envelope_.sender;
        source->recipients = split_recipients(envelope_.recipients);
        std::span<const uint8_t> bytes = message->bytes();
        size_t header = text::header_length(text::of(bytes));
        source->subject = summarize(bytes.first(std::min(header, bytes.size()))).subject;
        original_ = std::move(source);
    }
    uint64_t id = next_id++;
    scans_[id] = std::nullopt;
    host_.scan(id, info_, std::move(message));
}

bool MessageJudge::on_verdict(uint64_t scan_id, const ScanVerdict& verdict, uint64_t& next_id) {
    auto it = scans_.find(scan_id);
    if (it == scans_.end()) return false;
    std::optional<size_t> part = it->second;
    scans_.erase(it);
    if (spam_id_ == scan_id) {
        spam_id_.reset();
        engine_ = verdict;
    } else if (!part) {
        whole_ = verdict;
    } else if (verdict.is_infected()) {
        infected_parts_.insert(*part);
        part_detections_.push_back(verdict.detection.signature);
    }
    if (!scans_.empty()) return false;
    decide(next_id);
    return scans_.empty();
}

void MessageJudge::decide(uint64_t& next_id) {
    const ProtocolPolicy& policy = host_.policy();
    const ScanVerdict& v = *whole_;
    std::span<const uint8_t> message = message_->bytes();
    // Spam is about mail on its way to a reader: SMTP, and what POP3 and
    // IMAP readers fetch, not what an IMAP client uploads itself (APPEND).
    const bool spam_applies = protocol_ == Service::Smtp || direction_ == Direction::ServerToClient;
    if (spam_applies &&
        (v.is_clean() || (v.is_infected() && v.detection.category == ThreatCategory::Spam))) {
        if (ask_spam_engine(next_id)) return;  // decide() again with its verdict
        decide_spam();
        return;
    }
    if (policy.decide(v) == Action::Pass) {
        outcome_ = {};
        original_.reset();
        if (v.is_clean()) {
            message_.reset();
            return;
        }
        outcome_.action = "pass";
        outcome_.error = v.is_error();
        event_id_ = host_.record(info_, v, "pass");
        if (v.is_error() && policy.notify_recipient_on_error_pass) {
            outcome_.kind = Outcome::Kind::Rewrite;
            outcome_.message = tag_subject(message, policy.error_pass_tag,
                                           extra_headers(detection_of(v), true, "pass", event_id_));
        }
        message_.reset();
        return;
    }
    MailBlock how = policy.mail_block_for(v);
    bool want_parts = v.is_infected() && (how == MailBlock::Replace || how == MailBlock::Strip);
    if (want_parts && parts_.empty() && infected_parts_.empty()) {
        // Which parts are infected: each leaf part scanned on its own (only
        // for messages already found infected, so clean mail pays nothing).
        parts_ = parts(message);
        if (parts_.size() > 1) {
            for (const Part& p : parts_) {
                auto buffer = ObjectBuffer::make(host_.limits().max_content_size);
                if (buffer->append(p.content) != ObjectBuffer::Append::Ok) continue;
                ObjectInfo part_info = info_;
                part_info.file_name = p.file_name;
                part_info.mime_type = p.mime_type;
                part_info.declared_size = p.content.size();
                uint64_t id = next_id++;
                scans_[id] = p.index;
                host_.scan(id, part_info, std::move(buffer));
            }
            if (!scans_.empty()) return;  // decide() again once they are in
        }
    }
    std::string action(mail_block_name(how));
    if (how == MailBlock::Strip && infected_parts_.empty()) action = "replace";
    event_id_ = host_.record(kept_info(), v, action);
    finish_blocked(how, v, event_id_, message);
    if (v.is_infected() ? policy.notify_sender_on_virus : policy.notify_sender_on_error_drop)
        notify_sender(detection_of(v), category_of_verdict(v), message);
    message_.reset();
}

ObjectInfo MessageJudge::kept_info() {
    ObjectInfo info = info_;
    info.original = std::move(original_);
    return info;
}

void MessageJudge::finish_blocked(MailBlock how, const ScanVerdict& v, const std::string& event_id,
                                  std::span<const uint8_t> message) {
    outcome_ = {};
    outcome_.blocked = true;
    outcome_.error = v.is_error();
    const std::string detection = detection_of(v);
    const std::string category = category_of_verdict(v);
    outcome_.reply_text = detection + " found (event " + event_id + ")";
    if (v.is_error())
        outcome_.reply_text = "not checked: " + detection + " (event " + event_id + ")";
    switch (how) {
        case MailBlock::Reject:
            outcome_.kind = Outcome::Kind::Reject;
            outcome_.action = "reject";
            return;
        case MailBlock::Drop:
            outcome_.kind = Outcome::Kind::Drop;
            outcome_.action = "drop";
            return;
        case MailBlock::Strip:
            if (!infected_parts_.empty()) {
                outcome_.kind = Outcome::Kind::Rewrite;
                outcome_.action = "strip";
                outcome_.message = strip(
                    message, infected_parts_,
                    [&](const Part& p) {
                        std::string name = p.file_name.empty() ? info_.name : p.file_name;
                        return notice(detection, category, name, "strip", event_id);
                    },
                    extra_headers(detection, v.is_error(), "strip", event_id));
                return;
            }
            [[fallthrough]];  // nothing to strip on its own: the whole body goes
        case MailBlock::Replace: {
            std::string object = info_.name;
            std::string names;
            for (size_t i : infected_parts_)
                if (i < parts_.size() && !parts_[i].file_name.empty())
                    names += (names.empty() ? "" : ", ") + parts_[i].file_name;
            if (!names.empty()) object = names;
            outcome_.kind = Outcome::Kind::Rewrite;
            outcome_.action = "replace";
            outcome_.message =
                replace_body(message, notice(detection, category, object, "replace", event_id),
                             extra_headers(detection, v.is_error(), "replace", event_id));
            return;
        }
    }
}

bool MessageJudge::ask_spam_engine(uint64_t& next_id) {
    if (spam_asked_ || !host_.policy().spam_engine) return false;
    spam_asked_ = true;
    SpamQuery q;
    q.message = message_;
    q.from = envelope_.sender;
    // "<a@b>, <c@d>" -> one Rcpt header each
    std::string_view rest = envelope_.recipients;
    while (!rest.empty()) {
        size_t comma = rest.find(", ");
        std::string_view one = rest.substr(0, comma);
        if (!one.empty()) q.rcpts.emplace_back(one);
        rest.remove_prefix(comma == std::string_view::npos ? rest.size() : comma + 2);
    }
    q.helo = envelope_.helo;
    q.queue_id = info_.name.substr(0, 200);
    const uint64_t id = next_id++;
    if (!host_.check_spam(id, std::move(q))) return false;
    spam_id_ = id;
    scans_[id] = std::nullopt;
    return true;
}

void MessageJudge::decide_spam() {
    const ProtocolPolicy& policy = host_.policy();
    std::optional<ScanVerdict> spam;
    if (whole_->is_infected()) spam = *whole_;  // a YARA spam rule
    if (engine_ && engine_->is_infected()) {
        if (spam)
            spam->detection.score = engine_->detection.score;  // the rule named it; the score too
        else
            spam = *engine_;
    } else if (engine_ && engine_->is_error() && !spam) {
        const Category category = category_of(engine_->error);
        if (policy.fallback_for(category) == Action::Pass) {
            outcome_ = {};
            outcome_.action = "pass";
            outcome_.error = true;
            event_id_ = host_.record_fallback(info_, category, engine_->reason, "pass");
            message_.reset();
            original_.reset();
            return;
        }
        // The fallback blocks: a message the engine could not judge is
        // handled as spam.
        Detection d;
        d.engine = ScanEngineKind::Rspamd;
        d.category = ThreatCategory::Spam;
        d.signature = "rspamd: " + std::string(category_name(category)) + " (fallback block)";
        spam = ScanVerdict::infected(std::move(d));
    }
    outcome_ = {};
    if (!spam) {
        message_.reset();
        original_.reset();
        return;
    }
    SpamAction how = policy.on_spam;
    // The configuration refuses the rest for POP3 and IMAP.
    if (protocol_ != Service::Smtp && how != SpamAction::Accept) how = SpamAction::Tag;
    outcome_.action = std::string(spam_action_name(how));
    event_id_ = host_.record(spam_record_info(how), *spam, outcome_.action);
    std::span<const uint8_t> message = message_->bytes();
    const std::string detection = spam->detection.signature;
    switch (how) {
        case SpamAction::Accept:
            outcome_.kind = Outcome::Kind::Deliver;
            break;
        case SpamAction::Tag:
            outcome_.kind = Outcome::Kind::Rewrite;
            outcome_.message = tag_subject(message, policy.spam_tag, spam_headers(*spam));
            break;
        case SpamAction::Reject:
        case SpamAction::Drop:
            outcome_.kind = how == SpamAction::Reject ? Outcome::Kind::Reject : Outcome::Kind::Drop;
            outcome_.blocked = true;
            outcome_.reply_text = "spam: " + detection + " (event " + event_id_ + ")";
            break;
        case SpamAction::Forward: {
            outcome_.kind = Outcome::Kind::Forward;
            outcome_.blocked = true;
            outcome_.forward_to = policy.spam_forward_to;
            Headers headers = spam_headers(*spam);
            headers.emplace_back("X-Nfqscan-Original-Recipients", envelope_.recipients);
            outcome_.message = tag_subject(message, "", headers);
            break;
        }
    }
    message_.reset();
    original_.reset();
}

ObjectInfo MessageJudge::spam_record_info(SpamAction how) {
    // Rejected and dropped spam reaches no receiver: kept like a blocked
    // virus. Accepted, tagged and forwarded spam is delivered: not kept.
    if (how == SpamAction::Reject || how == SpamAction::Drop) return kept_info();
    original_.reset();
    return info_;
}

Headers MessageJudge::spam_headers(const ScanVerdict& spam) const {
    const Detection& d = spam.detection;
    char score[32] = "";
    if (d.score) std::snprintf(score, sizeof score, "%.2f", *d.score);
    // "yara: Rule_Name"; rspamd's signature names the engine already.
    std::string report = d.engine == ScanEngineKind::Rspamd
                             ? d.signature
                             : std::string(scan_engine_name(d.engine)) + ": " + d.signature;
    // rspamd's layer is its top symbols (a rule's is where it matched).
    if (d.engine == ScanEngineKind::Rspamd && !d.layer_path.empty()) report += "; " + d.layer_path;
    Headers h = {{"X-Spam-Flag", "YES"}};
    if (d.score) h.emplace_back("X-Spam-Score", score);
    h.emplace_back("X-Spam-Report", report);
    h.emplace_back("X-Nfqscan-Event", event_id_);
    return h;
}

Outcome MessageJudge::fallback(ObjectInfo info, Category category, std::string_view reason,
                               std::span<const uint8_t> head, Envelope envelope) {
    info_ = std::move(info);
    envelope_ = std::move(envelope);
    const ProtocolPolicy& policy = host_.policy();
    if (policy.fallback_for(category) == Action::Pass) {
        outcome_ = {};
        outcome_.action = "pass";
        outcome_.error = true;
        event_id_ = host_.record_fallback(info_, category, reason, "pass");
        if (policy.notify_recipient_on_error_pass && !head.empty()) {
            outcome_.kind = Outcome::Kind::Rewrite;
            outcome_.message = tag_subject(
                head, policy.error_pass_tag,
                extra_headers(std::string(category_name(category)), true, "pass", event_id_));
        }
        return outcome_;
    }
    MailBlock how = policy.mail_on_virus;
    if (how == MailBlock::Strip) how = MailBlock::Replace;  // no part to name
    event_id_ = host_.record_fallback(info_, category, reason, mail_block_name(how));
    // The notice names the category: a verdict that carries it.
    outcome_ = {};
    outcome_.blocked = outcome_.error = true;
    const std::string name(category_name(category));
    outcome_.reply_text = "not checked: " + name + " (event " + event_id_ + ")";
    switch (how) {
        case MailBlock::Reject:
            outcome_.kind = Outcome::Kind::Reject;
            outcome_.action = "reject";
            break;
        case MailBlock::Drop:
            outcome_.kind = Outcome::Kind::Drop;
            outcome_.action = "drop";
            break;
        default:
            outcome_.kind = Outcome::Kind::Rewrite;
            outcome_.action = "replace";
            outcome_.message =
                replace_body(head, notice(name, name, info_.name, "replace", event_id_),
                             extra_headers(name, true, "replace", event_id_));
    }
    if (policy.notify_sender_on_error_drop) notify_sender(name, name, head);
    return outcome_;
}

void MessageJudge::notify_sender(const std::string& detection, const std::string& category,
                                 std::span<const uint8_t> message) {
    // The header block as received (up to the blank line), bounded.
    std::string_view text(reinterpret_cast<const char*>(message.data()),
                          std::min<size_t>(message.size(), kNotifiedHeaderMax));
    size_t blank = text.find("\r\n\r\n");
    if (blank == std::string_view::npos) blank = text.find("\n\n");
    Notification n;
    // "<a@b>" as MAIL FROM or the header gave it; "<>" stays: the notifier
    // never answers it.
    n.recipient = envelope_.reply_to.empty() ? envelope_.sender : envelope_.reply_to;
    if (n.recipient.size() > 2 && n.recipient.front() == '<' && n.recipient.back() == '>')
        n.recipient = n.recipient.substr(1, n.recipient.size() - 2);
    n.subject = "Your message was not delivered as sent: " + detection;
    n.text = "Your message to " + envelope_.recipients +
             " was not delivered as you sent it.\r\n\r\n" +
             notice(detection, category, info_.name, outcome_.action, event_id_);
    n.original_headers =
        std::string(text.substr(0, blank == std::string_view::npos ? text.size() : blank + 2));
    host_.notify(std::move(n));
}

std::string MessageJudge::notice(const std::string& detection, const std::string& category,
                                 const std::string& object, const std::string& action,
                                 const std::string& event_id) const {
    MessageFields f = host_.message_fields();
    f.detection = detection;
    f.category = category;
    f.object = object;
    f.action = action;
    f.event_id = event_id;
    f.sender = envelope_.sender;
    f.recipients = envelope_.recipients;
    return host_.render_message("mail-virus-notice", f);
}

Headers MessageJudge::extra_headers(const std::string& detection, bool error,
                                    const std::string& action, const std::string& event_id) const {
    return {{error ? "X-Nfqscan-Error" : "X-Nfqscan-Virus", detection},
            {"X-Nfqscan-Action", action},
            {"X-Nfqscan-Event", event_id}};
}

}  // namespace nfqscan::mail
