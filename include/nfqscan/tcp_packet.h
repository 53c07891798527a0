// Rewriting one TCP segment as the stream engine answers it: the original IP
// and TCP headers (options kept) with a new sequence number, acknowledgement,
// SACK blocks, payload and FIN, lengths fixed and checksums recomputed
// (queued GSO packets arrive with checksums not ready; the kernel re-segments
// a GSO packet by its own segment size after the verdict).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "nfqscan/packet.h"

namespace nfqscan {

struct TcpOptions {
    uint16_t mss = 0;  // 0: not present
    uint8_t window_scale = 0;
    bool has_window_scale = false;
    bool sack_permitted = false;
};

// Options of a segment (meaningful on SYNs); malformed options end the walk.
TcpOptions parse_tcp_options(const DecodedPacket& p);

// The headers of a packet, kept while the packet is held.
struct SegmentHeaders {
    std::vector<uint8_t> bytes;  // IP header (+ IPv6 extensions) + TCP header
    uint8_t ip_version = 4;
    uint16_t l3_length = 0;  // IP header bytes (with extensions)
    uint16_t l4_length = 0;  // TCP header bytes (with options)

    static SegmentHeaders of(const DecodedPacket& p);
    uint32_t ack() const;
    uint32_t seq() const;
    uint8_t flags() const { return bytes[l3_length + 13]; }
};

struct SegmentRewrite {
    uint32_t seq = 0;
    std::optional<uint32_t> ack;                  // replaces the ACK field when set
    std::function<uint32_t(uint32_t)> sack_edge;  // translates SACK block edges when set
    std::span<const uint8_t> payload;
    bool fin = false;
};

// A complete packet: `headers` with the rewrite applied.
std::vector<uint8_t> build_segment(const SegmentHeaders& headers, const SegmentRewrite& rewrite);

// A pure ACK as the template's sender would send it: `seq`, `ack`, the
// template's window and timestamp option, and SACK blocks (at most 3).
std::vector<uint8_t> build_sack_ack(const SegmentHeaders& from, uint32_t seq, uint32_t ack,
                                    std::span<const std::pair<uint32_t, uint32_t>> blocks);

// Recomputes the IPv4 header checksum and the TCP checksum of `packet`.
void fix_checksums(std::span<uint8_t> packet, uint8_t ip_version, uint16_t l3_length);

}  // namespace nfqscan
