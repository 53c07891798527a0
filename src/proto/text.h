// Small text helpers of the line-based inspectors (POP3, IMAP): views of
// wire bytes as text, and back.
#pragma once

#include <cctype>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace nfqscan::text {

inline std::string_view of(std::span<const uint8_t> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}
inline std::span<const uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The line without its line end (CRLF or LF).
inline std::string_view chomp(std::string_view line) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
}

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

inline std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = char(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

// Whether `text` (a prefix of what will come) may still start with one of
// `words`.
inline bool may_start_with(std::string_view text, std::initializer_list<std::string_view> words) {
    for (std::string_view word : words) {
        size_t n = std::min(text.size(), word.size());
        if (text.compare(0, n, word.substr(0, n)) == 0) return true;
    }
    return false;
}

// Length of a message's header, through the empty line that ends it (npos:
// not complete in `bytes`). Dot-stuffing leaves empty lines alone, so this
// finds the same line in a POP3 transfer form and in the message.
inline size_t header_length(std::string_view bytes) {
    size_t line = 0;
    while (line < bytes.size()) {
        size_t lf = bytes.find('\n', line);
        if (lf == std::string_view::npos) return std::string_view::npos;
        if (chomp(bytes.substr(line, lf + 1 - line)).empty()) return lf + 1;
        line = lf + 1;
    }
    return std::string_view::npos;
}

}  // namespace nfqscan::text
