// Rewriting one TCP segment as the stream engine answers it: the original IP
// and TCP headers (options kept) with a new sequence number, acknowledgement,
// SACK blocks, payload and FIN, lengths fixed and checksums recomputed
// (queued GSO packets arrive with checksums not ready; the kernel re-segments
// a GSO packet by its own segment size after the verdict).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "nfqscan/packet.h"

namespace nfqscan {

struct TcpOptions {
    uint16_t mss = 0;  // 0: not present
    uint8_t window_scale = 0;
    bool has_window_scale = false;
    bool sack_permitted = false;
    std::optional<uint32_t> ts_value;  // the timestamp option's TSval (on any segment)
};

// Options of a segment (meaningful on SYNs); malformed options end the walk.
TcpOptions parse_tcp_options(const DecodedPacket& p);

// The SACK blocks of a segment ([left, right) sequence numbers, as sent),
// at most 4; returns how many.
size_t parse_sack_blocks(const DecodedPacket& p, std::array<std::pair<uint32_t, uint32_t>, 4>& out);

// The headers of a packet, kept while the packet is held.
struct SegmentHeaders {
    std::vector<uint8_t> bytes;  // IP header (+ IPv6 extensions) + TCP header
    uint8_t ip_version = 4;
    uint16_t l3_length = 0;  // IP header bytes (with extensions)
    uint16_t l4_length = 0;  // TCP header bytes (with options)

    static SegmentHeaders of(const DecodedPacket& p);
    uint32_t ack() const;
    uint32_t seq() const;
    uint16_t window() const;  // the raw field (unscaled)
    // SACK blocks go (the header shrinks): a sender's SACK is about the
    // other direction's data at that moment, and it would take room from
    // every segment built on this template, pushing full-sized segments
    // past the path MTU.
    void strip_sack();
    // No URG flag and no urgent pointer: the receiver reads every byte
    // inline, as the inspector saw it (with SO_OOBINLINE off it would take
    // the urgent byte out of the stream the inspector judged).
    void clear_urgent();
    // A SYN-ACK as the template of what nfqscand sends for its side: the
    // SYN flag goes.
    void clear_syn();
    // The addresses and ports become these (of the header's IP version):
    // segments built from it are addressed as conntrack knows the
    // connection on the far side of a NAT (see conntrack.h).
    void set_endpoints(const IpAddress& src, uint16_t src_port, const IpAddress& dst,
                       uint16_t dst_port);
    uint8_t flags() const { return bytes[l3_length + 13]; }
    // The timestamp option's TSval, if the segment carries one (read once,
    // by of()).
    std::optional<uint32_t> ts_value() const { return ts_value_; }

  private:
    std::optional<uint32_t> ts_value_;
};

struct SegmentRewrite {
    uint32_t seq = 0;
    std::optional<uint32_t> ack;                  // replaces the ACK field when set
    std::function<uint32_t(uint32_t)> sack_edge;  // translates SACK block edges when set
    std::span<const uint8_t> payload;
    bool fin = false;
    // Replaces the timestamp option's TSval when set (see FlowStream: what
    // nfqscand sends never carries an older TSval than the sender's newest).
    std::optional<uint32_t> ts_value;
    std::optional<uint16_t> window;  // replaces the window field when set
};

// A complete packet: `headers` with the rewrite applied.
std::vector<uint8_t> build_segment(const SegmentHeaders& headers, const SegmentRewrite& rewrite);

// A frame for the relay device (a TUN device with IFF_VNET_HDR, see
// injector.h): a struct virtio_net_hdr, then the packet build_segment would
// make, with these differences. The TCP checksum field holds the folded
// pseudo-header sum over the whole TCP length, uncomplemented (the kernel's
// CHECKSUM_PARTIAL convention: it sums from csum_start and stores the
// complement); the IPv4 header checksum is complete. The TTL / hop limit is
// one higher than the template's: the template was taken at FORWARD, after
// the router decremented it, and the frame is forwarded again. A payload
// longer than `segment_size` is a GSO frame (gso_type TCPV4/TCPV6,
// gso_size = segment_size): the kernel cuts it into segments of
// segment_size bytes (the last shorter), each with the headers, the FIN
// (and PSH) only on the last.
constexpr size_t kVirtioNetHdrLength = 10;  // sizeof(struct virtio_net_hdr)
std::vector<uint8_t> build_gso_frame(const SegmentHeaders& headers, const SegmentRewrite& rewrite,
                                     uint16_t segment_size);

// A segment without payload that nfqscand sends on the template's sender's
// behalf: a pure ACK (with SACK blocks, at most 3) or a RST.
struct ControlSegment {
    uint32_t seq = 0;
    uint32_t ack = 0;
    bool rst = false;                  // RST (no ACK) instead of an ACK
    std::optional<uint16_t> window;    // replaces the template's window field
    std::optional<uint32_t> ts_echo;   // replaces the timestamp option's TSecr
    std::optional<uint32_t> ts_value;  // replaces the timestamp option's TSval
    std::span<const std::pair<uint32_t, uint32_t>> sack_blocks;
};

// The template's IP and TCP header with the timestamp option kept (a peer
// that negotiated timestamps expects it) and every other option dropped.
std::vector<uint8_t> build_control_segment(const SegmentHeaders& from, const ControlSegment& c);

// Whether the TCP checksum of `packet` (an IPv4 or IPv6 packet whose
// transport header starts at `l3_length`) is right. IPv6: the pseudo-header
// takes the destination field as it stands (no routing header walked).
bool tcp_checksum_valid(std::span<const uint8_t> packet, uint8_t ip_version, uint16_t l3_length);

// Recomputes the IPv4 header checksum and the TCP checksum of `packet`.
void fix_checksums(std::span<uint8_t> packet, uint8_t ip_version, uint16_t l3_length);

}  // namespace nfqscan
