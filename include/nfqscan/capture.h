// Reading packet captures for a replay (nfqscand --replay): pcap and pcapng
// files through libpcap, and the link-layer headers in front of the IP
// packet (Ethernet with VLAN tags, Linux cooked SLL and SLL2, raw IP,
// BSD loopback) parsed here, bounded by the captured bytes, every refusal a
// named status. A cooked capture (tcpdump -i any) says which packets the
// host sent: those are skipped, so a router's capture gives each packet once,
// as it arrived (see README, Replay).
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

struct pcap;

namespace nfqscan {

enum class FrameStatus : uint8_t {
    Ok,
    Truncated,        // shorter than its link-layer header
    NotIp,            // ARP, LLDP, ...: nothing for nfqscand
    Outgoing,         // a cooked capture's copy of a packet the host sent
    UnsupportedLink,  // a link type this reader does not know
};

std::string_view frame_status_name(FrameStatus s);

struct CaptureFrame {
    uint16_t ethertype = 0;       // 0x0800 or 0x86dd when Ok
    std::span<const uint8_t> ip;  // from the IP header to the end of the captured bytes
    uint32_t link_header_length = 0;
    // A cooked capture's frame that came in on a device without a link
    // layer (ARPHRD_NONE: a TUN device such as nfqscand's relay device, or
    // a VPN tunnel).
    bool tunnel = false;
};

// The IP packet inside `data`, a frame of libpcap's link type `dlt`
// (pcap_datalink()).
FrameStatus parse_frame(int dlt, std::span<const uint8_t> data, CaptureFrame& out);
// Whether parse_frame() knows `dlt`.
bool supported_link_type(int dlt);

struct CaptureError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct CapturedPacket {
    uint64_t time_us = 0;           // the capture's timestamp, microseconds since the epoch
    std::span<const uint8_t> data;  // the captured bytes (valid until the next next())
    uint32_t wire_length = 0;       // the frame's length on the wire (> data.size(): snap length)
};

class CaptureReader {
  public:
    // Opens a pcap or pcapng file. Throws CaptureError with libpcap's reason.
    explicit CaptureReader(const std::string& path);
    // Reads from `file` (owned from here on, closed with the reader), e.g. a
    // capture in memory through fmemopen(): tests and the fuzz target.
    CaptureReader(FILE* file, std::string name);
    ~CaptureReader();
    CaptureReader(const CaptureReader&) = delete;
    CaptureReader& operator=(const CaptureReader&) = delete;

    int link_type() const { return dlt_; }
    std::string link_type_name() const;
    // The next packet; false at the end, or at a read error (a file cut
    // short, a bad record length), which error() then tells.
    bool next(CapturedPacket& out);
    const std::string& error() const { return error_; }

  private:
    pcap* pcap_ = nullptr;
    int dlt_ = 0;
    std::string name_;
    std::string error_;
};

}  // namespace nfqscan
