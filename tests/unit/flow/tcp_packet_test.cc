// Segment checksums: fix_checksums() against a plain RFC 1071 reference over
// random packets of every length parity, IPv4 and IPv6. GSO frames for the
// relay device: the virtio header, TTL / hop limit, the partial checksum,
// and what the kernel's segmentation makes of them.
#include <gtest/gtest.h>

#include <random>

#include "../gso_frame.h"
#include "../packet_builder.h"
#include "nfqscan/tcp_packet.h"

namespace nfqscan {
namespace {

uint16_t reference_checksum(const std::vector<uint8_t>& pseudo, const uint8_t* data, size_t n) {
    uint32_t sum = 0;
    std::vector<uint8_t> all(pseudo);
    all.insert(all.end(), data, data + n);
    if (all.size() % 2) all.push_back(0);
    for (size_t i = 0; i < all.size(); i += 2)
        sum += uint32_t(all[i]) << 8 | all[i + 1];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return uint16_t(~sum);
}

// A segment of `length` random payload bytes (all ones when `ones`), its
// checksums set.
std::vector<uint8_t> random_segment(std::mt19937& rng, bool v6, size_t length, bool ones) {
    test::PacketSpec s;
    s.v6 = v6;
    if (v6) {
        s.src = "2001:db8:1::2";
        s.dst = "2001:db8:2::2";
    }
    s.payload.resize(length);
    for (auto& c : s.payload)
        c = ones ? char(0xff) : char(rng());
    std::vector<uint8_t> packet = test::build_packet(s);
    fix_checksums(packet, v6 ? 6 : 4, v6 ? 40 : 20);
    return packet;
}

TEST(TcpPacket, ChecksumsMatchTheReference) {
    std::mt19937 rng(3);
    for (int round = 0; round < 400; ++round) {
        bool v6 = round % 2;
        size_t length = rng() % 3000 + (round % 7 == 0 ? 60000 : 0);
        // All ones now and then: every add carries.
        std::vector<uint8_t> packet = random_segment(rng, v6, length, round % 11 == 0);
        uint16_t l3 = v6 ? 40 : 20;

        size_t tcp_length = packet.size() - l3;
        std::vector<uint8_t> pseudo;
        if (v6) {
            pseudo.assign(packet.begin() + 8, packet.begin() + 40);
            pseudo.insert(pseudo.end(),
                          {uint8_t(tcp_length >> 24), uint8_t(tcp_length >> 16),
                           uint8_t(tcp_length >> 8), uint8_t(tcp_length), 0, 0, 0, 6});
        } else {
            pseudo.assign(packet.begin() + 12, packet.begin() + 20);
            pseudo.insert(pseudo.end(), {0, 6, uint8_t(tcp_length >> 8), uint8_t(tcp_length)});
        }
        std::vector<uint8_t> tcp(packet.begin() + l3, packet.end());
        uint16_t stored = uint16_t(tcp[16] << 8 | tcp[17]);
        tcp[16] = tcp[17] = 0;
        ASSERT_EQ(stored, reference_checksum(pseudo, tcp.data(), tcp.size()))
            << "round " << round << ", " << length << " bytes";
        if (!v6) {
            std::vector<uint8_t> ip(packet.begin(), packet.begin() + 20);
            uint16_t ip_stored = uint16_t(ip[10] << 8 | ip[11]);
            ip[10] = ip[11] = 0;
            ASSERT_EQ(ip_stored, reference_checksum({}, ip.data(), ip.size()));
        }
    }
}

TEST(TcpPacket, ChecksumValidationTakesFixedPacketsAndRefusesAnyFlippedBit) {
    std::mt19937 rng(5);
    for (int round = 0; round < 200; ++round) {
        bool v6 = round % 2;
        std::vector<uint8_t> packet = random_segment(rng, v6, rng() % 2000, false);
        uint16_t l3 = v6 ? 40 : 20;
        ASSERT_TRUE(tcp_checksum_valid(packet, v6 ? 6 : 4, l3)) << "round " << round;
        // One bit anywhere in the TCP segment or the addresses.
        size_t first = v6 ? 8 : 12;
        size_t at = first + rng() % (packet.size() - first);
        packet[at] ^= uint8_t(1u << (rng() % 8));
        ASSERT_FALSE(tcp_checksum_valid(packet, v6 ? 6 : 4, l3))
            << "round " << round << ", byte " << at;
    }
    std::vector<uint8_t> short_packet(30);
    EXPECT_FALSE(tcp_checksum_valid(short_packet, 4, 20));
}

// A template as the relay has it: the server's latest segment, taken at
// FORWARD (TTL already decremented to 63 by the router).
SegmentHeaders server_template(bool v6, uint8_t ttl = 63) {
    test::PacketSpec s;
    s.v6 = v6;
    s.src = v6 ? "2001:db8:2::2" : "203.0.113.2";
    s.dst = v6 ? "2001:db8:1::2" : "198.51.100.2";
    s.sport = 80;
    s.dport = 40000;
    s.flags = 0x18;  // PSH ACK
    s.payload = "x";
    std::vector<uint8_t> p = test::build_packet(s);
    p[v6 ? 7 : 8] = ttl;
    DecodedPacket d;
    EXPECT_EQ(decode_packet(p, d), DecodeStatus::Ok);
    return SegmentHeaders::of(d);
}

TEST(GsoFrame, FieldsChecksumAndSegmentsIpv4AndIpv6) {
    std::mt19937 rng(11);
    for (bool v6 : {false, true}) {
        for (size_t length : {size_t(1448 * 10 + 500), size_t(1448 * 45), size_t(3000 + 1)}) {
            std::vector<uint8_t> payload(length);
            for (auto& b : payload)
                b = uint8_t(rng());
            SegmentRewrite r;
            r.seq = 0xfffff000;  // wraps inside the frame
            r.ack = 777;
            r.payload = payload;
            r.fin = true;
            std::vector<uint8_t> frame = build_gso_frame(server_template(v6), r, 1448);
            test::ReceivedFrame f = test::receive_frame(frame);
            SCOPED_TRACE((v6 ? "IPv6, " : "IPv4, ") + std::to_string(length) + " bytes");
            EXPECT_EQ(f.gso_type, v6 ? 4 : 1);
            EXPECT_EQ(f.gso_size, 1448);
            EXPECT_EQ(f.hdr_len, (v6 ? 40 : 20) + 20);
            // Forwarded again: one more than the template, so the receiver
            // sees what it would have seen from the sender.
            EXPECT_EQ(f.ttl_written, 64);
            ASSERT_EQ(f.segments.size(), (length + 1447) / 1448);
            size_t offset = 0;
            for (size_t i = 0; i < f.segments.size(); ++i) {
                DecodedPacket d;
                ASSERT_EQ(decode_packet(f.segments[i], d), DecodeStatus::Ok);
                EXPECT_EQ(d.seq, uint32_t(0xfffff000 + offset));
                EXPECT_EQ(d.ack, 777u);
                EXPECT_EQ(d.payload.size(), std::min<size_t>(1448, length - offset));
                EXPECT_TRUE(
                    std::equal(d.payload.begin(), d.payload.end(), payload.begin() + long(offset)));
                bool last = i + 1 == f.segments.size();
                EXPECT_EQ(d.has(tcp_flag::kFin), last) << "segment " << i;
                EXPECT_EQ(f.segments[i][v6 ? 7 : 8], 63);
                offset += d.payload.size();
            }
        }
    }
}

TEST(GsoFrame, OneSegmentIsNoGsoAndTtlNeverWraps) {
    for (bool v6 : {false, true}) {
        std::vector<uint8_t> payload(1448, 'a');
        SegmentRewrite r;
        r.seq = 5;
        r.payload = payload;
        test::ReceivedFrame f = test::receive_frame(build_gso_frame(server_template(v6), r, 1448));
        EXPECT_EQ(f.gso_type, 0);
        EXPECT_EQ(f.segments.size(), 1u);
        EXPECT_EQ(f.ttl_written, 64);
        // A FIN alone, and a template at the largest TTL.
        r.payload = {};
        r.fin = true;
        f = test::receive_frame(build_gso_frame(server_template(v6, 255), r, 1448));
        EXPECT_EQ(f.gso_type, 0);
        EXPECT_EQ(f.ttl_written, 255);
        DecodedPacket d;
        ASSERT_EQ(decode_packet(f.segments.at(0), d), DecodeStatus::Ok);
        EXPECT_TRUE(d.has(tcp_flag::kFin));
        EXPECT_TRUE(d.payload.empty());
    }
}

}  // namespace
}  // namespace nfqscan

