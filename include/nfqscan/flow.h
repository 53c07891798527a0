// Flow tracking, one FlowTable per queue worker (shared-nothing): both
// directions of a TCP or UDP conversation map to one Flow, which follows the
// TCP state from the handshake to FIN/RST, carries counters and the
// classification (nDPI label, claimed service, or released to the fast path).
//
// Memory is bounded: at most `max_flows` entries; beyond it a flow is evicted
// in this order: handshakes that never completed (a SYN flood fills only this
// class), released flows, closing flows, UDP, then the least recently active
// established flow. Each class is an LRU list with its own idle timeout, so
// expiry and eviction are O(1) per flow.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "nfqscan/config.h"
#include "nfqscan/packet.h"
#include "nfqscan/service.h"

namespace nfqscan {

// Canonical key: the lower endpoint first, so both directions find one entry.
struct FlowKey {
    IpAddress lo_addr, hi_addr;
    uint16_t lo_port = 0, hi_port = 0;
    uint8_t protocol = 0;

    // Builds the key of `p`; `src_is_lo` tells which side sent it.
    static FlowKey of(const DecodedPacket& p, bool& src_is_lo);
    bool operator==(const FlowKey&) const = default;
};

struct FlowKeyHash {
    size_t operator()(const FlowKey& k) const noexcept;
};

enum class Direction : uint8_t { ClientToServer = 0, ServerToClient = 1 };

enum class FlowState : uint8_t { Handshake, Established, Closing, Closed, Udp };
enum class Disposition : uint8_t { Deciding, Claimed, Released };
enum class ClaimSource : uint8_t { None, Port, Probe, Dpi, Expectation };

std::string_view flow_state_name(FlowState s);
std::string_view disposition_name(Disposition d);
std::string_view claim_source_name(ClaimSource c);

// Classification state needed only while a flow is young (nDPI flow, probe
// buffers); owned by the flow and freed as soon as the flow is decided and
// labelled, so idle flows stay small. Defined by the worker's classifier.
struct FlowClassification;
struct FlowClassificationDeleter {
    void operator()(FlowClassification* c) const;
};

// The stream engine of a flow whose bytes an inspector may rewrite; most
// claimed flows need none yet. Defined in flow_stream.h.
class FlowStream;
struct FlowStreamDeleter {
    void operator()(FlowStream* s) const;
};

// The control session of an FTP data connection (ftp_expectations.h).
class FtpSession;

// The inspector host of a flow in the stream engine (flow_inspection.h).
class FlowInspection;
struct FlowInspectionDeleter {
    void operator()(FlowInspection* i) const;
};

struct Flow {
    const FlowKey* key = nullptr;  // points into the table's node: stable
    bool client_is_lo = true;
    bool midstream = false;  // first packet seen was not a SYN
    FlowState state = FlowState::Handshake;
    Disposition disposition = Disposition::Deciding;
    ClaimSource claimed_by = ClaimSource::None;
    Service service = Service::None;
    // An inspector wanted the stream engine on this flow but the streams'
    // memory cap was reached (overflow policy "drop": its packets are
    // dropped until the cap allows, while the handshake lasts).
    bool stream_refused = false;
    uint8_t fin_seen = 0;         // bit per Direction
    uint8_t payload_packets = 0;  // counted while classifying, saturating
    uint16_t dpi_master = 0, dpi_app = 0;
    uint64_t first_seen_ms = 0, last_seen_ms = 0;
    uint64_t packets[2] = {0, 0};
    // Payload bytes per Direction. For TCP, the advance of the highest
    // sequence number seen: what the sender's application sent, each byte
    // once however often it was retransmitted.
    uint64_t bytes[2] = {0, 0};
    uint32_t high_seq[2] = {0, 0};
    uint8_t high_seq_known = 0;  // bit per Direction
    std::unique_ptr<FlowClassification, FlowClassificationDeleter> classification;
    // Claimed by an FTP expectation: the control session whose data it carries.
    std::shared_ptr<FtpSession> ftp_data;
    // Declared before the stream, which holds its transforms: destroyed after it.
    std::unique_ptr<FlowInspection, FlowInspectionDeleter> inspection;
    std::unique_ptr<FlowStream, FlowStreamDeleter> stream;

