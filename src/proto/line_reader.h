// Lines of the line-based protocols (POP3, IMAP): where the line that starts
// at a given input offset ends, found in a direction's pending bytes and
// bounded. The engine shows an inspector every unmapped byte again on each
// call; the reader remembers how far it looked, so a line that arrives a
// byte at a time is still searched once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>

namespace nfqscan {

class LineReader {
  public:
    enum class Status : uint8_t {
        Line,      // *end is the input offset after the line's LF
        NeedMore,  // no LF yet, and fewer than max bytes
        TooLong,   // max bytes without an LF
    };

    explicit LineReader(size_t max) : max_(max) {}

    // The line starting at input offset `begin`, in `pending` (input offset
    // `offset` onwards; begin >= offset).
    Status find(uint64_t offset, std::span<const uint8_t> pending, uint64_t begin, uint64_t* end) {
        if (begin != begin_ || scanned_ < begin) {
            begin_ = begin;
            scanned_ = begin;
            line_end_ = 0;
        }
        if (line_end_) {  // asked again for a line found before
            *end = line_end_;
            return Status::Line;
        }
        uint64_t stop = std::min<uint64_t>(offset + pending.size(), begin + max_);
        if (scanned_ < stop) {
            const uint8_t* from = pending.data() + (scanned_ - offset);
            const void* lf = std::memchr(from, '\n', size_t(stop - scanned_));
            if (lf) {
                *end = scanned_ + uint64_t(static_cast<const uint8_t*>(lf) - from) + 1;
                scanned_ = line_end_ = *end;
                return Status::Line;
            }
            scanned_ = stop;
        }
        return stop - begin >= max_ ? Status::TooLong : Status::NeedMore;
    }
    size_t max() const { return max_; }

  private:
    size_t max_;
    uint64_t begin_ = 0;
    uint64_t scanned_ = 0;
    uint64_t line_end_ = 0;  // of the line at begin_, once found
};

}  // namespace nfqscan
