// Segment checksums: fix_checksums() against a plain RFC 1071 reference over
// random packets of every length parity, IPv4 and IPv6.
#include <gtest/gtest.h>

#include <random>

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

TEST(TcpPacket, ChecksumsMatchTheReference) {
    std::mt19937 rng(3);
    for (int round = 0; round < 400; ++round) {
        bool v6 = round % 2;
        test::PacketSpec s;
        s.v6 = v6;
        if (v6) {
            s.src = "2001:db8:1::2";
            s.dst = "2001:db8:2::2";
        }
        size_t length = rng() % 3000 + (round % 7 == 0 ? 60000 : 0);
        s.payload.resize(length);
        for (auto& c : s.payload)  // all ones now and then: every add carries
            c = round % 11 == 0 ? char(0xff) : char(rng());
        std::vector<uint8_t> packet = test::build_packet(s);
        uint16_t l3 = v6 ? 40 : 20;
        fix_checksums(packet, v6 ? 6 : 4, l3);

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

}  // namespace
}  // namespace nfqscan
