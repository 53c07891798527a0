// The relay device: a TUN device (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR) in the
// router's namespace through which the relay's output enters the kernel as
// if it had been received, up to 64 KiB per write: a GSO frame
// (build_gso_frame in tcp_packet.h). The kernel forwards it like any packet
// (PREROUTING, conntrack, routing, FORWARD, POSTROUTING) and keeps it whole
// to the egress device: veth hands it to the receiver as one skb, a NIC
// segments it (TSO) or the kernel does just before the driver. A raw socket
// cannot send such a frame: through it the relay paid a route lookup, the
// OUTPUT hooks and the receiver's per-segment work for every MSS.
//
// One queue per worker (IFF_MULTI_QUEUE): each worker writes to its own file
// descriptor, nothing is shared. Frames from the device carry no mark; the
// rulesets give them the inject mark on ingress from it (prerouting), so
// they are never queued.
//
// The kernel's reverse path filter drops them unless it is off for the
// device: their source is routed through another interface, and the device
// has no address (so even loose mode, which needs one, drops them). The
// effective value is the larger of conf/all and conf/<device>: with
// conf/all/rp_filter at 1 or 2 IPv4 frames cannot use the device.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace nfqscan {

struct TunCounters {
    uint64_t frames = 0;  // written
    uint64_t failed = 0;  // write errors (the relay retransmits)
};

// One queue of the device.
class TunQueue {
  public:
    explicit TunQueue(int fd) : fd_(fd) {}
    ~TunQueue();
    TunQueue(const TunQueue&) = delete;
    TunQueue& operator=(const TunQueue&) = delete;

    // Writes one frame (virtio_net_hdr + IP packet). False: counted as
    // failed, errno says why.
    bool send(std::span<const uint8_t> frame);
    const TunCounters& counters() const { return counters_; }

  private:
    int fd_;
    TunCounters counters_;
};

struct RelayDevice {
    std::string name;
    int ifindex = 0;
    bool ipv4 = false;  // the families whose frames the kernel takes from it
    bool ipv6 = false;
    std::vector<std::unique_ptr<TunQueue>> queues;  // one per worker
    std::vector<std::string> warnings;              // a family left out, and why
};

// Creates the device (or attaches to it) with `queues` queues, turns on GSO
// input (TUNSETOFFLOAD: checksum offload, TSO4, TSO6), sets its rp_filter to
// 0 and its IPv6 address generation to none (nothing leaves through it)
// over rtnetlink, and brings it up. Throws std::runtime_error saying what
// failed (no /dev/net/tun, no CAP_NET_ADMIN, neither family usable).
RelayDevice open_relay_device(const std::string& name, size_t queues);

// Something may reset the device's rp_filter after it was created (udev runs
// systemd-sysctl for every new interface, applying `net.ipv4.conf.*.rp_filter
// = 2` on Debian): sets it to 0 again. Returns what it found ("" when all
// is well), for the log.
std::string recheck_relay_device(const RelayDevice& device);

}  // namespace nfqscan
