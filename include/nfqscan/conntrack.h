// The addresses a connection has on each side of the router's NAT, read from
// the kernel's connection tracking (ctnetlink, libnetfilter_conntrack).
//
// nfqscand sees forwarded packets between the NAT steps: a client's packet
// after any DNAT (port forward), before SNAT (masquerade); a server's packet
// after both are undone. Packets it sends itself must carry the addresses of
// one direction of the connection's conntrack entry, so that conntrack finds
// the entry and NAT translates them like the peers' own packets: toward the
// server the original tuple, toward the client the reply tuple. With no NAT
// both are what nfqscand sees; behind masquerade, the inside view of a
// packet to the client matches no direction of the entry, and the kernel
// treats it as a new connection that clashes with the real one (its port
// remapped or the packet dropped).
#pragma once

#include <cstdint>
#include <optional>

#include "nfqscan/packet.h"

struct mnl_socket;

namespace nfqscan {

struct Endpoint {
    IpAddress address;
    uint16_t port = 0;
    bool operator==(const Endpoint&) const = default;
};

struct ConnectionTuples {
    Endpoint orig_src, orig_dst;    // the client's packets, as it sent them
    Endpoint reply_src, reply_dst;  // the server's packets, as it sent them
};

// net.netfilter.nf_conntrack_tcp_be_liberal in the caller's network
// namespace (rules/nfqscan-sysctl.conf): true when on, nullopt when it cannot
// be read (conntrack not loaded yet). With it off, conntrack checks TCP
// windows before the queue, does not know the numbers the stream engine
// shifts, and marks the receivers' ACKs and nfqscand's own segments INVALID:
// behind NAT, or with the usual `ct state invalid drop`, rewritten and
// relayed flows stall.
std::optional<bool> conntrack_tcp_liberal(
    const char* path = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal");

class ConntrackLookup {
  public:
    // Opens a ctnetlink socket. Throws std::system_error (e.g. without
    // CAP_NET_ADMIN).
    ConntrackLookup();
    ~ConntrackLookup();
    ConntrackLookup(const ConntrackLookup&) = delete;
    ConntrackLookup& operator=(const ConntrackLookup&) = delete;

    // The TCP connection one of whose directions is `src -> dst` (orig: the
    // original direction; otherwise the reply direction). nullopt when
    // conntrack has no such entry.
    std::optional<ConnectionTuples> find(const Endpoint& src, const Endpoint& dst, bool orig);

  private:
    mnl_socket* socket_ = nullptr;
    uint32_t seq_ = 0;
};

}  // namespace nfqscan
