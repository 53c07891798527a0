// Policy (DESIGN.md "The inspector layer"): what happens to an object once
// its verdict is known, per protocol. A verdict (clean, infected with a
// category, or a scan error) and the protocol's [protocols.<name>] table give
// an Action; the messages the peers see instead of a blocked object come from
// the templates in rules/messages/.
//
// Nothing is passed unscanned silently: every reason an object was not judged
// by the engines is a Category with a configured fallback (pass or block), a
// counter and an event.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/scan.h"

namespace nfqscan {

// Why an object was not judged clean or infected. The first eight are the
// scan service's ScanError, in the same order; the last two come from the
// inspectors: a partial object (HTTP Range) and bytes that break the
// protocol's framing on a flow already being parsed.
enum class Category : uint8_t {
    ContentSize,
    DecompressLayer,
    Timeout,
    Encrypted,
    Corrupt,
    EngineNotReady,
    OutOfResource,
    TooManyRequests,
    Partial,
    ProtocolError,
};
inline constexpr size_t kCategoryCount = 10;

std::string_view category_name(Category c);  // "content-size", ..., "partial", "protocol-error"
std::optional<Category> category_from_name(std::string_view name);
Category category_of(ScanError e);

// What the policy decides for one object.
enum class Action : uint8_t {
    Pass,   // deliver it (and log when it was not clean)
    Block,  // the protocol's block action (HTTP: block page / reset)
};
std::string_view action_name(Action a);  // "pass" | "block"
std::optional<Action> action_from_name(std::string_view name);

// What "block" means for a mail message (SMTP, POP3, IMAP): the value of
// on_virus / on_policy other than "pass". A fallback that blocks acts as
// on_virus does, with the error in the notice.
enum class MailBlock : uint8_t {
    Replace,  // original headers + X-Nfqscan-*; the body becomes the notice
    Strip,    // only the infected MIME parts become a short text part
    Reject,   // SMTP only: 550 5.7.1 to the client, the server gets nothing
    Drop,     // SMTP only: 250 to the client, the server gets nothing
};
std::string_view mail_block_name(MailBlock b);  // "replace", "strip", "reject", "drop"

// on_spam of a mail protocol (issue 11): what a message found to be spam
// becomes. POP3 and IMAP only accept or tag (their clients already count
// the messages they fetch); SMTP also rejects, drops or forwards.
enum class SpamAction : uint8_t {
    Accept,   // delivered as sent, logged
    Tag,      // Subject prefixed ([spam] tag), X-Spam-Flag / X-Spam-Score / X-Spam-Report added
    Reject,   // SMTP: 550 5.7.1 at the end of DATA, nothing delivered
    Drop,     // SMTP: 250 at the end of DATA, nothing delivered
    Forward,  // SMTP: delivered to spam_forward_to only, the original recipients in a header
};
std::string_view spam_action_name(SpamAction a);  // "accept", "tag", "reject", "drop", "forward"
std::optional<SpamAction> spam_action_from_name(std::string_view name);

// STARTTLS (SMTP), STLS (POP3), STARTTLS (IMAP).
enum class StartTls : uint8_t {
    Allow,  // the flow is released once TLS starts (counted: tls)
    Strip,  // not offered to the client; asked anyway: refused (454 / -ERR / NO)
    Block,  // as strip, and a policy event when a client asks
};

// [protocols.<name>]: the scanning policy of one protocol.
struct ProtocolPolicy {
    bool scan = true;     // false: the protocol's flows are released unscanned
    std::string profile;  // scan profile ([scan.profiles]); "" = "default"
    Action on_virus = Action::Block;
    // YARA rules with category = "policy" are blocked like a virus unless
    // configured otherwise; category = "spam" passes here (mail: on_spam).
    Action on_policy = Action::Block;
    // By Category. Defaults: pass, except too-many-requests and
    // protocol-error (block): see default_fallbacks().
    std::array<Action, kCategoryCount> fallback = default_fallbacks();

    // HTTP only (the configuration refuses them under another protocol).
    // Exact host names (case-insensitive, a port ignored), or suffixes
    // starting with "." (".example.com": every name under example.com, not
    // example.com itself).
    std::vector<std::string> allow_hosts;
    // URL prefixes ("http://host/path"): scheme and host compare without
    // case and whole (a default port ignored), the path by prefix.
    std::vector<std::string> allow_urls;
    // A connection whose request names an allow_hosts host leaves the
    // engine (release reason "allowlisted") once nothing is held or
    // pipelined after that request; false: each allowlisted body is passed
    // in the engine, the connection stays inspected.
    bool allowlist_release = true;
    uint32_t trickle_after_s = 0;  // 0: no trickling

