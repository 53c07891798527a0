// Packet decode: an IPv4 or IPv6 packet as the kernel queues it (starting at
// the IP header) into addresses, ports, TCP header fields and payload. Never
// reads past the buffer; a packet it cannot decode gets a DecodeStatus that
// says why (with its addresses, and its ports when the TCP or UDP header
// could be reached), and the caller counts it and accepts it, unless it
// belongs to a flow whose bytes the stream engine inspects: that one is
// dropped, since the engine never saw it.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace nfqscan {

// An IPv4 address is kept as IPv4-mapped IPv6 (::ffff:a.b.c.d), so one key
// type serves both families.
struct IpAddress {
    std::array<uint8_t, 16> bytes{};

    static IpAddress from_v4(const uint8_t* p) {
        IpAddress a;
        a.bytes[10] = a.bytes[11] = 0xff;
        std::memcpy(a.bytes.data() + 12, p, 4);
        return a;
    }
    static IpAddress from_v6(const uint8_t* p) {
        IpAddress a;
        std::memcpy(a.bytes.data(), p, 16);
        return a;
    }
    bool is_v4() const {
        static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        return std::memcmp(bytes.data(), prefix, 12) == 0;
    }
    std::string to_string() const;
    auto operator<=>(const IpAddress&) const = default;
};

enum class DecodeStatus : uint8_t {
    Ok,
    Truncated,         // shorter than its headers say
    BadVersion,        // neither IPv4 nor IPv6
    BadHeader,         // header length / data offset out of range
    Fragment,          // a non-first fragment: no transport header to read
    UnsupportedChain,  // IPv6 extension chain ending in ESP or no next header
};

std::string_view decode_status_name(DecodeStatus s);

namespace tcp_flag {
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10,
                         kUrg = 0x20;
}

struct DecodedPacket {
    uint8_t ip_version = 0;
    uint8_t l4_protocol = 0;  // IPPROTO_TCP, IPPROTO_UDP, or other (ports then 0)
    IpAddress src, dst;
    uint16_t src_port = 0, dst_port = 0;
    // TCP only
    uint32_t seq = 0, ack = 0;
    uint16_t window = 0;
    uint8_t tcp_flags = 0;
    uint16_t l3_header_length = 0;  // IP header plus IPv6 extension headers
    uint16_t l4_header_length = 0;
    std::span<const uint8_t> packet;   // the whole IP packet, as far as its length field says
    std::span<const uint8_t> payload;  // TCP/UDP payload
    // Only a prefix of the packet was read (the queue's copy range is 65531
    // bytes; a GRO packet can be a few bytes longer): `packet` and `payload`
    // end there. A verdict that lets it pass must replace it with what was
    // read (the sender retransmits the cut tail), see decode_cut_packet().
    bool cut = false;

    bool is_tcp() const { return l4_protocol == 6; }
    bool is_udp() const { return l4_protocol == 17; }
    bool has(uint8_t flag) const { return (tcp_flags & flag) != 0; }
};

// Decode `data` (an IP packet) into `out`. `out` is valid only for Ok.
DecodeStatus decode_packet(std::span<const uint8_t> data, DecodedPacket& out);

// Decodes the prefix `data` of a longer packet: its IP length field is set
// to the prefix in `scratch` (a copy), and `out.cut` is set. A cut inside the
// IP or TCP header is Truncated, as from decode_packet().
DecodeStatus decode_cut_packet(std::span<const uint8_t> data, std::vector<uint8_t>& scratch,
                               DecodedPacket& out);

}  // namespace nfqscan
