// FlowStream: the stream engine for both directions of one TCP flow, between
// the queue and the inspectors. It learns the handshake (initial sequence
// numbers, MSS), feeds each direction's segments through its
// StreamDirection, translates every acknowledgement and SACK block the other
// way, and says for each queued packet what to do with it: accept as is,
// accept rewritten, hold (no verdict yet), or drop. Held packets are answered
// later, in the verdict list of the packet that filled the gap.
//
// A relayed direction (StreamDirection::relaying()) is delivered by
// nfqscand itself: the sender's segments are dropped and acknowledged with
// ACKs built from the receiver's latest headers (the window is what the relay
// buffer can still take, the timestamp echoes the sender's), and the output
// goes to the receiver as new segments built from the sender's latest headers,
// sent and retransmitted by a RelaySender. The receiver's pure ACKs that tell
// the sender nothing new are kept from it. When the relay cannot deliver
// (the RelaySender gave up) or nfqscand stops, both peers are reset.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "nfqscan/conntrack.h"
#include "nfqscan/flow.h"
#include "nfqscan/tcp_packet.h"
#include "nfqscan/tcp_relay.h"
#include "nfqscan/tcp_stream.h"

namespace nfqscan {

struct PacketVerdict {
    // Inject: a new packet (no queue id) carrying output that did not fit
    // into the packet before it, or a segment nfqscand sends itself; sent
    // after that packet's verdict (raw sockets). InjectFrame: a frame for
    // the relay device (build_gso_frame: a virtio_net_hdr, then an IP packet
    // of up to 64 KiB the kernel cuts into segments).
    enum class Kind : uint8_t { Accept, Replace, Hold, Drop, Inject, InjectFrame };
    uint32_t id = 0;
    Kind kind = Kind::Accept;
    std::vector<uint8_t> packet;  // for Replace, Inject and InjectFrame
};

// Which families the relay device carries right now (its owner clears them
// when the device fails). Without it, a relay's output goes out one segment
// per packet through the raw sockets.
struct GsoOutput {
    bool ipv4 = false;
    bool ipv6 = false;
};

// What the engine refused of the peers' packets. With conntrack's liberal
// window tracking on (rules/nfqscan-sysctl.conf) these checks are the only
// ones between a host that knows a flow's addresses and the engine's state
// (RFC 5961, RFC 9293 3.10.7.4). Each refused packet is dropped.
struct PeerCheckCounters {
    uint64_t acks_ahead = 0;          // ACKs of output never sent to the receiver
    uint64_t acks_behind = 0;         // ACKs more than the largest window behind
    uint64_t rsts_challenged = 0;     // RSTs in the window, not at the expected number
    uint64_t rsts_out_of_window = 0;  // RSTs outside the window
    uint64_t challenge_acks = 0;      // ACKs sent to the claimed sender of a refused packet
    uint64_t data_out_of_window = 0;  // segments outside the receiver's window (plus slack)
    uint64_t urgent_cleared = 0;      // segments whose URG flag was cleared (data inline)
    uint64_t syn_data_dropped = 0;    // SYNs whose payload was cut (sent again after the handshake)
    uint64_t syns_refused = 0;        // SYNs at another number on a flow in the engine
    uint64_t paws = 0;                // data segments older than the receiver's recent TSval (PAWS)