    // LRU links of the class list the flow is on.
    Flow* lru_prev = nullptr;
    Flow* lru_next = nullptr;
    uint8_t lru_class = 0;

    const IpAddress& client() const { return client_is_lo ? key->lo_addr : key->hi_addr; }
    const IpAddress& server() const { return client_is_lo ? key->hi_addr : key->lo_addr; }
    uint16_t client_port() const { return client_is_lo ? key->lo_port : key->hi_port; }
    uint16_t server_port() const { return client_is_lo ? key->hi_port : key->lo_port; }
};

struct FlowTimeouts {
    uint32_t handshake_ms = 30'000;
    uint32_t established_ms = 3'600'000;
    uint32_t closing_ms = 30'000;
    uint32_t udp_ms = 60'000;
    uint32_t released_ms = 30'000;
};

struct FlowTableCounters {
    uint64_t created = 0;
    uint64_t expired = 0;
    uint64_t evicted = 0;
    uint64_t restarted = 0;  // replaced by a new connection on the same tuple (a new SYN)
};

class FlowTable {
  public:
    FlowTable(size_t max_flows, FlowTimeouts timeouts);
    ~FlowTable();
    FlowTable(const FlowTable&) = delete;
    FlowTable& operator=(const FlowTable&) = delete;

    struct Lookup {
        Flow* flow;
        Direction direction;
        bool created;
    };
    // Finds the flow of `p` or creates it (evicting one when full), then
    // advances its TCP state, counters and idle time. `service_ports` helps
    // guess the client of a flow picked up mid-stream.
    Lookup track(const DecodedPacket& p, uint64_t now_ms, const PortMap& service_ports);

    // The flow of `p` (by addresses and ports), if the table has it; nothing
    // changes.
    Flow* find(const DecodedPacket& p);

    // The flow's verdict changed: it moves to the list that times it out.
    void on_disposition_changed(Flow& flow);

    // Drops flows idle beyond their class's timeout. Returns how many.
    size_t expire(uint64_t now_ms);

    void set_limits(size_t max_flows, FlowTimeouts timeouts);
    size_t size() const { return flows_.size(); }
    size_t max_flows() const { return max_flows_; }
    const FlowTableCounters& counters() const { return counters_; }
    // Bytes held by the table itself (entries and buckets), excluding the
    // classification state, which its owner accounts.
    size_t memory_bytes() const;

    // Called for each flow that leaves the table (expiry, eviction, clear).
    void set_on_remove(std::function<void(const Flow&, bool evicted)> callback) {
        on_remove_ = std::move(callback);
    }

    template <class F>
    void for_each(F&& f) const {
        for (const auto& [key, flow] : flows_)
            f(flow);
    }

  private:
    enum LruClass : uint8_t { kHandshake, kReleased, kClosing, kUdp, kEstablished, kClassCount };
    struct LruList {
        Flow* head = nullptr;  // most recent
        Flow* tail = nullptr;  // least recent
    };

    void link_front(Flow& f, uint8_t cls);
    void unlink(Flow& f);
    void touch(Flow& f);
    uint8_t class_of(const Flow& f) const;
    uint32_t timeout_of(uint8_t cls) const;
    void remove(Flow& f, bool evicted);
    bool evict_one();
    void advance_tcp_state(Flow& f, Direction d, const DecodedPacket& p);
    // Whether the SYN `p` begins a new connection on `f`'s tuple.
    bool starts_anew(const Flow& f, const DecodedPacket& p, bool src_is_lo) const;
    void count_tcp_bytes(Flow& f, Direction d, const DecodedPacket& p);

    std::unordered_map<FlowKey, Flow, FlowKeyHash> flows_;
    LruList lists_[kClassCount];
    size_t max_flows_;
    FlowTimeouts timeouts_;
    FlowTableCounters counters_;
    std::function<void(const Flow&, bool)> on_remove_;
};

}  // namespace nfqscan
