#include "nfqscan/tcp_packet.h"
#include "byte_order.h"

#include <netinet/in.h>

#include <bit>
#include <cstring>

namespace nfqscan {

namespace {

using namespace wire;

// struct virtio_net_hdr and its constants from <linux/virtio_net.h>, which
// does not compile as C++ (a member named `class`).
struct VirtioNetHdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
};
constexpr uint8_t kVirtioNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
constexpr uint8_t kVirtioGsoNone = 0;    // VIRTIO_NET_HDR_GSO_NONE
constexpr uint8_t kVirtioGsoTcpV4 = 1;   // VIRTIO_NET_HDR_GSO_TCPV4
constexpr uint8_t kVirtioGsoTcpV6 = 4;   // VIRTIO_NET_HDR_GSO_TCPV6

// The one's complement sum of `n` bytes as big-endian 16-bit words, added to
// `sum` (not folded). Eight bytes at a time in native order: the sum is
// independent of byte order up to a final swap (RFC 1071), and a rewritten
// 64 KiB GSO packet is summed on the per-packet path.
uint32_t sum_words(const uint8_t* p, size_t n, uint32_t sum = 0) {
    // Whole 64-bit words into a 128-bit sum (an add with carry each), the
    // carries folded back at the end: one's complement addition.
    unsigned __int128 wide = 0;
    for (; n >= 32; p += 32, n -= 32) {
        uint64_t v[4];
        std::memcpy(v, p, 32);
        wide += v[0];
        wide += v[1];
        wide += v[2];
        wide += v[3];
    }
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        wide += v;
    }
    uint64_t acc = uint64_t(wide) + uint64_t(wide >> 64);
    if (acc < uint64_t(wide >> 64)) ++acc;  // the end-around carry
    acc = (acc & 0xffffffff) + (acc >> 32);
    for (; n >= 2; p += 2, n -= 2) {
        uint16_t v;
        std::memcpy(&v, p, 2);
        acc += v;
    }
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    uint16_t native = uint16_t(acc);
    uint16_t big_endian;
    if constexpr (std::endian::native == std::endian::little)
        big_endian = uint16_t(native << 8 | native >> 8);
    else
        big_endian = native;
    sum += big_endian;
    if (n) sum += uint32_t(p[0]) << 8;
    return sum;
}

uint16_t fold(uint32_t sum) {
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return uint16_t(~sum);
}

// Calls `visit(kind, offset_in_options, length)` for each option.
template <class F>
void walk_options(const uint8_t* options, size_t length, F&& visit) {
    size_t i = 0;
    while (i < length) {
        uint8_t kind = options[i];
        if (kind == 0) break;  // end of list
        if (kind == 1) {       // no-op
            ++i;
            continue;
        }
        if (i + 1 >= length) break;
        uint8_t len = options[i + 1];
        if (len < 2 || i + len > length) break;
        visit(kind, i, len);
        i += len;
    }
}

}  // namespace

TcpOptions parse_tcp_options(const DecodedPacket& p) {
    TcpOptions o;
    if (!p.is_tcp() || p.l4_header_length <= 20) return o;
    const uint8_t* options = p.packet.data() + p.l3_header_length + 20;
    walk_options(options, p.l4_header_length - 20, [&](uint8_t kind, size_t at, uint8_t len) {
        if (kind == 2 && len == 4) o.mss = load16(options + at + 2);
        if (kind == 3 && len == 3) {
            o.has_window_scale = true;
            o.window_scale = std::min<uint8_t>(options[at + 2], 14);
        }
        if (kind == 4 && len == 2) o.sack_permitted = true;
        if (kind == 8 && len == 10) o.ts_value = load32(options + at + 2);
    });
    return o;
}