    // Every counter with its name, for sums and status output.
    static constexpr std::pair<const char*, uint64_t PeerCheckCounters::*> kFields[] = {
        {"acks_ahead", &PeerCheckCounters::acks_ahead},
        {"acks_behind", &PeerCheckCounters::acks_behind},
        {"rsts_challenged", &PeerCheckCounters::rsts_challenged},
        {"rsts_out_of_window", &PeerCheckCounters::rsts_out_of_window},
        {"challenge_acks", &PeerCheckCounters::challenge_acks},
        {"data_out_of_window", &PeerCheckCounters::data_out_of_window},
        {"urgent_cleared", &PeerCheckCounters::urgent_cleared},
        {"syn_data_dropped", &PeerCheckCounters::syn_data_dropped},
        {"syns_refused", &PeerCheckCounters::syns_refused},
        {"paws", &PeerCheckCounters::paws},
    };
    PeerCheckCounters& operator+=(const PeerCheckCounters& o) {
        for (const auto& [name, field] : kFields)
            this->*field += o.*field;
        return *this;
    }
};

struct FlowStreamCounters {
    uint64_t rewritten_packets = 0;
    uint64_t injected_packets = 0;
    uint64_t sack_acks = 0;       // ACKs with SACK blocks sent to a sender for held data
    uint64_t relay_acks = 0;      // ACKs sent to a sender for data the relay took
    uint64_t relay_segments = 0;  // segments the relay sent to a receiver
    uint64_t relay_retransmissions = 0;
    uint64_t relay_timeouts = 0;
    uint64_t relay_gso_frames = 0;  // frames of several segments sent to the relay device
    uint64_t resets = 0;            // RSTs sent to peers (relay failed, daemon stopping)
    PeerCheckCounters peer_checks;
};

class FlowStream {
  public:
    // `transforms[d]` inspects direction d (ClientToServer, ServerToClient);
    // nullptr passes that direction through the engine unchanged. `gso`
    // (borrowed, may change between calls): whether relayed output goes out
    // as InjectFrame verdicts, consecutive segments of one send coalesced.
    FlowStream(std::array<StreamTransform*, 2> transforms, StreamLimits limits,
               const GsoOutput* gso = nullptr);

    // One queued packet of the flow. Appends its verdict and those of held
    // packets it releases.
    void on_packet(uint32_t id, Direction d, const DecodedPacket& p, bool gso, uint64_t now_ms,
                   std::vector<PacketVerdict>& out);

    // The relay's retransmission timers. Packets to inject go to `out`.
    void on_timer(uint64_t now_ms, std::vector<PacketVerdict>& out);
    // When on_timer() next has something to do, if ever.
    std::optional<uint64_t> deadline() const;
    bool relay_active() const { return !dead_ && (relays_[0] || relays_[1]); }
    const RelaySender* relay(Direction d) const { return relays_[size_t(d)].get(); }

