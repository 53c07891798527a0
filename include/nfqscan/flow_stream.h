// FlowStream: the stream engine for both directions of one TCP flow, between
// the queue and the inspectors. It learns the handshake (initial sequence
// numbers, MSS), feeds each direction's segments through its
// StreamDirection, translates every acknowledgement and SACK block the other
// way, and says for each queued packet what to do with it: accept as is,
// accept rewritten, hold (no verdict yet), or drop. Held packets are answered
// later, in the verdict list of the packet that filled the gap.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "nfqscan/flow.h"
#include "nfqscan/tcp_packet.h"
#include "nfqscan/tcp_stream.h"

namespace nfqscan {

struct PacketVerdict {
    // Inject: a new packet (no queue id) carrying output that did not fit
    // into the packet before it; sent after that packet's verdict.
    enum class Kind : uint8_t { Accept, Replace, Hold, Drop, Inject };
    uint32_t id = 0;
    Kind kind = Kind::Accept;
    std::vector<uint8_t> packet;  // for Replace and Inject
};

struct FlowStreamCounters {
    uint64_t rewritten_packets = 0;
    uint64_t injected_packets = 0;
    uint64_t sack_acks = 0;  // ACKs with SACK blocks sent to a sender for held data
};

class FlowStream {
  public:
    // `transforms[d]` inspects direction d (ClientToServer, ServerToClient);
    // nullptr passes that direction through the engine unchanged.
    FlowStream(std::array<StreamTransform*, 2> transforms, StreamLimits limits);

    // One queued packet of the flow. Appends its verdict and those of held
    // packets it releases.
    void on_packet(uint32_t id, Direction d, const DecodedPacket& p, bool gso,
                   std::vector<PacketVerdict>& out);

    // Ids of packets still held (to drop when the flow ends).
    std::vector<uint32_t> held_ids() const;
    size_t held_count() const { return held_.size(); }

    const StreamDirection& direction(Direction d) const { return *directions_[size_t(d)]; }
    size_t memory_bytes() const;
    const FlowStreamCounters& counters() const { return counters_; }

  private:
    struct HeldPacket {
        SegmentHeaders headers;
        size_t room;
    };
    // `room`: the payload one packet of this direction may carry.
    void answer(uint32_t id, Direction d, const SegmentHeaders& headers, const SegmentVerdict& v,
                std::span<const uint8_t> original_payload, size_t room, bool must_replace,
                std::vector<PacketVerdict>& out);
    std::optional<uint32_t> translated_ack(Direction d, uint32_t ack);
    void sack_held_data(Direction d, std::vector<PacketVerdict>& out);

    class Passthrough : public StreamTransform {
      public:
        void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
            sink.pass(pending.size());
        }
    };

    Passthrough passthrough_;
    std::array<std::unique_ptr<StreamDirection>, 2> directions_;
    std::array<uint16_t, 2> mss_{0, 0};  // largest segment the receiver of direction d takes
    std::unordered_map<uint32_t, HeldPacket> held_;
    // The latest headers of each direction: the template for segments
    // nfqscand sends on that side's behalf (a SACK for held data).
    std::array<std::optional<SegmentHeaders>, 2> last_headers_;
    FlowStreamCounters counters_;
};

}  // namespace nfqscan
