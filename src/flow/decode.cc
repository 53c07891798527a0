#include <arpa/inet.h>
#include <netinet/in.h>

#include "byte_order.h"
#include "nfqscan/packet.h"

namespace nfqscan {

namespace {

using namespace wire;

DecodeStatus decode_transport(std::span<const uint8_t> pkt, size_t offset, uint8_t proto,
                              DecodedPacket& out) {
    out.l4_protocol = proto;
    if (offset > UINT16_MAX) return DecodeStatus::BadHeader;  // headers beyond any real packet
    out.l3_header_length = static_cast<uint16_t>(offset);
    const uint8_t* l4 = pkt.data() + offset;
    size_t remaining = pkt.size() - offset;
    if (proto == IPPROTO_TCP) {
        // The ports come first, so that a TCP header the decoder refuses
        // still names its flow (the caller drops it if the engine owns that flow).
        if (remaining >= 4) {
            out.src_port = load16(l4);
            out.dst_port = load16(l4 + 2);
        }
        if (remaining < 20) return DecodeStatus::Truncated;
        size_t header = size_t(l4[12] >> 4) * 4;
        if (header < 20) return DecodeStatus::BadHeader;
        if (header > remaining) return DecodeStatus::Truncated;
        out.seq = load32(l4 + 4);
        out.ack = load32(l4 + 8);
        out.tcp_flags = l4[13];
        out.window = load16(l4 + 14);
        out.l4_header_length = static_cast<uint16_t>(header);
        out.payload = pkt.subspan(offset + header);
    } else if (proto == IPPROTO_UDP) {
        if (remaining < 8) return DecodeStatus::Truncated;
        out.src_port = load16(l4);
        out.dst_port = load16(l4 + 2);
        out.l4_header_length = 8;
        // A GSO UDP packet may carry a length that no longer fits 16 bits;
        // the IP length is authoritative, so the UDP one is not enforced.
        out.payload = pkt.subspan(offset + 8);
    } else {
        out.payload = {};
    }
    return DecodeStatus::Ok;
}

DecodeStatus decode_v4(std::span<const uint8_t> data, DecodedPacket& out) {
    if (data.size() < 20) return DecodeStatus::Truncated;
    const uint8_t* ip = data.data();
    size_t header = size_t(ip[0] & 0x0f) * 4;
    if (header < 20) return DecodeStatus::BadHeader;
    size_t total = load16(ip + 2);
    // A GSO packet beyond 64 KiB (BIG TCP) carries total length 0.
    if (total == 0 && data.size() > 65535) total = data.size();
    if (total < header) return DecodeStatus::BadHeader;
    if (total > data.size()) return DecodeStatus::Truncated;
    std::span<const uint8_t> pkt = data.first(total);
    out.ip_version = 4;
    out.packet = pkt;
    out.src = IpAddress::from_v4(ip + 12);
    out.dst = IpAddress::from_v4(ip + 16);
    uint16_t fragment = load16(ip + 6);
    if ((fragment & 0x1fff) != 0) {
        out.l4_protocol = ip[9];
        return DecodeStatus::Fragment;
    }
    return decode_transport(pkt, header, ip[9], out);
}

DecodeStatus decode_v6(std::span<const uint8_t> data, DecodedPacket& out) {
    if (data.size() < 40) return DecodeStatus::Truncated;
    const uint8_t* ip = data.data();
    size_t total = 40 + size_t(load16(ip + 4));
    if (total == 40 && data.size() > 65535 + 40) total = data.size();  // jumbogram / BIG TCP
    if (total > data.size()) return DecodeStatus::Truncated;
    std::span<const uint8_t> pkt = data.first(total);
    out.ip_version = 6;
    out.packet = pkt;
    out.src = IpAddress::from_v6(ip + 8);
    out.dst = IpAddress::from_v6(ip + 24);

    // The chain is walked to its end, however long: a receiver does so too,
    // and a segment the decoder gave up on would pass uninspected. Each
    // header takes at least 8 bytes and must fit the packet, so the walk is
    // bounded by the packet's length.
    uint8_t next = ip[6];
    size_t offset = 40;
    for (;;) {
        switch (next) {
            case IPPROTO_HOPOPTS:
            case IPPROTO_ROUTING:
            case IPPROTO_DSTOPTS:
            case 135:  // mobility
            case 139:  // HIP
            case 140:  // shim6
                if (pkt.size() < offset + 8) return DecodeStatus::Truncated;
                next = pkt[offset];
                offset += (size_t(pkt[offset + 1]) + 1) * 8;
                if (offset > pkt.size()) return DecodeStatus::Truncated;
                continue;
            case IPPROTO_AH:
                if (pkt.size() < offset + 8) return DecodeStatus::Truncated;
                next = pkt[offset];
                offset += (size_t(pkt[offset + 1]) + 2) * 4;
                if (offset > pkt.size()) return DecodeStatus::Truncated;
                continue;
            case IPPROTO_FRAGMENT: {
                if (pkt.size() < offset + 8) return DecodeStatus::Truncated;
                uint16_t fragment_offset = load16(pkt.data() + offset + 2) & 0xfff8;
                next = pkt[offset];
                offset += 8;
                if (fragment_offset != 0) {
                    out.l4_protocol = next;
                    return DecodeStatus::Fragment;
                }
                continue;
            }
            case IPPROTO_ESP:
            case IPPROTO_NONE:
                out.l4_protocol = next;
                return DecodeStatus::UnsupportedChain;
            default:
                return decode_transport(pkt, offset, next, out);
        }
    }
}

}  // namespace

std::string IpAddress::to_string() const {
    char text[INET6_ADDRSTRLEN];
    if (is_v4())
        inet_ntop(AF_INET, bytes.data() + 12, text, sizeof text);
    else
        inet_ntop(AF_INET6, bytes.data(), text, sizeof text);
    return text;
}

std::string_view decode_status_name(DecodeStatus s) {
    switch (s) {
        case DecodeStatus::Ok:
            return "ok";
        case DecodeStatus::Truncated:
            return "truncated";
        case DecodeStatus::BadVersion:
            return "bad-version";
        case DecodeStatus::BadHeader:
            return "bad-header";
        case DecodeStatus::Fragment:
            return "fragment";
        case DecodeStatus::UnsupportedChain:
            return "unsupported-chain";
    }
    return "?";
}

DecodeStatus decode_packet(std::span<const uint8_t> data, DecodedPacket& out) {
    out = DecodedPacket{};
    if (data.empty()) return DecodeStatus::Truncated;
    switch (data[0] >> 4) {
        case 4:
            return decode_v4(data, out);
        case 6:
            return decode_v6(data, out);
        default:
            return DecodeStatus::BadVersion;
    }
}

DecodeStatus decode_cut_packet(std::span<const uint8_t> data, std::vector<uint8_t>& scratch,
                               DecodedPacket& out) {
    out = DecodedPacket{};
    if (data.empty() || data.size() > 0xffff + 40) return DecodeStatus::Truncated;
    scratch.assign(data.begin(), data.end());
    if (data[0] >> 4 == 4 && data.size() >= 20 && data.size() <= 0xffff) {
        store16(scratch.data() + 2, uint16_t(data.size()));
    } else if (data[0] >> 4 == 6 && data.size() >= 40) {
        store16(scratch.data() + 4, uint16_t(data.size() - 40));
    } else {
        return decode_packet(data, out);
    }
    DecodeStatus status = decode_packet(scratch, out);
    out.cut = true;
    return status;
}

}  // namespace nfqscan