    // Own bytes to the receiver of direction d (e.g. a protocol reply),
    // delivered by the relay after the output produced so far.
    void send_own(Direction d, std::span<const uint8_t> bytes, uint64_t now_ms,
                  std::vector<PacketVerdict>& out);
    // RSTs to both peers, with the sequence numbers each expects; the flow
    // is dead for the engine afterwards.
    void reset_peers(std::vector<PacketVerdict>& out);
    // The flow leaves the table (evicted, expired): its held packets are
    // dropped (the sender retransmits them if the connection lives), and if
    // the peers can no longer talk without the engine (needs_engine()) both
    // are reset. Its next packet would start a new engine at no shift, and
    // the receiver would take wrong bytes for the rest of the stream.
    void abandon(std::vector<PacketVerdict>& out);
    // The streams' memory cap holds and this flow cannot progress: its peers
    // are reset, its held packets dropped, its memory given back, and every
    // later packet of it dropped (never passed raw).
    void shed(std::vector<PacketVerdict>& out);
    // Shows both directions' inspectors their pending bytes again (a scan
    // verdict arrived) and sends what they mapped: through the relay, or as
    // new segments.
    void redrive(uint64_t now_ms, std::vector<PacketVerdict>& out);
    // Ends the flow with a message: the receiver of d gets `bytes` after the
    // output mapped so far, then a FIN (relayed, retransmitted as needed);
    // the sender of d gets a RST now. Held packets are dropped, and so is
    // every later packet of either peer: the receiver's ACKs only drive the
    // relay, and once it has the FIN, anything more it says is answered with
    // a RST.
    void close_with(Direction d, std::span<const uint8_t> bytes, uint64_t now_ms,
                    std::vector<PacketVerdict>& out);
    bool closed() const { return closed_.has_value(); }
    // The addresses nfqscand's own segments of direction d carry: those of
    // the connection's conntrack tuple for that direction, where NAT makes
    // them differ from the forwarded packets' (see conntrack.h).
    void set_wire_endpoints(Direction d, const Endpoint& src, const Endpoint& dst);
    // Whether the owner has looked the wire endpoints up (set or not).
    bool wire_checked() const { return wire_checked_; }
    void note_wire_checked() { wire_checked_ = true; }
    // Output a grown packet could not carry waits for the next packet of its
    // direction in the same batch (which carries it in front of its own), so
    // that a run of growing GSO packets costs one extra segment, not one per
    // packet. The worker calls flush_deferred() at the end of each batch.
    bool has_deferred() const { return deferred_[0] || deferred_[1]; }
    // What is still deferred goes out as new segments.
    void flush_deferred(std::vector<PacketVerdict>& out);
    // Whether the peers can no longer talk without nfqscand: sequence numbers
    // shifted by rewriting, data the relay holds or still owes, or input
    // nfqscand acknowledged itself and has not delivered yet.
    bool needs_engine() const;

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
    // `may_defer`: output beyond `room` may wait for the next packet.
    void answer(uint32_t id, Direction d, const SegmentHeaders& headers, const SegmentVerdict& v,
                std::span<const uint8_t> original_payload, size_t room, bool must_replace,
                std::optional<uint32_t> ack, std::vector<PacketVerdict>& out,
                bool may_defer = false);
    // New segments carrying output [begin, end) of direction d, at most
    // `room` bytes each, built from d's latest headers.
    void send_output(Direction d, uint64_t begin, uint64_t end, size_t room,
                     std::vector<PacketVerdict>& out);
    std::optional<uint32_t> translated_ack(Direction d, uint32_t ack);
    // Whether a packet of the sender of d (past the SYN) may touch the
    // engine's state: its ACK within what was sent, a RST at the expected
    // number, data within the receiver's window. What fails is dropped
    // (`out`), counted, and answered with a challenge ACK where RFC 5961
    // asks for one.
    bool admissible(uint32_t id, Direction d, const DecodedPacket& p, uint64_t now_ms,
                    std::vector<PacketVerdict>& out);
    // An ACK to the claimed sender of a refused packet (RFC 5961 7: at most
    // one per direction per kChallengeIntervalMs, so that a flood of
    // spoofed packets cannot make nfqscand flood a peer).
    void challenge(Direction d, uint64_t now_ms, std::vector<PacketVerdict>& out);
    // An ACK to the sender of direction d as its receiver would send it
    // (SACK blocks for held data; the relay's window while relaying).
    void ack_sender(Direction d, std::vector<PacketVerdict>& out);
    // RSTs to the receiver of direction x, at every sequence number it may expect.
    void reset_receiver(Direction x, std::vector<PacketVerdict>& out);
    // A packet of a flow closed by close_with() (already answered: dropped).
    void on_closed_packet(Direction d, const DecodedPacket& p, uint64_t now_ms,
                          std::vector<PacketVerdict>& out);
    void relay_on_ack(Direction d, const DecodedPacket& ack_packet, uint64_t now_ms,
                      std::vector<PacketVerdict>& out);
    // The relay of `d` caught up: back to pass mode, its path remembered.
    void end_relay(Direction d, uint64_t now_ms);
    void pump_relay(Direction d, uint64_t now_ms, std::vector<PacketVerdict>& out);
    void emit(Direction d, const std::vector<RelaySegment>& segments,
              std::vector<PacketVerdict>& out);
    RelayOutput relay_output(Direction d) const;
    // The relay buffer's room as a window field in the receiver's scale.
    uint16_t relay_window_field(Direction d) const;
    // relay_window_field(d), now offered to the sender of direction d (in an
    // ACK nfqscand sends or forwards): remembered, and never taken back.
    uint16_t offer_relay_window(Direction d);
    size_t segment_room(Direction d) const;
    uint8_t window_shift(Direction d) const;

