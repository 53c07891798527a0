#include "nfqscan/capture.h"

#include <pcap/pcap.h>

namespace nfqscan {

namespace {

constexpr uint16_t kEthIpv4 = 0x0800, kEthIpv6 = 0x86dd;
constexpr uint16_t kEthVlan = 0x8100, kEthQinQ = 0x88a8;
constexpr int kMaxVlanTags = 2;
constexpr uint8_t kPacketOutgoing = 4;    // PACKET_OUTGOING, <linux/if_packet.h>
constexpr uint16_t kArphrdNone = 0xfffe;  // ARPHRD_NONE, <linux/if_arp.h>: TUN devices

uint16_t be16(const uint8_t* p) {
    return uint16_t(p[0] << 8 | p[1]);
}

FrameStatus ip_at(std::span<const uint8_t> data, size_t offset, uint16_t ethertype,
                  CaptureFrame& out) {
    if (ethertype != kEthIpv4 && ethertype != kEthIpv6) return FrameStatus::NotIp;
    if (data.size() <= offset) return FrameStatus::Truncated;
    out.ethertype = ethertype;
    out.link_header_length = uint32_t(offset);
    out.ip = data.subspan(offset);
    return FrameStatus::Ok;
}

// No link header: the version nibble says the family.
FrameStatus raw_ip(std::span<const uint8_t> data, size_t offset, CaptureFrame& out) {
    if (data.size() <= offset) return FrameStatus::Truncated;
    switch (data[offset] >> 4) {
        case 4:
            return ip_at(data, offset, kEthIpv4, out);
        case 6:
            return ip_at(data, offset, kEthIpv6, out);
        default:
            return FrameStatus::NotIp;
    }
}

FrameStatus ethernet(std::span<const uint8_t> data, CaptureFrame& out) {
    size_t offset = 12;
    if (data.size() < offset + 2) return FrameStatus::Truncated;
    uint16_t type = be16(&data[offset]);
    for (int tags = 0; (type == kEthVlan || type == kEthQinQ) && tags < kMaxVlanTags; ++tags) {
        offset += 4;
        if (data.size() < offset + 2) return FrameStatus::Truncated;
        type = be16(&data[offset]);
    }
    return ip_at(data, offset + 2, type, out);
}

// SLL: packet type, ARPHRD type, address length, 8 address bytes, protocol.
FrameStatus cooked(std::span<const uint8_t> data, CaptureFrame& out) {
    constexpr size_t kHeader = 16;
    if (data.size() < kHeader) return FrameStatus::Truncated;
    if (be16(&data[0]) == kPacketOutgoing) return FrameStatus::Outgoing;
    out.tunnel = be16(&data[2]) == kArphrdNone;
    return ip_at(data, kHeader, be16(&data[14]), out);
}

// SLL2: protocol, reserved, ifindex, ARPHRD type, packet type, address
// length, 8 address bytes.
FrameStatus cooked2(std::span<const uint8_t> data, CaptureFrame& out) {
    constexpr size_t kHeader = 20;
    if (data.size() < kHeader) return FrameStatus::Truncated;
    if (data[10] == kPacketOutgoing) return FrameStatus::Outgoing;
    out.tunnel = be16(&data[8]) == kArphrdNone;
    return ip_at(data, kHeader, be16(&data[0]), out);
}

// BSD loopback: the address family in 4 bytes (host order for DLT_NULL,
// network order for DLT_LOOP); the version nibble is as good and needs no
// table of the BSDs' AF_INET6 values.
FrameStatus loopback(std::span<const uint8_t> data, CaptureFrame& out) {
    return raw_ip(data, 4, out);
}

}  // namespace

std::string_view frame_status_name(FrameStatus s) {
    switch (s) {
        case FrameStatus::Ok:
            return "ok";
        case FrameStatus::Truncated:
            return "truncated";
        case FrameStatus::NotIp:
            return "not-ip";
        case FrameStatus::Outgoing:
            return "outgoing";
        case FrameStatus::UnsupportedLink:
            return "unsupported-link";
    }
    return "?";
}

bool supported_link_type(int dlt) {
    switch (dlt) {
        case DLT_EN10MB:
        case DLT_LINUX_SLL:
        case DLT_LINUX_SLL2:
        case DLT_RAW:
        case DLT_IPV4:
        case DLT_IPV6:
        case DLT_NULL:
        case DLT_LOOP:
            return true;
        default:
            return false;
    }
}

FrameStatus parse_frame(int dlt, std::span<const uint8_t> data, CaptureFrame& out) {
    out = {};
    switch (dlt) {
        case DLT_EN10MB:
            return ethernet(data, out);
        case DLT_LINUX_SLL:
            return cooked(data, out);
        case DLT_LINUX_SLL2:
            return cooked2(data, out);
        case DLT_RAW:
        case DLT_IPV4:
        case DLT_IPV6:
            return raw_ip(data, 0, out);
        case DLT_NULL:
        case DLT_LOOP:
            return loopback(data, out);
        default:
            return FrameStatus::UnsupportedLink;
    }
}

CaptureReader::CaptureReader(const std::string& path) : name_(path) {
    char error[PCAP_ERRBUF_SIZE] = "";
    pcap_ = pcap_open_offline(path.c_str(), error);
    if (!pcap_) {
        // libpcap names the file itself when it could not open it.
        std::string reason = error;
        throw CaptureError(reason.starts_with(path) ? reason : path + ": " + reason);
    }
    dlt_ = pcap_datalink(pcap_);
}

CaptureReader::CaptureReader(FILE* file, std::string name) : name_(std::move(name)) {
    char error[PCAP_ERRBUF_SIZE] = "";
    pcap_ = pcap_fopen_offline(file, error);
    if (!pcap_) {
        std::fclose(file);
        throw CaptureError(name_ + ": " + error);
    }
    dlt_ = pcap_datalink(pcap_);
}

CaptureReader::~CaptureReader() {
    if (pcap_) pcap_close(pcap_);
}

std::string CaptureReader::link_type_name() const {
    const char* name = pcap_datalink_val_to_name(dlt_);
    return name ? name : "DLT " + std::to_string(dlt_);
}

bool CaptureReader::next(CapturedPacket& out) {
    pcap_pkthdr* header = nullptr;
    const u_char* data = nullptr;
    int rc = pcap_next_ex(pcap_, &header, &data);
    if (rc == PCAP_ERROR_BREAK) return false;  // the end of the file
    if (rc != 1) {
        error_ = name_ + ": " + pcap_geterr(pcap_);
        return false;
    }
    out.time_us = uint64_t(header->ts.tv_sec) * 1'000'000 + uint64_t(header->ts.tv_usec);
    out.data = {data, header->caplen};
    out.wire_length = header->len;
    return true;
}

}  // namespace nfqscan
