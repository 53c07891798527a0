#include "nat_undo.h"

#include <cstring>

namespace nfqscan {

namespace {

void put_destination(std::vector<uint8_t>& packet, const DecodedPacket& p, const IpAddress& a,
                     uint16_t port) {
    if (p.ip_version == 4)
        std::memcpy(packet.data() + 16, a.bytes.data() + 12, 4);
    else
        std::memcpy(packet.data() + 24, a.bytes.data(), 16);
    packet[p.l3_header_length + 2] = uint8_t(port >> 8);
    packet[p.l3_header_length + 3] = uint8_t(port);
}

}  // namespace

void NatUndo::learn(const DecodedPacket& p) {
    if (!p.is_tcp()) return;
    const Endpoint src{p.src, p.src_port}, dst{p.dst, p.dst_port};
    const bool syn = p.has(tcp_flag::kSyn), ack = p.has(tcp_flag::kAck);
    if (syn && !ack) {
        if (by_server_.size() >= kMaxEntries) {
            by_server_.clear();
            by_client_.clear();
        }
        by_server_[{dst, p.seq + 1}] = {src, dst};
        by_client_[{src, p.seq + 1}] = {src, dst};
    } else if (syn && ack && destination_.find({src, dst}) == destination_.end()) {
        // The SYN this answers carried the number it acknowledges, and went
        // to this sender (masquerade changed its source) or came from this
        // receiver (a port forward changed its destination).
        const Half* client = nullptr;
        if (auto it = by_server_.find({src, p.ack}); it != by_server_.end())
            client = &it->second;
        else if (auto it = by_client_.find({dst, p.ack}); it != by_client_.end())
            client = &it->second;
        if (client && !(client->first == dst && client->second == src)) {
            if (destination_.size() + 2 > kMaxEntries) destination_.clear();
            destination_[*client] = src;               // client -> the real server
            destination_[{src, dst}] = client->first;  // server -> the real client
            ++flows_;
        }
    }
}

std::span<const uint8_t> NatUndo::apply(std::span<const uint8_t> ip, const DecodedPacket& p,
                                        std::vector<uint8_t>& scratch) {
    if (!p.is_tcp() || destination_.empty()) return ip;
    const Endpoint src{p.src, p.src_port}, dst{p.dst, p.dst_port};
    auto it = destination_.find({src, dst});
    if (it == destination_.end() || it->second == dst ||
        it->second.address.is_v4() != (p.ip_version == 4))
        return ip;
    if (p.cut || ip.size() < size_t(p.l3_header_length) + 4) return ip;
    scratch.assign(ip.begin(), ip.end());
    put_destination(scratch, p, it->second.address, it->second.port);
    ++rewritten_;
    return scratch;
}

}  // namespace nfqscan
