// The dot-stuffed transfer form (RFC 5321 4.5.2): decoding in runs (no
// call per byte), encoding for the replacements nfqscand writes.
#include "mail.h"

namespace nfqscan::mail {

size_t DotDecoder::feed(std::span<const uint8_t> in, const Output& out) {
    // Bytes [run, i) are message bytes not handed out yet; a byte that is
    // not message (a stuffed dot, the terminator) flushes the run first.
    size_t run = 0;
    auto flush = [&](size_t end) {
        if (end > run) out(in.subspan(run, end - run));
    };
    auto fail = [&](size_t at, const char* why) {
        flush(at);
        state_ = State::Failed;
        error_ = why;
        return at;
    };
    for (size_t i = 0; i < in.size(); ++i) {
        const uint8_t c = in[i];
        switch (state_) {
            case State::LineStart:
                if (c == '.') {
                    flush(i);
                    run = i + 1;
                    state_ = State::Dot;
                } else {
                    state_ = c == '\r' ? State::Cr : c == '\n' ? State::BareStart : State::InLine;
                }
                break;
            case State::Dot:
                // The dot is gone; what follows it is message, except CRLF.
                if (c == '\r') {
                    run = i + 1;
                    state_ = State::DotCr;
                } else if (c == '\n') {
                    return fail(i, "a \".\" line ended by a bare LF");
                } else {
                    state_ = State::InLine;
                }
                break;
            case State::DotCr:
                if (c == '\n') {
                    state_ = State::Done;
                    return i + 1;
                }
                // ".\rX": the line was "\rX" before stuffing.
                out(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("\r"), 1));
                run = i;
                state_ = c == '\r' ? State::Cr : State::InLine;
                break;
            case State::InLine:
                if (c == '\r') state_ = State::Cr;
                if (c == '\n') state_ = State::BareStart;
                break;
            case State::Cr:
                state_ = c == '\n' ? State::LineStart : c == '\r' ? State::Cr : State::InLine;
                break;
            case State::BareStart:
                if (c == '.') return fail(i, "a \".\" line after a bare LF");
                state_ = c == '\r' ? State::Cr : c == '\n' ? State::BareStart : State::InLine;
                break;
            case State::Done:
            case State::Failed:
                return i;
        }
    }
    if (state_ != State::DotCr) flush(in.size());
    return in.size();
}

std::string dot_stuff(std::string_view message) {
    std::string out;
    out.reserve(message.size() + message.size() / 64 + 8);
    bool line_start = true;
    for (size_t i = 0; i < message.size(); ++i) {
        char c = message[i];
        if (line_start && c == '.') out += '.';
        line_start = false;
        if (c == '\n') {
            if (out.empty() || out.back() != '\r') out += '\r';
            out += '\n';
            line_start = true;
        } else if (c == '\r' && (i + 1 == message.size() || message[i + 1] != '\n')) {
            out += "\r\n";  // a bare CR ends a line too
            line_start = true;
        } else {
            out += c;
        }
    }
    if (!line_start) out += "\r\n";
    out += ".\r\n";
    return out;
}

}  // namespace nfqscan::mail
