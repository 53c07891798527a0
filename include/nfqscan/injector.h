// Raw-socket injection of segments nfqscand writes itself (output a rewrite
// could not fit into the packet it answered; later: relay and protocol
// replies). Every packet carries the inject mark, which the rulesets never
// queue, so nfqscand never sees its own packets.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace nfqscan {

struct InjectorCounters {
    uint64_t sent = 0;
    uint64_t failed = 0;
    uint64_t busy = 0;  // dropped: the socket's send buffer was full (never waited for)
};

class RawInjector {
  public:
    // Opens the IPv4 and IPv6 raw sockets (CAP_NET_RAW; the mark needs
    // CAP_NET_ADMIN) with `send_buffer` bytes of SO_SNDBUF each (the kernel
    // keeps a floor of a few KiB). Throws std::system_error.
    explicit RawInjector(uint32_t mark, int send_buffer = 4 << 20);
    ~RawInjector();
    RawInjector(const RawInjector&) = delete;
    RawInjector& operator=(const RawInjector&) = delete;

    // Sends a complete IP packet (headers included, checksums set).
    bool send(std::span<const uint8_t> packet);
    // Sends them all, in order, with as few system calls as the families
    // allow (sendmmsg): a relay writes hundreds of segments per wakeup.
    void send_all(std::span<const std::vector<uint8_t>> packets);
    const InjectorCounters& counters() const { return counters_; }

  private:
    int v4_ = -1;
    int v6_ = -1;
    InjectorCounters counters_;
};

}  // namespace nfqscan