    class Passthrough : public StreamTransform {
      public:
        void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
            sink.pass(pending.size());
        }
    };

    Passthrough passthrough_;
    const GsoOutput* gso_ = nullptr;
    static constexpr size_t kHeldPacketBytes = 128;  // a held_ entry, as memory_bytes() counts it
    std::array<std::unique_ptr<StreamDirection>, 2> directions_;
    std::array<uint16_t, 2> mss_{0, 0};  // largest segment the receiver of direction d takes
    std::unordered_map<uint32_t, HeldPacket> held_;
    // The latest headers of each direction: the template for segments
    // nfqscand sends on that side's behalf (a SACK for held data).
    std::array<std::optional<SegmentHeaders>, 2> last_headers_;
    // The next sequence number of each side's sender (its input space).
    std::array<std::optional<uint32_t>, 2> next_seq_;
    // Window scale each side announced in its SYN (used if both did).
    std::array<std::optional<uint8_t>, 2> window_scale_;
    // The acknowledgement number the sender of direction d was last shown.
    std::array<std::optional<uint32_t>, 2> told_ack_;
    // The newest timestamp (TSval) each side's sender sent. A segment the
    // engine sends later than a newer one of the same sender (a held segment
    // released after the gap filled, deferred or relayed output) carries it:
    // the receiver drops a segment whose TSval is older than the newest it
    // took in order (PAWS, RFC 7323 5.3), and the sender, told by a SACK
    // that the held data arrived, would not send it again for long.
    std::array<std::optional<uint32_t>, 2> ts_newest_;
    // PAWS (RFC 7323 5.3), only where both SYNs carried timestamps: the
    // TSval the receiver of direction d keeps as its sender's recent one
    // (Linux's ts_recent: from the SYN, then from segments that reach the
    // acknowledged edge) and when it was taken. A data segment older than
    // it is one the receiver discards, so the engine must not take it.
    std::array<bool, 2> ts_offered_{false, false};
    std::array<std::optional<uint32_t>, 2> ts_recent_;
    std::array<uint64_t, 2> ts_recent_ms_{0, 0};
    bool paws_rejects(Direction d, const DecodedPacket& p, uint64_t now_ms) const;
    void note_ts_recent(Direction d, const DecodedPacket& p, uint64_t now_ms);
    // ts_newest_ of direction d where `h` carries an older TSval.
    std::optional<uint32_t> newer_ts(Direction d, const SegmentHeaders& h) const;
    // The largest window (bytes) the sender of direction d has offered the
    // other side: how far behind an ACK of its may be (RFC 5961 5.2).
    std::array<uint64_t, 2> max_window_{0, 0};
    // When the last challenge ACK went to the sender of direction d.
    std::array<std::optional<uint64_t>, 2> challenged_at_;
    // The window (bytes) the relay offered the sender of direction d.
    std::array<uint64_t, 2> told_window_{0, 0};
    std::array<std::unique_ptr<RelaySender>, 2> relays_;
    // What the last relay of each direction learned of its path (the next
    // object on a keep-alive connection starts from it).
    std::array<std::optional<RelayPathMemo>, 2> relay_memo_;
    bool dead_ = false;                // reset: nothing more to deliver
    std::optional<Direction> closed_;  // close_with(): the direction that ends
    std::array<std::optional<std::pair<Endpoint, Endpoint>>, 2> wire_;  // set_wire_endpoints()
    bool wire_checked_ = false;
    // last_headers_[d] := h, addressed as wire_[d] says.
    void remember_headers(size_t d, const SegmentHeaders& h);
    std::array<bool, 2> deferred_{false, false};  // output waits for flush_deferred()
    FlowStreamCounters counters_;
};

}  // namespace nfqscan
