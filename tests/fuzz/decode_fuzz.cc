// decode_packet() and decode_cut_packet() on arbitrary bytes: no read outside
// the buffer (ASan), and what an Ok decode returns lies inside what it read.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_check.h"
#include "nfqscan/packet.h"

namespace {

using nfqscan::DecodedPacket;
using nfqscan::DecodeStatus;

bool inside(std::span<const uint8_t> part, std::span<const uint8_t> whole) {
    if (part.empty()) return true;
    return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

void check_ok(const DecodedPacket& p, std::span<const uint8_t> buffer) {
    FUZZ_CHECK(p.ip_version == 4 || p.ip_version == 6);
    FUZZ_CHECK(inside(p.packet, buffer));
    FUZZ_CHECK(inside(p.payload, p.packet));
    FUZZ_CHECK(size_t(p.l3_header_length) + p.l4_header_length + p.payload.size() <=
                   p.packet.size() ||
               !(p.is_tcp() || p.is_udp()));
    if (p.is_tcp()) FUZZ_CHECK(p.l4_header_length >= 20 && p.l4_header_length <= 60);
    if (p.is_udp()) FUZZ_CHECK(p.l4_header_length == 8);
    if (!p.is_tcp() && !p.is_udp()) FUZZ_CHECK(p.payload.empty() && p.src_port == 0);
    if (!p.payload.empty())
        FUZZ_CHECK(p.payload.data() + p.payload.size() == p.packet.data() + p.packet.size());
    // Touch every byte the decode points at: ASan sees any overrun.
    volatile uint8_t sink = 0;
    for (uint8_t b : p.payload)
        sink = sink ^ b;
    (void)sink;
    (void)p.src.to_string();
    (void)p.dst.to_string();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> input(data, size);
    DecodedPacket p;
    DecodeStatus s = decode_packet(input, p);
    FUZZ_CHECK(!nfqscan::decode_status_name(s).empty());
    if (s == DecodeStatus::Ok) {
        check_ok(p, input);
        FUZZ_CHECK(!p.cut);
    }

    std::vector<uint8_t> scratch;
    DecodedPacket cut;
    DecodeStatus cs = decode_cut_packet(input, scratch, cut);
    if (cs == DecodeStatus::Ok) {
        // A cut decode points into the scratch copy, or (a prefix that is not
        // IPv4/IPv6 enough to patch) into the input itself.
        check_ok(cut, cut.packet.data() == input.data() ? input : std::span(scratch));
        if (cut.cut) FUZZ_CHECK(cut.packet.size() == size);
        // A whole packet decodes the same either way.
        if (s == DecodeStatus::Ok && p.packet.size() == size) {
            FUZZ_CHECK(cut.payload.size() == p.payload.size());
            FUZZ_CHECK(cut.seq == p.seq && cut.src_port == p.src_port &&
                       cut.l4_protocol == p.l4_protocol);
        }
    }
    return 0;
}