namespace nfqscan {
namespace {

TEST(TcpPacket, ATemplateLosesItsSackBlocksAndKeepsItsTimestamp) {
    // NOP NOP TS, then NOP NOP SACK with one block: a 44-byte TCP header.
    test::PacketSpec spec;
    spec.tsval = 777;
    std::vector<uint8_t> packet = test::build_packet(spec);
    const size_t tcp = 20;
    const uint8_t sack[12] = {1, 1, 5, 10, 0, 0, 0, 9, 0, 0, 0, 10};
    packet.insert(packet.begin() + tcp + 32, std::begin(sack), std::end(sack));
    packet[tcp + 12] = uint8_t(44 / 4) << 4;
    packet[2] = uint8_t(packet.size() >> 8);
    packet[3] = uint8_t(packet.size());
    DecodedPacket p;
    ASSERT_EQ(decode_packet(packet, p), DecodeStatus::Ok);
    SegmentHeaders h = SegmentHeaders::of(p);
    ASSERT_EQ(h.l4_length, 44);

    h.strip_sack();
    EXPECT_EQ(h.l4_length, 32);
    EXPECT_EQ(h.bytes.size(), 20u + 32u);
    EXPECT_EQ(h.bytes[tcp + 12] >> 4, 8);
    EXPECT_EQ(h.ts_value(), 777u);
    // What remains is NOP NOP TIMESTAMP, and a segment built on it decodes
    // with that header and its payload after it.
    EXPECT_EQ(h.bytes[tcp + 20], 1);
    EXPECT_EQ(h.bytes[tcp + 22], 8);
    SegmentRewrite r;
    r.seq = 5;
    std::string data(100, 'x');
    r.payload = test::bytes_of(data);
    std::vector<uint8_t> built = build_segment(h, r);
    DecodedPacket q;
    ASSERT_EQ(decode_packet(built, q), DecodeStatus::Ok);
    EXPECT_EQ(q.l4_header_length, 32);
    EXPECT_EQ(std::string(q.payload.begin(), q.payload.end()), data);

    // Without SACK blocks, nothing changes.
    std::vector<uint8_t> before = h.bytes;
    h.strip_sack();
    EXPECT_EQ(h.bytes, before);
}

}  // namespace
}  // namespace nfqscan
