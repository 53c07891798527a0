// A fuzz input read front to back as a little script: the targets decode
// their operations with it, and make_corpus.py writes seeds in the same
// layout. Reading past the end yields zeros (and exhausted() turns true), so
// every input is a valid script and a short one simply ends early.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace nfqscan::fuzz {

class FuzzInput {
  public:
    FuzzInput(const uint8_t* data, size_t size) : bytes_(data, size) {}

    bool exhausted() const { return at_ >= bytes_.size(); }
    size_t remaining() const { return exhausted() ? 0 : bytes_.size() - at_; }

    uint8_t u8() { return exhausted() ? 0 : bytes_[at_++]; }
    uint16_t u16() {  // big-endian, as the generator writes it
        uint16_t hi = u8();
        return uint16_t(hi << 8 | u8());
    }
    uint32_t u32() {
        uint32_t hi = u16();
        return hi << 16 | u16();
    }
    // Up to `n` bytes (fewer at the end of the input).
    std::span<const uint8_t> bytes(size_t n) {
        if (n > remaining()) n = remaining();
        std::span<const uint8_t> b = bytes_.subspan(at_, n);
        at_ += n;
        return b;
    }
    std::span<const uint8_t> rest() { return bytes(remaining()); }

  private:
    std::span<const uint8_t> bytes_;
    size_t at_ = 0;
};

inline std::string_view as_text(std::span<const uint8_t> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace nfqscan::fuzz
