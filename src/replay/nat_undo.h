// Undoing NAT in a router's capture, so that a replay sees each flow as
// nfqscand sees it on the router (between DNAT and SNAT: the client's own
// address and the real server's). A `tcpdump -i any` capture holds each
// packet as it arrived: the client's towards the address it connected to
// (a port forward: the router's), the server's towards the address it was
// shown (masquerade: the router's). The two halves are paired by the
// handshake: a SYN-ACK acknowledges its SYN's initial sequence number, and
// NAT changes one end of the pair, never both. The pairs are learnt over the
// whole capture first (a port forward's SYN comes before the answer that
// tells where it went), then each packet of a paired half gets the
// destination nfqscand would have seen.
// Checksums are not fixed: nothing downstream checks them (as with GSO
// packets from the queue). Bounded: a capture of SYNs only (a scan, a
// flood) cannot grow it past kMaxEntries.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <tuple>
#include <vector>

#include "nfqscan/packet.h"

namespace nfqscan {

class NatUndo {
  public:
    static constexpr size_t kMaxEntries = 1 << 16;

    // The first pass: pairs the handshakes of the capture.
    void learn(const DecodedPacket& p);
    // The second: `ip`, decoded as `p`, as nfqscand would have seen it —
    // `ip` itself, or a copy in `scratch` with the destination changed.
    std::span<const uint8_t> apply(std::span<const uint8_t> ip, const DecodedPacket& p,
                                   std::vector<uint8_t>& scratch);
    uint64_t flows() const { return flows_; }          // handshakes paired across NAT
    uint64_t rewritten() const { return rewritten_; }  // packets given another destination

  private:
    struct Endpoint {
        IpAddress address;
        uint16_t port = 0;
        auto operator<=>(const Endpoint&) const = default;
    };
    using Half = std::pair<Endpoint, Endpoint>;  // source, destination as captured

    // SYNs by (destination, ISN + 1) and by (source, ISN + 1).
    std::map<std::tuple<Endpoint, uint32_t>, Half> by_server_, by_client_;
    std::map<Half, Endpoint> destination_;  // a half's destination as nfqscand saw it
    uint64_t flows_ = 0, rewritten_ = 0;
};

}  // namespace nfqscan