size_t parse_sack_blocks(const DecodedPacket& p,
                         std::array<std::pair<uint32_t, uint32_t>, 4>& out) {
    size_t n = 0;
    if (!p.is_tcp() || p.l4_header_length <= 20) return n;
    const uint8_t* options = p.packet.data() + p.l3_header_length + 20;
    walk_options(options, p.l4_header_length - 20, [&](uint8_t kind, size_t at, uint8_t len) {
        if (kind != 5 || len < 10 || (len - 2) % 8 != 0) return;
        for (size_t b = at + 2; b + 8 <= at + len && n < out.size(); b += 8)
            out[n++] = {load32(options + b), load32(options + b + 4)};
    });
    return n;
}

SegmentHeaders SegmentHeaders::of(const DecodedPacket& p) {
    SegmentHeaders h;
    h.ip_version = p.ip_version;
    h.l3_length = p.l3_header_length;
    h.l4_length = p.l4_header_length;
    h.bytes.assign(p.packet.begin(), p.packet.begin() + p.l3_header_length + p.l4_header_length);
    const uint8_t* options = h.bytes.data() + h.l3_length + 20;
    walk_options(options, h.l4_length - 20u, [&](uint8_t kind, size_t at, uint8_t len) {
        if (kind == 8 && len == 10) h.ts_value_ = load32(options + at + 2);
    });
    return h;
}

void SegmentHeaders::set_endpoints(const IpAddress& src, uint16_t src_port, const IpAddress& dst,
                                   uint16_t dst_port) {
    if (ip_version == 4) {
        std::memcpy(bytes.data() + 12, src.bytes.data() + 12, 4);
        std::memcpy(bytes.data() + 16, dst.bytes.data() + 12, 4);
    } else {
        std::memcpy(bytes.data() + 8, src.bytes.data(), 16);
        std::memcpy(bytes.data() + 24, dst.bytes.data(), 16);
    }
    uint8_t* tcp = bytes.data() + l3_length;
    tcp[0] = uint8_t(src_port >> 8);
    tcp[1] = uint8_t(src_port);
    tcp[2] = uint8_t(dst_port >> 8);
    tcp[3] = uint8_t(dst_port);
}

void SegmentHeaders::clear_urgent() {
    uint8_t* tcp = bytes.data() + l3_length;
    tcp[13] &= uint8_t(~tcp_flag::kUrg);
    tcp[18] = tcp[19] = 0;
}

void SegmentHeaders::clear_syn() {
    uint8_t* tcp = bytes.data() + l3_length;
    tcp[13] &= uint8_t(~tcp_flag::kSyn);
}

void SegmentHeaders::strip_sack() {
    const uint8_t* options = bytes.data() + l3_length + 20;
    size_t length = l4_length - 20u;
    std::vector<uint8_t> kept;
    bool had_sack = false;
    walk_options(options, length, [&](uint8_t kind, size_t at, uint8_t len) {
        if (kind == 5) {
            had_sack = true;
            return;
        }
        kept.insert(kept.end(), options + at, options + at + len);
    });
    if (!had_sack) return;
    while (kept.size() % 4)
        kept.insert(kept.begin(), 1);  // NOPs in front, as Linux aligns
    std::vector<uint8_t> out(bytes.begin(), bytes.begin() + l3_length + 20);
    out.insert(out.end(), kept.begin(), kept.end());
    l4_length = uint16_t(20 + kept.size());
    out[l3_length + 12] = uint8_t((l4_length / 4) << 4 | (out[l3_length + 12] & 0x0f));
    bytes = std::move(out);
}

uint32_t SegmentHeaders::ack() const {
    return load32(bytes.data() + l3_length + 8);
}
uint32_t SegmentHeaders::seq() const {
    return load32(bytes.data() + l3_length + 4);
}
uint16_t SegmentHeaders::window() const {
    return load16(bytes.data() + l3_length + 14);
}