    // Mail protocols only (smtp, pop3, imap).
    MailBlock mail_on_virus = MailBlock::Replace;
    MailBlock mail_on_policy = MailBlock::Replace;
    StartTls starttls = StartTls::Allow;
    bool notify_sender_on_virus = false;
    bool notify_sender_on_error_drop = false;
    bool notify_recipient_on_error_pass = false;     // Subject tag ([notify] error_pass_tag)
    std::string error_pass_tag = "***UNCHECKED***";  // [notify] error_pass_tag, copied here
    // Spam (issue 11): on_spam and, copied from [spam], whether an engine is
    // asked and the Subject tag.
    SpamAction on_spam = SpamAction::Tag;
    std::string spam_forward_to;  // SMTP, on_spam = "forward": "<spam@example.com>"
    bool spam_engine = false;     // [spam] engine is not "none"
    std::string spam_tag = "[SPAM]";
    // How the mail protocol blocks the object of `verdict` (decide() said Block).
    MailBlock mail_block_for(const ScanVerdict& verdict) const;

    static std::array<Action, kCategoryCount> default_fallbacks();
    Action fallback_for(Category c) const { return fallback[size_t(c)]; }
    // The action for a verdict: clean -> pass; infected -> on_virus /
    // on_policy (spam: pass); error -> the fallback of its category.
    Action decide(const ScanVerdict& verdict) const;
    // Whether a request for `url` on `host` is not scanned (allowlist).
    // `host` as in a Host header ("Example.com:8080", "[::1]:80"), `url`
    // absolute ("http://example.com:8080/path?q"); either may be empty.
    bool allowlisted(std::string_view host, std::string_view url) const;
    // Whether `host` (as in a Host header) is on allow_hosts: the part of
    // allowlisted() that holds for a whole connection.
    bool host_allowlisted(std::string_view host) const;
};

// What a message template can say ({{name}} placeholders).
struct MessageFields {
    std::string detection;  // signature name, or the error category
    std::string category;   // "virus", "policy", "spam", or an error category
    std::string object;     // URL or file name
    std::string protocol;
    std::string client, server;  // "address:port"
    std::string time;            // ISO 8601, UTC
    std::string host;            // the scanner's host name
    std::string event_id;        // matches the event log line's "id"
    std::string action;
    std::string sender;      // mail: the envelope sender (MAIL FROM), or the From header
    std::string recipients;  // mail: the envelope recipients (RCPT TO), comma separated
};

// The message templates of a folder (rules/messages/): each file NAME.html
// or NAME.txt is template NAME. Loaded with the configuration, so a broken
// template (an unknown placeholder, an unclosed one, an unreadable file) is a
// configuration error naming the file and line.
//
// A placeholder is {{name}} (white space inside the braces allowed) on one
// line; there is no escape for a literal "{{". Values are HTML-escaped
// (& < > " ') in .html templates and inserted as they are in .txt ones; in
// both, control characters in a value become '?' (a tab a space), so a value
// from the traffic cannot add lines to a message.
class MessageTemplates {
  public:
    // Throws ConfigError (file, line, placeholder) on a broken template, or
    // when a template the protocols need (kRequired) is missing.
    static std::shared_ptr<const MessageTemplates> load(const std::string& dir);
    // Built-in texts (a test or a missing folder in a unit test).
    static std::shared_ptr<const MessageTemplates> builtin();

    static constexpr std::array<std::string_view, 2> kRequired = {"http-block",
                                                                  "mail-virus-notice"};
    static constexpr size_t kMaxTemplateSize = 64 << 10;
    static constexpr std::array<std::string_view, 12> kPlaceholders = {
        "detection", "category", "object",   "protocol", "client", "server",
        "time",      "host",     "event_id", "action",   "sender", "recipients"};

    bool has(std::string_view name) const;
    bool is_html(std::string_view name) const;  // NAME.html (text/html), not NAME.txt
    std::vector<std::string> names() const;     // sorted
    // The template filled in; values are HTML-escaped in .html templates.
    // Throws std::out_of_range for a name that has() denies.
    std::string render(std::string_view name, const MessageFields& fields) const;

  private:
    struct Piece {
        std::string text;  // literal text, or (placeholder) the field name
        bool placeholder = false;
    };
    struct Template {
        bool html = false;
        std::vector<Piece> pieces;
    };
    // Parses `text` as template `name`; `file` names it in errors.
    void add(const std::string& name, std::string_view text, const std::string& file, bool html);

    std::map<std::string, Template, std::less<>> templates_;
};

std::string html_escape(std::string_view text);

}  // namespace nfqscan
