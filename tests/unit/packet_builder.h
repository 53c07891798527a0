// Builds IPv4/IPv6 TCP/UDP packets for unit tests (checksums left zero: the
// code under test never validates them, as with GSO packets from the queue).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nfqscan::test {

struct PacketSpec {
    bool v6 = false;
    std::string src = "198.51.100.2", dst = "203.0.113.2";
    uint16_t sport = 40000, dport = 80;
    uint8_t protocol = IPPROTO_TCP;
    uint8_t flags = 0x10;  // ACK
    uint32_t seq = 1000, ack = 1;
    std::string payload;
    std::optional<uint32_t> tsval;                    // TCP: NOP NOP TIMESTAMP(tsval, echo 0)
    std::vector<std::pair<uint32_t, uint32_t>> sack;  // TCP: NOP NOP SACK(blocks), at most 4
    std::vector<uint8_t> v6_extensions;  // raw extension headers; first next-header in ext_first
    uint8_t ext_first = 0;
};

// A string's bytes, as the engine's interfaces take them.
inline std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

inline void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
    b[at] = uint8_t(v >> 8);
    b[at + 1] = uint8_t(v);
}
inline void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
    put16(b, at, uint16_t(v >> 16));
    put16(b, at + 2, uint16_t(v));
}

inline std::vector<uint8_t> build_packet(const PacketSpec& s) {
    std::vector<uint8_t> l4;
    if (s.protocol == IPPROTO_TCP) {
        l4.assign(20, 0);
        put16(l4, 0, s.sport);
        put16(l4, 2, s.dport);
        put32(l4, 4, s.seq);
        put32(l4, 8, s.ack);
        l4[12] = 5 << 4;
        l4[13] = s.flags;
        put16(l4, 14, 65535);
        if (s.tsval) {
            l4.insert(l4.end(), {1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0});
            put32(l4, 24, *s.tsval);
            l4[12] = 8 << 4;
        }
        if (!s.sack.empty()) {
            size_t at = l4.size();
            l4.insert(l4.end(), {1, 1, 5, uint8_t(2 + 8 * s.sack.size())});
            l4.resize(l4.size() + 8 * s.sack.size());
            for (size_t i = 0; i < s.sack.size(); ++i) {
                put32(l4, at + 4 + 8 * i, s.sack[i].first);
                put32(l4, at + 8 + 8 * i, s.sack[i].second);
            }
            l4[12] = uint8_t((l4.size() / 4) << 4);
        }
    } else if (s.protocol == IPPROTO_UDP) {
        l4.assign(8, 0);
        put16(l4, 0, s.sport);
        put16(l4, 2, s.dport);
        put16(l4, 4, uint16_t(8 + s.payload.size()));
    }
    l4.insert(l4.end(), s.payload.begin(), s.payload.end());

    std::vector<uint8_t> p;
    if (!s.v6) {
        p.assign(20, 0);
        p[0] = 0x45;
        put16(p, 2, uint16_t(20 + l4.size()));
        p[8] = 64;
        p[9] = s.protocol;
        inet_pton(AF_INET, s.src.c_str(), p.data() + 12);
        inet_pton(AF_INET, s.dst.c_str(), p.data() + 16);
    } else {
        p.assign(40, 0);
        p[0] = 0x60;
        put16(p, 4, uint16_t(s.v6_extensions.size() + l4.size()));
        p[6] = s.v6_extensions.empty() ? s.protocol : s.ext_first;
        p[7] = 64;
        inet_pton(AF_INET6, s.src.c_str(), p.data() + 8);
        inet_pton(AF_INET6, s.dst.c_str(), p.data() + 24);
        p.insert(p.end(), s.v6_extensions.begin(), s.v6_extensions.end());
    }
    p.insert(p.end(), l4.begin(), l4.end());
    return p;
}

// A TCP segment of the stream tests' one flow: client 198.51.100.2:40000,
// server 203.0.113.2:80.
inline std::vector<uint8_t> flow_segment(bool from_client, uint8_t flags, uint32_t seq,
                                         uint32_t ack, const std::string& payload = "",
                                         std::optional<uint32_t> tsval = std::nullopt) {
    PacketSpec s;
    if (!from_client) {
        s.src = "203.0.113.2";
        s.dst = "198.51.100.2";
        s.sport = 80;
        s.dport = 40000;
    }
    s.flags = flags;
    s.seq = seq;
    s.ack = ack;
    s.payload = payload;
    s.tsval = tsval;
    return build_packet(s);
}

}  // namespace nfqscan::test