void fix_checksums(std::span<uint8_t> packet, uint8_t ip_version, uint16_t l3_length) {
    uint8_t* tcp = packet.data() + l3_length;
    size_t tcp_length = packet.size() - l3_length;
    tcp[16] = tcp[17] = 0;
    uint32_t sum;
    if (ip_version == 4) {
        uint8_t* ip = packet.data();
        ip[10] = ip[11] = 0;
        store16(ip + 10, fold(sum_words(ip, size_t(ip[0] & 0x0f) * 4)));
        sum = sum_words(ip + 12, 8);  // source and destination
        sum += IPPROTO_TCP + uint32_t(tcp_length);
    } else {
        sum = sum_words(packet.data() + 8, 32);
        sum += uint32_t(tcp_length >> 16) + uint32_t(tcp_length & 0xffff) + IPPROTO_TCP;
    }
    store16(tcp + 16, fold(sum_words(tcp, tcp_length, sum)));
}

bool tcp_checksum_valid(std::span<const uint8_t> packet, uint8_t ip_version, uint16_t l3_length) {
    if (packet.size() < size_t(l3_length) + 20) return false;
    const uint8_t* tcp = packet.data() + l3_length;
    size_t tcp_length = packet.size() - l3_length;
    uint32_t sum;
    if (ip_version == 4) {
        sum = sum_words(packet.data() + 12, 8) + IPPROTO_TCP + uint32_t(tcp_length);
    } else {
        sum = sum_words(packet.data() + 8, 32);
        sum += uint32_t(tcp_length >> 16) + uint32_t(tcp_length & 0xffff) + IPPROTO_TCP;
    }
    // Summed with its own checksum field, a valid segment folds to zero.
    return fold(sum_words(tcp, tcp_length, sum)) == 0;
}

std::vector<uint8_t> build_control_segment(const SegmentHeaders& from, const ControlSegment& c) {
    std::vector<uint8_t> out(from.bytes.begin(), from.bytes.begin() + from.l3_length + 20);
    const uint8_t* options = from.bytes.data() + from.l3_length + 20;
    if (!c.rst) {
        walk_options(options, from.l4_length - 20u, [&](uint8_t kind, size_t at, uint8_t len) {
            if (kind == 8 && len == 10) {
                out.insert(out.end(), {1, 1});
                out.insert(out.end(), options + at, options + at + len);
                if (c.ts_value) store32(out.data() + out.size() - 8, *c.ts_value);
                if (c.ts_echo) store32(out.data() + out.size() - 4, *c.ts_echo);
            }
        });
        size_t n = std::min<size_t>(c.sack_blocks.size(), 3);
        if (n > 0) {
            out.insert(out.end(), {1, 1, 5, uint8_t(2 + 8 * n)});
            for (size_t i = 0; i < n; ++i) {
                uint8_t edge[8];
                store32(edge, c.sack_blocks[i].first);
                store32(edge + 4, c.sack_blocks[i].second);
                out.insert(out.end(), edge, edge + 8);
            }
        }
    }
    uint8_t* tcp = out.data() + from.l3_length;
    size_t tcp_length = out.size() - from.l3_length;
    store32(tcp + 4, c.seq);
    store32(tcp + 8, c.rst ? 0 : c.ack);
    tcp[12] = uint8_t((tcp_length / 4) << 4);
    tcp[13] = c.rst ? tcp_flag::kRst : tcp_flag::kAck;
    if (c.rst) store16(tcp + 14, 0);
    if (c.window && !c.rst) store16(tcp + 14, *c.window);
    if (from.ip_version == 4)
        store16(out.data() + 2, uint16_t(out.size()));
    else
        store16(out.data() + 4, uint16_t(out.size() - 40));
    fix_checksums(out, from.ip_version, from.l3_length);
    return out;
}

