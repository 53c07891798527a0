#include <netinet/in.h>

#include "nfqscan/flow.h"

namespace nfqscan {

FlowKey FlowKey::of(const DecodedPacket& p, bool& src_is_lo) {
    FlowKey k;
    k.protocol = p.l4_protocol;
    int order = std::memcmp(p.src.bytes.data(), p.dst.bytes.data(), 16);
    src_is_lo = order < 0 || (order == 0 && p.src_port <= p.dst_port);
    if (src_is_lo) {
        k.lo_addr = p.src, k.hi_addr = p.dst, k.lo_port = p.src_port, k.hi_port = p.dst_port;
    } else {
        k.lo_addr = p.dst, k.hi_addr = p.src, k.lo_port = p.dst_port, k.hi_port = p.src_port;
    }
    return k;
}

size_t FlowKeyHash::operator()(const FlowKey& k) const noexcept {
    // 64-bit mix over the key words; the key is canonical, so both
    // directions hash alike.
    auto word = [](const uint8_t* p) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        return w;
    };
    uint64_t h =
        0x9e3779b97f4a7c15ull ^ (uint64_t(k.lo_port) << 24 | uint64_t(k.hi_port) << 8 | k.protocol);
    for (const uint8_t* p : {k.lo_addr.bytes.data(), k.lo_addr.bytes.data() + 8,
                             k.hi_addr.bytes.data(), k.hi_addr.bytes.data() + 8}) {
        h ^= word(p);
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    return h;
}

std::string_view flow_state_name(FlowState s) {
    switch (s) {
        case FlowState::Handshake:
            return "handshake";
        case FlowState::Established:
            return "established";
        case FlowState::Closing:
            return "closing";
        case FlowState::Closed:
            return "closed";
        case FlowState::Udp:
            return "udp";
    }
    return "?";
}

std::string_view disposition_name(Disposition d) {
    switch (d) {
        case Disposition::Deciding:
            return "deciding";
        case Disposition::Claimed:
            return "claimed";
        case Disposition::Released:
            return "released";
    }
    return "?";
}

std::string_view claim_source_name(ClaimSource c) {
    switch (c) {
        case ClaimSource::None:
            return "none";
        case ClaimSource::Port:
            return "port";
        case ClaimSource::Probe:
            return "probe";
        case ClaimSource::Dpi:
            return "dpi";
        case ClaimSource::Expectation:
            return "expectation";
    }
    return "?";
}

FlowTable::FlowTable(size_t max_flows, FlowTimeouts timeouts)
    : max_flows_(max_flows), timeouts_(timeouts) {
    flows_.reserve(std::min<size_t>(max_flows, 65536));
}

FlowTable::~FlowTable() {
    // Classification state is released by the flows' own deleters.
    flows_.clear();
}

void FlowTable::set_limits(size_t max_flows, FlowTimeouts timeouts) {
    max_flows_ = max_flows;
    timeouts_ = timeouts;
    while (flows_.size() > max_flows_ && evict_one()) {
    }
}

void FlowTable::link_front(Flow& f, uint8_t cls) {
    LruList& l = lists_[cls];
    f.lru_class = cls;
    f.lru_prev = nullptr;
    f.lru_next = l.head;
    if (l.head) l.head->lru_prev = &f;
    l.head = &f;
    if (!l.tail) l.tail = &f;
}

void FlowTable::unlink(Flow& f) {
    LruList& l = lists_[f.lru_class];
    if (f.lru_prev)
        f.lru_prev->lru_next = f.lru_next;
    else
        l.head = f.lru_next;
    if (f.lru_next)
        f.lru_next->lru_prev = f.lru_prev;
    else
        l.tail = f.lru_prev;
    f.lru_prev = f.lru_next = nullptr;
}

uint8_t FlowTable::class_of(const Flow& f) const {
    if (f.disposition == Disposition::Released) return kReleased;
    switch (f.state) {
        case FlowState::Handshake:
            return kHandshake;
        case FlowState::Established:
            return kEstablished;
        case FlowState::Closing:
        case FlowState::Closed:
            return kClosing;
        case FlowState::Udp:
            return kUdp;
    }
    return kEstablished;
}

uint32_t FlowTable::timeout_of(uint8_t cls) const {
    switch (cls) {
        case kHandshake:
            return timeouts_.handshake_ms;
        case kReleased:
            return timeouts_.released_ms;
        case kClosing:
            return timeouts_.closing_ms;
        case kUdp:
            return timeouts_.udp_ms;
        default:
            return timeouts_.established_ms;
    }
}

void FlowTable::touch(Flow& f) {
    uint8_t cls = class_of(f);
    if (cls == f.lru_class && lists_[cls].head == &f) return;  // the common case: nothing to move
    unlink(f);
    link_front(f, cls);
}

void FlowTable::on_disposition_changed(Flow& f) {
    touch(f);
}

void FlowTable::remove(Flow& f, bool evicted) {
    unlink(f);
    if (on_remove_) on_remove_(f, evicted);
    flows_.erase(*f.key);
}

bool FlowTable::evict_one() {
    for (LruList& l : lists_) {
        if (l.tail) {
            ++counters_.evicted;
            remove(*l.tail, true);
            return true;
        }
    }
    return false;
}

size_t FlowTable::expire(uint64_t now_ms) {
    size_t expired = 0;
    for (uint8_t cls = 0; cls < kClassCount; ++cls) {
        uint32_t timeout = timeout_of(cls);
        while (Flow* f = lists_[cls].tail) {
            if (now_ms - f->last_seen_ms < timeout) break;
            remove(*f, false);
            ++expired;
        }
    }
    counters_.expired += expired;
    return expired;
}

void FlowTable::count_tcp_bytes(Flow& f, Direction d, const DecodedPacket& p) {
    uint8_t i = uint8_t(d), bit = uint8_t(1u << i);
    if (p.has(tcp_flag::kSyn)) {
        f.high_seq[i] = p.seq + 1;  // data starts after the SYN
        f.high_seq_known |= bit;
        return;
    }
    if (p.payload.empty()) return;
    if (!(f.high_seq_known & bit)) {
        f.high_seq[i] = p.seq;
        f.high_seq_known |= bit;
    }
    uint32_t end = p.seq + uint32_t(p.payload.size());
    if (int32_t(end - f.high_seq[i]) > 0) {
        f.bytes[i] += end - f.high_seq[i];
        f.high_seq[i] = end;
    }
}

void FlowTable::advance_tcp_state(Flow& f, Direction d, const DecodedPacket& p) {
    if (p.has(tcp_flag::kRst)) {
        f.state = FlowState::Closed;
        return;
    }
    switch (f.state) {
        case FlowState::Handshake:
            // The first ACK-bearing packet from the client completes the
            // handshake; data from either side also proves it happened.
            if ((d == Direction::ClientToServer && p.has(tcp_flag::kAck) &&
                 !p.has(tcp_flag::kSyn)) ||
                !p.payload.empty())
                f.state = FlowState::Established;
            break;
        case FlowState::Established:
        case FlowState::Closing:
            break;
        default:
            break;
    }
    if (p.has(tcp_flag::kFin)) {
        f.fin_seen |= uint8_t(1u << uint8_t(d));
        f.state = f.fin_seen == 3 ? FlowState::Closed : FlowState::Closing;
    }
}

bool FlowTable::starts_anew(const Flow& f, const DecodedPacket& p, bool src_is_lo) const {
    if (!p.has(tcp_flag::kSyn) || p.has(tcp_flag::kAck) || src_is_lo != f.client_is_lo)
        return false;
    // The client's SYN on a tuple whose connection ended (both FINs, or a
    // RST), or whose flow was released (its end skipped the queue), is a new
    // connection: it gets a new flow, classification and engine state. In a
    // handshake, a SYN at another number is a new attempt; at the same one,
    // a retransmission. An established flow keeps its state: a SYN there is
    // the stream engine's to refuse (RFC 5961 4).
    if (f.state == FlowState::Closed || f.disposition == Disposition::Released) return true;
    return f.state == FlowState::Handshake && (f.high_seq_known & 1u) && f.high_seq[0] != p.seq + 1;
}

FlowTable::Lookup FlowTable::track(const DecodedPacket& p, uint64_t now_ms,
                                   const PortMap& service_ports) {
    bool src_is_lo;
    FlowKey key = FlowKey::of(p, src_is_lo);
    auto it = flows_.find(key);
    bool created = false;
    if (it != flows_.end() && p.is_tcp() && starts_anew(it->second, p, src_is_lo)) {
        ++counters_.restarted;
        remove(it->second, false);
        it = flows_.end();
    }
    if (it == flows_.end()) {
        if (flows_.size() >= max_flows_) evict_one();
        it = flows_.try_emplace(key).first;
        Flow& f = it->second;
        f.key = &it->first;
        f.first_seen_ms = now_ms;
        bool src_is_client;
        if (p.is_tcp()) {
            bool syn = p.has(tcp_flag::kSyn);
            bool ack = p.has(tcp_flag::kAck);
            if (syn) {
                src_is_client = !ack;  // SYN from the client, SYN-ACK from the server
                f.state = FlowState::Handshake;
            } else {
                // Picked up mid-stream (e.g. after a restart): the side on a
                // service port, else the lower port, is the server.
                f.midstream = true;
                f.state = FlowState::Established;
                bool dst_service = service_ports.lookup(p.dst_port) != Service::None;
                bool src_service = service_ports.lookup(p.src_port) != Service::None;
                src_is_client = dst_service != src_service ? dst_service : p.src_port > p.dst_port;
            }
        } else {
            f.state = FlowState::Udp;
            src_is_client = true;
        }
        f.client_is_lo = src_is_client == src_is_lo;
        link_front(f, class_of(f));
        ++counters_.created;
        created = true;
    }
    Flow& f = it->second;
    Direction d =
        (src_is_lo == f.client_is_lo) ? Direction::ClientToServer : Direction::ServerToClient;
    f.last_seen_ms = now_ms;
    f.packets[uint8_t(d)]++;
    if (p.is_tcp()) {
        count_tcp_bytes(f, d, p);
        advance_tcp_state(f, d, p);
    } else {
        f.bytes[uint8_t(d)] += p.payload.size();
    }
    touch(f);
    return {&f, d, created};
}

Flow* FlowTable::find(const DecodedPacket& p) {
    bool src_is_lo;
    auto it = flows_.find(FlowKey::of(p, src_is_lo));
    return it == flows_.end() ? nullptr : &it->second;
}

size_t FlowTable::memory_bytes() const {
    // An unordered_map node holds the next pointer, the value and the cached
    // hash; plus the bucket array.
    constexpr size_t node = sizeof(void*) + sizeof(std::pair<const FlowKey, Flow>) + sizeof(size_t);
    return flows_.size() * node + flows_.bucket_count() * sizeof(void*);
}

}  // namespace nfqscan
