// What the mail inspectors (SMTP, POP3, IMAP) share: the dot-stuffed
// transfer form of a message (RFC 5321 4.5.2, RFC 1939 3) and the rewrites a
// blocked message gets, done with GMime (no MIME parsing of our own):
//
//   - replace: the original header kept, the body a text/plain notice;
//   - strip: only some leaf parts replaced by a short text part each, every
//     other part written back from its original bytes;
//   - tag: the Subject prefixed (encoded words stay valid).
//
// Everything here is bounded by its input: a message is at most
// max_content_size bytes (the inspectors check that before they call in),
// and the part walk stops at kMaxParts parts and kMaxDepth levels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nfqscan::mail {

// Turns a dot-stuffed multi-line data block into the message it carries,
// incrementally, and finds its end: the line "." (CRLF.CRLF, where the first
// CRLF belongs to the message). The block starts at a line start.
//
// A "." line ended by a bare LF, or a bare LF before a "." line, is refused
// (error()): servers differ on whether it ends the data (SMTP smuggling), so
// an inline scanner that guesses lets a second message past its scan.
class DotDecoder {
  public:
    // Output: runs of message bytes, in order.
    using Output = std::function<void(std::span<const uint8_t>)>;

    // Consumes bytes up to and including the terminator; returns how many
    // were consumed (all of `in` unless the terminator or an error is in it).
    size_t feed(std::span<const uint8_t> in, const Output& out);
    bool done() const { return state_ == State::Done; }
    bool failed() const { return state_ == State::Failed; }
    const char* error() const { return error_; }
    void reset() { *this = DotDecoder(); }

  private:
    enum class State : uint8_t {
        LineStart,  // after CRLF (or at the start)
        Dot,        // "." at a line start
        DotCr,      // ".\r" at a line start
        InLine,
        Cr,         // "\r" inside a line
        BareStart,  // after a bare LF
        Done,
        Failed,
    };
    State state_ = State::LineStart;
    const char* error_ = "";
};

// `message` in transfer form: lines starting with "." get one more, line
// ends become CRLF, a CRLF is added when the last line has none, and the
// terminating ".\r\n" follows.
std::string dot_stuff(std::string_view message);

// Header facts of a message, decoded to UTF-8 (empty when absent).
struct Summary {
    std::string subject;
    std::string from;
    std::string to;
    std::string message_id;
    // Whom a notification about the message goes to, "<local@domain>": the
    // Return-Path (the envelope sender the delivering MTA recorded), else
    // the first mailbox of From. "<>" when the Return-Path is empty or has
    // no address (a bounce: never answered), "" when neither header is there.
    std::string reply_address;
    bool parsed = false;  // GMime could read a header at all
};
Summary summarize(std::span<const uint8_t> message);

using Headers = std::vector<std::pair<std::string, std::string>>;

// The message with its body replaced by `notice` (text/plain, UTF-8): the
// original header is kept except the MIME fields of the old body, and
// `extra` headers (X-Nfqscan-*) are added. A message GMime cannot parse
// becomes a new one with the notice and the `extra` headers only. CRLF line
// ends.
std::string replace_body(std::span<const uint8_t> message, std::string_view notice,
                         const Headers& extra);

// The message with `tag` and a space before its Subject (or a Subject of
// just the tag), and `extra` headers added; an empty tag leaves the Subject
// as it is. Everything else is written back as GMime read it.
std::string tag_subject(std::span<const uint8_t> message, std::string_view tag,
                        const Headers& extra);

// A leaf part of a message (attachments, text bodies; message/rfc822 parts
// are walked into), its content decoded from its transfer encoding.
struct Part {
    size_t index = 0;  // in walk order, what strip() takes
    std::string file_name;
    std::string mime_type;  // "application/zip"
    std::vector<uint8_t> content;
};
inline constexpr size_t kMaxParts = 256;
inline constexpr size_t kMaxDepth = 16;
// The leaf parts; empty when the message cannot be parsed. At most
// kMaxParts (the rest are not listed: `complete` says whether all were).
std::vector<Part> parts(std::span<const uint8_t> message, bool* complete = nullptr);

// The message with the parts of `remove` (Part::index) each replaced by a
// text/plain part saying `text(part)`, and `extra` headers added.
std::string strip(std::span<const uint8_t> message, const std::set<size_t>& remove,
                  const std::function<std::string(const Part&)>& text, const Headers& extra);

}  // namespace nfqscan::mail