namespace {

// Writes the template's headers with the rewrite applied into `out` from
// `at` on (the IP packet starts there), lengths set, checksums not.
void write_segment(const SegmentHeaders& h, const SegmentRewrite& r, std::vector<uint8_t>& out,
                   size_t at) {
    out.reserve(at + h.bytes.size() + r.payload.size());
    out.insert(out.end(), h.bytes.begin(), h.bytes.end());
    out.insert(out.end(), r.payload.begin(), r.payload.end());
    uint8_t* ip = out.data() + at;
    uint8_t* tcp = ip + h.l3_length;
    store32(tcp + 4, r.seq);
    if (r.ack) store32(tcp + 8, *r.ack);
    if (r.window) store16(tcp + 14, *r.window);
    tcp[13] = r.fin ? uint8_t(tcp[13] | tcp_flag::kFin) : uint8_t(tcp[13] & ~tcp_flag::kFin);
    if ((r.sack_edge || r.ts_value) && h.l4_length > 20) {
        walk_options(tcp + 20, h.l4_length - 20, [&](uint8_t kind, size_t at, uint8_t len) {
            if (kind == 8 && len == 10 && r.ts_value) store32(tcp + 20 + at + 2, *r.ts_value);
            if (kind != 5 || !r.sack_edge) return;
            for (size_t edge = at + 2; edge + 4 <= size_t(at) + len; edge += 4)
                store32(tcp + 20 + edge, r.sack_edge(load32(tcp + 20 + edge)));
        });
    }
    size_t length = out.size() - at;
    if (h.ip_version == 4) {
        store16(ip + 2, uint16_t(length));
    } else {
        store16(ip + 4, uint16_t(length - 40));
    }
}

}  // namespace

std::vector<uint8_t> build_segment(const SegmentHeaders& h, const SegmentRewrite& r) {
    std::vector<uint8_t> out;
    write_segment(h, r, out, 0);
    fix_checksums(out, h.ip_version, h.l3_length);
    return out;
}

std::vector<uint8_t> build_gso_frame(const SegmentHeaders& h, const SegmentRewrite& r,
                                     uint16_t segment_size) {
    std::vector<uint8_t> out(kVirtioNetHdrLength, 0);
    write_segment(h, r, out, kVirtioNetHdrLength);
    std::span<uint8_t> packet(out.data() + kVirtioNetHdrLength, out.size() - kVirtioNetHdrLength);
    uint8_t* ip = packet.data();
    uint8_t* tcp = ip + h.l3_length;
    size_t tcp_length = packet.size() - h.l3_length;
    uint32_t sum;
    if (h.ip_version == 4) {
        ip[8] = uint8_t(std::min(ip[8] + 1, 255));
        ip[10] = ip[11] = 0;
        store16(ip + 10, fold(sum_words(ip, size_t(ip[0] & 0x0f) * 4)));
        sum = sum_words(ip + 12, 8) + IPPROTO_TCP + uint32_t(tcp_length);
    } else {
        ip[7] = uint8_t(std::min(ip[7] + 1, 255));
        sum = sum_words(ip + 8, 32) + uint32_t(tcp_length >> 16) + uint32_t(tcp_length & 0xffff) +
              IPPROTO_TCP;
    }
    // The pseudo-header sum, folded but not complemented: the kernel (or the
    // NIC) adds the TCP header and payload of each segment and complements.
    store16(tcp + 16, uint16_t(~fold(sum)));

    VirtioNetHdr vh{};
    vh.flags = kVirtioNeedsCsum;
    vh.csum_start = h.l3_length;
    vh.csum_offset = 16;  // offsetof(struct tcphdr, check)
    vh.hdr_len = uint16_t(h.l3_length + h.l4_length);
    if (r.payload.size() > segment_size) {
        vh.gso_type = h.ip_version == 4 ? kVirtioGsoTcpV4 : kVirtioGsoTcpV6;
        vh.gso_size = segment_size;
    } else {
        vh.gso_type = kVirtioGsoNone;
    }
    static_assert(sizeof vh == kVirtioNetHdrLength);
    // Native byte order: a TUN device's legacy virtio header (no
    // TUNSETVNETLE/BE) is in the host's order.
    std::memcpy(out.data(), &vh, sizeof vh);
    return out;
}

}  // namespace nfqscan
