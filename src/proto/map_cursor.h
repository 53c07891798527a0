// The input bytes of one on_bytes() call and how far they are mapped: the
// sink takes lengths, inspectors think in input offsets.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>

#include "nfqscan/tcp_stream.h"

namespace nfqscan {

struct MapCursor {
    uint64_t offset;  // input offset of pending[0]
    std::span<const uint8_t> pending;
    StreamSink& sink;
    uint64_t at;  // input offset mapped up to

    uint64_t end() const { return offset + pending.size(); }
    std::span<const uint8_t> from(uint64_t o) const { return pending.subspan(size_t(o - offset)); }
    std::span<const uint8_t> range(uint64_t a, uint64_t b) const {
        return pending.subspan(size_t(a - offset), size_t(b - a));
    }
    void pass_to(uint64_t o) {
        if (o > at) sink.pass(size_t(o - at));
        at = std::max(at, o);
    }
    // The input up to `o` becomes `bytes` (an insertion when o == at).
    void replace_to(uint64_t o, std::string_view bytes) {
        sink.replace(size_t(o - std::min(o, at)),
                     {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
        at = std::max(at, o);
    }
};

}  // namespace nfqscan
