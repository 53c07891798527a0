// What the kernel makes of a frame written to the relay device (tun_get_user
// and virtio_net_hdr_to_skb take the virtio header, the forward path
// decrements the TTL, the checksum is completed from csum_start with the
// partial sum in the field, tcp_gso_segment cuts the frame at gso_size), for
// tests of build_gso_frame and of the relay's frames.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "nfqscan/packet.h"
#include "nfqscan/tcp_packet.h"

namespace nfqscan::test {

struct ReceivedFrame {
    uint8_t flags = 0, gso_type = 0;
    uint16_t hdr_len = 0, gso_size = 0, csum_start = 0, csum_offset = 0;
    uint8_t ttl_written = 0;      // TTL / hop limit as written
    std::vector<uint8_t> packet;  // forwarded whole (veth): TTL - 1, checksums complete
    std::vector<std::vector<uint8_t>> segments;  // cut as a NIC or the kernel's GSO would
};

inline uint16_t frame_load16(const uint8_t* p) {
    return uint16_t(p[0] << 8 | p[1]);
}

inline void frame_store16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}

// Completes a CHECKSUM_PARTIAL checksum: the one's complement sum of the
// bytes from `start` to the end, the field's seed included, complemented.
inline void complete_checksum(std::vector<uint8_t>& packet, size_t start, size_t offset) {
    uint32_t sum = 0;
    for (size_t i = start; i < packet.size(); i += 2)
        sum += uint32_t(packet[i]) << 8 | (i + 1 < packet.size() ? packet[i + 1] : 0);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    frame_store16(packet.data() + start + offset, uint16_t(~sum));
}

// Parses `frame`; checks what the kernel checks (a sound virtio header) and
// that the partial checksum completes to the true one.
inline ReceivedFrame receive_frame(const std::vector<uint8_t>& frame) {
    ReceivedFrame f;
    EXPECT_GE(frame.size(), kVirtioNetHdrLength + 40);
    if (frame.size() < kVirtioNetHdrLength + 40) return f;
    f.flags = frame[0];
    f.gso_type = frame[1];
    uint16_t fields[4];
    std::memcpy(fields, frame.data() + 2, sizeof fields);  // host order (legacy TUN header)
    f.hdr_len = fields[0];
    f.gso_size = fields[1];
    f.csum_start = fields[2];
    f.csum_offset = fields[3];
    std::vector<uint8_t> packet(frame.begin() + kVirtioNetHdrLength, frame.end());
    DecodedPacket d;
    EXPECT_EQ(decode_packet(packet, d), DecodeStatus::Ok);
    EXPECT_EQ(f.flags, 1);  // VIRTIO_NET_HDR_F_NEEDS_CSUM
    EXPECT_EQ(f.csum_start, d.l3_header_length);
    EXPECT_EQ(f.csum_offset, 16);
    EXPECT_EQ(f.hdr_len, d.l3_header_length + d.l4_header_length);
    bool v4 = d.ip_version == 4;
    if (d.payload.size() > f.gso_size && f.gso_type != 0) {
        EXPECT_EQ(f.gso_type, v4 ? 1 : 4);  // VIRTIO_NET_HDR_GSO_TCPV4 / TCPV6
    } else {
        EXPECT_EQ(f.gso_type, 0);
    }
    size_t ttl_at = v4 ? 8 : 7;
    f.ttl_written = packet[ttl_at];
    if (v4) {  // the IPv4 header checksum is complete as written
        uint32_t sum = 0;
        for (size_t i = 0; i < 20; i += 2)
            sum += frame_load16(packet.data() + i);
        while (sum >> 16)
            sum = (sum & 0xffff) + (sum >> 16);
        EXPECT_EQ(sum, 0xffffu) << "IPv4 header checksum";
    }
    // The partial checksum, completed, is the true checksum.
    std::vector<uint8_t> completed = packet;
    complete_checksum(completed, f.csum_start, f.csum_offset);
    std::vector<uint8_t> reference = packet;
    fix_checksums(reference, d.ip_version, d.l3_header_length);
    EXPECT_EQ(frame_load16(completed.data() + f.csum_start + 16),
              frame_load16(reference.data() + f.csum_start + 16))
        << "the partial checksum does not complete to the segment's checksum";

    // Forwarding: one hop less.
    --reference[ttl_at];
    fix_checksums(reference, d.ip_version, d.l3_header_length);
    f.packet = reference;

    // Segmentation at gso_size (the whole frame if it is not GSO).
    size_t headers = d.l3_header_length + d.l4_header_length;
    size_t size = f.gso_type ? f.gso_size : d.payload.size();
    size_t total = d.payload.size();
    size_t offset = 0;
    do {
        size_t n = std::min(size, total - offset);
        std::vector<uint8_t> s(reference.begin(), reference.begin() + headers);
        s.insert(s.end(), reference.begin() + headers + offset,
                 reference.begin() + headers + offset + n);
        uint8_t* tcp = s.data() + d.l3_header_length;
        uint32_t seq = d.seq + uint32_t(offset);
        tcp[4] = uint8_t(seq >> 24);
        tcp[5] = uint8_t(seq >> 16);
        tcp[6] = uint8_t(seq >> 8);
        tcp[7] = uint8_t(seq);
        bool last = offset + n == total;
        if (!last) tcp[13] &= uint8_t(~(tcp_flag::kFin | 0x08));  // FIN and PSH on the last
        if (v4) {
            frame_store16(s.data() + 2, uint16_t(s.size()));
            frame_store16(s.data() + 4, uint16_t(frame_load16(s.data() + 4) + f.segments.size()));
        } else {
            frame_store16(s.data() + 4, uint16_t(s.size() - 40));
        }
        fix_checksums(s, d.ip_version, d.l3_header_length);
        f.segments.push_back(std::move(s));
        offset += n;
    } while (offset < total);
    return f;
}

}  // namespace nfqscan::test
