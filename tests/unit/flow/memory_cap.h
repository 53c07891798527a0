// The owner of the stream engine's memory cap in unit tests, kept as the
// worker keeps it (src/daemon/worker.cc, settle()): after each call into the
// engine, the room is the share minus what the streams hold. Records the
// most they ever held, to assert the cap against.
#pragma once

#include <algorithm>
#include <cstdint>

#include "nfqscan/tcp_stream.h"

namespace nfqscan::test {

struct MemoryCap {
    explicit MemoryCap(uint64_t share) : share(share), room(int64_t(share)) {}
    StreamLimits limits(StreamLimits l = {}) {
        l.memory_room = &room;
        return l;
    }
    void settle(size_t memory) {
        most = std::max<uint64_t>(most, memory);
        room = int64_t(share) - int64_t(memory);
    }
    uint64_t share;
    int64_t room;
    uint64_t most = 0;
};

}  // namespace nfqscan::test
