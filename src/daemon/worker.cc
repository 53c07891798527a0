#include "nfqscan/worker.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <random>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "nfqscan/classifier.h"
#include "nfqscan/conntrack.h"
#include "nfqscan/engine_mark.h"
#include "nfqscan/flow.h"
#include "nfqscan/flow_inspection.h"
#include "nfqscan/flow_stream.h"
#include "nfqscan/injector.h"
#include "nfqscan/packet.h"
#include "nfqscan/test_rewrite.h"

namespace nfqscan {

namespace {

// From <linux/netfilter.h>, which clashes with <netinet/in.h>.
constexpr uint32_t kVerdictDrop = 0;         // NF_DROP
constexpr uint32_t kVerdictAccept = 1;       // NF_ACCEPT
constexpr uint32_t kVerdictRepeat = 4;       // NF_REPEAT
constexpr uint32_t kSkbGso = 2;              // NFQA_SKB_GSO
constexpr uint32_t kSkbCsumNotReady = 1;     // NFQA_SKB_CSUMNOTREADY
constexpr uint32_t kSkbCsumNotVerified = 4;  // NFQA_SKB_CSUM_NOTVERIFIED

// recvmmsg batches handled per epoll wakeup before timers and requests.
constexpr int kMaxBatchesPerWakeup = 16;

uint64_t monotonic_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000;
}

FlowTimeouts timeouts_of(const FlowConfig& c) {
    FlowTimeouts t;
    t.handshake_ms = c.tcp_handshake_timeout_s * 1000;
    t.established_ms = c.tcp_established_timeout_s * 1000;
    t.closing_ms = c.tcp_closing_timeout_s * 1000;
    t.udp_ms = c.udp_timeout_s * 1000;
    // A released flow's packets skip the queue; only the few already queued
    // can still come, so its entry is kept only briefly.
    t.released_ms = c.tcp_closing_timeout_s * 1000;
    return t;
}

// The share of the global flow cap that one worker enforces.
size_t per_worker_cap(const Config& c) {
    return std::max<size_t>(64, c.flows.max_flows / c.daemon.queues.count());
}

uint32_t label_key(uint16_t master, uint16_t app) {
    return uint32_t(master) << 16 | app;
}

}  // namespace

void StreamTotals::add_counters(const FlowStream& stream) {
    const FlowStreamCounters& f = stream.counters();
    rewritten_packets += f.rewritten_packets;
    injected_packets += f.injected_packets;
    sack_acks += f.sack_acks;
    relay_acks += f.relay_acks;
    relay_segments += f.relay_segments;
    relay_retransmissions += f.relay_retransmissions;
    relay_timeouts += f.relay_timeouts;
    relay_gso_frames += f.relay_gso_frames;
    resets += f.resets;
    peer_checks += f.peer_checks;
    for (Direction d : {Direction::ClientToServer, Direction::ServerToClient}) {
        const StreamCounters& c = stream.direction(d).counters();
        conflicts += c.conflicts;
        held_overflow += c.held_overflow;
        stalls += c.stalls;
        tails_acknowledged += c.tails_acknowledged;
        memory_refused += c.memory_refused;
        relays += c.relays;
        relay_full += c.relay_full;
    }
}

StreamTotals& StreamTotals::operator+=(const StreamTotals& o) {
    active += o.active;
    memory_bytes += o.memory_bytes;
    memory_limit += o.memory_limit;
    overflow_bypassed += o.overflow_bypassed;
    overflow_dropped += o.overflow_dropped;
    memory_refused += o.memory_refused;
    memory_resets += o.memory_resets;
    held_now += o.held_now;
    relaying_now += o.relaying_now;
    rewritten_packets += o.rewritten_packets;
    injected_packets += o.injected_packets;
    sack_acks += o.sack_acks;
    conflicts += o.conflicts;
    held_overflow += o.held_overflow;
    stalls += o.stalls;
    tails_acknowledged += o.tails_acknowledged;
    relays += o.relays;
    relay_acks += o.relay_acks;
    relay_segments += o.relay_segments;
    relay_retransmissions += o.relay_retransmissions;
    relay_timeouts += o.relay_timeouts;
    relay_full += o.relay_full;
    relay_gso_frames += o.relay_gso_frames;
    relay_device_frames += o.relay_device_frames;
    relay_device_errors += o.relay_device_errors;
    relay_device_queued += o.relay_device_queued;
    inject_failed += o.inject_failed;
    inject_busy += o.inject_busy;
    resets += o.resets;
    nat_flows += o.nat_flows;
    engine_marked += o.engine_marked;
    engine_mark_carried += o.engine_mark_carried;
    peer_checks += o.peer_checks;
    return *this;
}

// Scan completions reach the worker's loop as tasks; once the worker is
// gone they are dropped.
class QueueWorker::TaskSink final : public CompletionSink {
  public:
    explicit TaskSink(QueueWorker* worker) : worker_(worker) {}
    void post(std::function<void()> task) override {
        std::lock_guard lock(mutex_);
        if (worker_) worker_->post(std::move(task));
    }
    void detach() {
        std::lock_guard lock(mutex_);
        worker_ = nullptr;
    }

  private:
    std::mutex mutex_;
    QueueWorker* worker_;
};

// Everything the worker thread owns. Built on that thread, so nDPI's memory
// is accounted to it.
class QueueWorker::Loop : public PacketSink, public InspectionContext {
  public:
    // `offline`: replaying a capture (OfflineWorker), not on a live queue.
    Loop(VerdictQueue& queue, std::shared_ptr<const Config> config, WorkerRelayDevice relay_device,
         WorkerServices services, std::shared_ptr<CompletionSink> completions,
         std::optional<OfflineWorld> offline = std::nullopt)
        : queue_(queue),
          config_(std::move(config)),
          flows_(per_worker_cap(*config_), timeouts_of(config_->flows)),
          classifier_(*config_),
          relay_device_(std::move(relay_device)),
          services_(std::move(services)),
          completions_(std::move(completions)),
          offline_(std::move(offline)) {
        now_ms_ = clock();
        // A capture's flows are not this host's connections.
        if (offline_) conntrack_failed_ = true;
        classifier_.set_expectations(services_.ftp);
        flows_.set_on_remove([this](const Flow& f, bool) {
            ++removed_by_label_[label_key(f.dpi_master, f.dpi_app)];
            ++removed_by_service_[size_t(f.service)];
            if (f.stream) {
                held_packets_ -= std::min<uint64_t>(held_packets_, f.stream->held_count());
                stream_verdicts_.clear();
                f.stream->abandon(stream_verdicts_);
                take_stream_verdicts();
                ended_streams_.add_counters(*f.stream);
                account_stream_memory(f.stream->memory_bytes(), 0);
                relayed_.erase(f.stream.get());
                deferred_.erase(f.stream.get());
            }
            if (f.inspection) inspections_.erase(f.inspection->id());
        });
        build_test_inspector();
    }

    // Packets come in through guarded(): a packet whose handling throws is
    // dropped (PacketGuard).
    PacketSink& guarded() { return guard_; }
    void on_packet(const QueuedPacket& qp) override {
        try {
            handle_packet(qp);
        } catch (...) {
            // What a stream decided before the throw stands: held packets it
            // released would otherwise wait in the kernel queue for good.
            take_stream_verdicts();
            throw;
        }
    }

    void handle_packet(const QueuedPacket& qp) {
        uint32_t release = config_->marks.release;
        if (release && (qp.mark & release) == release) {
            // Only nfqscand's NF_REPEAT sets this mark, and the ruleset must
            // let such a packet skip the queue: it came back, so the rule is
            // missing and answering NF_REPEAT again would loop forever.
            if (packets_.repeat_marked++ == 0)
                spdlog::warn(
                    "queue {}: packets carrying the release mark {:#x} are queued again: "
                    "the ruleset lacks the rule that saves it (see rules/nfqscan.nft); "
                    "accepted, released flows keep coming through the queue",
                    queue_.queue(), release);
            queue_.accept(qp.id);
            return;
        }
        DecodedPacket p;
        // A packet longer than the copy range arrives cut: decoded as what
        // was read, so that a stream can replace it with that (passed whole,
        // it would carry bytes nobody inspected or translated).
        DecodeStatus status = qp.original_length > qp.data.size()
                                  ? decode_cut_packet(qp.data, cut_packet_, p)
                                  : decode_packet(qp.data, p);
        if (status != DecodeStatus::Ok) {
            if (status == DecodeStatus::Fragment)
                ++packets_.other;
            else
                ++packets_.malformed;
            // A packet of a flow in the stream engine that the engine cannot
            // read would reach the receiver uninspected and at untranslated
            // numbers: dropped (the receiver would discard what is truly
            // malformed anyway). Others are passed: the kernel and the
            // receiver judge garbage better than a dropped packet would.
            if (const Flow* flow = p.is_tcp() ? flows_.find(p) : nullptr; flow && flow->stream) {
                ++packets_.malformed_dropped;
                queue_.verdict(qp.id, kVerdictDrop, {});
                return;
            }
            queue_.accept(qp.id);
            return;
        }
        if (!p.is_tcp() && !p.is_udp()) {
            ++packets_.other;
            queue_.accept(qp.id);
            return;
        }
        (p.is_tcp() ? packets_.tcp : packets_.udp)++;
        if (qp.indev != 0 && int(qp.indev) == relay_device_.ifindex) {
            // nfqscand's own frame: the ruleset lacks the rule that marks
            // what comes from the relay device. Never inspect it again.
            if (relay_device_queued_++ == 0)
                spdlog::warn(
                    "queue {}: frames from the relay device {} are queued: the ruleset "
                    "must mark them (see rules/nfqscan.nft, prerouting); accepted",
                    queue_.queue(), config_->stream.relay_device);
            queue_.accept(qp.id);
            return;
        }

        if (!checksum_acceptable(qp, p)) return;

        FlowTable::Lookup l = flows_.track(p, now_ms_, config_->ports);
        Flow& flow = *l.flow;
        if (!pass_engine_mark(qp, flow, l.direction, p)) return;
        if (l.created) {
            classifier_.on_new_flow(flow, p, now_ms_);
            if (flow.disposition != Disposition::Deciding) on_decided(flow);
        }
        if ((l.created || flow.stream_refused) && wants_stream(flow, p)) {
            if (!admit_stream(flow, qp.id)) return;  // dropped by the overflow policy
        } else if ((l.created || flow.stream_refused) && wants_inspection(flow, p)) {
            if (!admit_inspection(flow, qp.id)) return;
        }
        if (classifier_.observe(flow, l.direction, p, now_ms_, flow.stream != nullptr))
            on_decided(flow);

        if (flow.stream) {
            if (l.direction == Direction::ServerToClient && !flow.stream->wire_checked())
                learn_wire_endpoints(flow);
            stream_verdicts_.clear();
            StreamStep step(*flow.stream);
            flow.stream->on_packet(qp.id, l.direction, p, qp.skb_info & kSkbGso, now_ms_,
                                   stream_verdicts_);
            settle(flow, step, &qp);
            return;
        }

        if (flow.disposition == Disposition::Released) {
            // NF_REPEAT runs the hook again with the mark set; the ruleset
            // saves it to the conntrack mark and the flow skips the queue.
            queue_.verdict(qp.id, kVerdictRepeat, (qp.mark & ~release) | release);
            ++released_verdicts_;
        } else {
            queue_.accept(qp.id);
        }
    }

    void set_now(uint64_t now_ms) { now_ms_ = now_ms; }
    // The monotonic clock in milliseconds; a replay's is the capture's.
    uint64_t clock() const { return offline_ ? offline_->clock() : monotonic_ms(); }
    uint64_t scans_in_flight() const { return scans_in_flight_; }

    // A TCP segment whose checksum the kernel could not vouch for and which
    // is wrong is one its receiver discards: it must neither decide a flow's
    // class nor enter a stream (whose bytes it would stand for). Dropped
    // for a flow in the engine, otherwise passed untracked (the receiver
    // judges it). False: answered here.
    bool checksum_acceptable(const QueuedPacket& qp, const DecodedPacket& p) {
        bool unverified = (qp.skb_info & kSkbCsumNotVerified) &&
                          !(qp.skb_info & (kSkbCsumNotReady | kSkbGso)) && p.is_tcp() && !p.cut;
        // Without a routing header walk the IPv6 pseudo-header may be wrong.
        if (!unverified || (p.ip_version == 6 && p.l3_header_length != 40) ||
            tcp_checksum_valid(p.packet, p.ip_version, p.l3_header_length))
            return true;
        ++packets_.bad_checksum;
        const Flow* flow = flows_.find(p);
        queue_.verdict(qp.id, flow && flow->stream ? kVerdictDrop : kVerdictAccept, {});
        return false;
    }

    // Whether the test inspector ([test_rewrite]) wants the stream engine on
    // this flow: its ports.
    bool wants_stream(const Flow& flow, const DecodedPacket& p) const {
        return p.is_tcp() && test_rewrites(flow);
    }
    bool test_rewrites(const Flow& flow) const {
        return test_replacer_ && std::count(config_->test_rewrite.ports.begin(),
                                            config_->test_rewrite.ports.end(), flow.server_port());
    }

    // Behind NAT, the segments nfqscand sends must carry the addresses of
    // the connection's conntrack entry (see conntrack.h). Looked up at the
    // server's first packet: by then the entry is confirmed and its NAT
    // bindings are set.
    void learn_wire_endpoints(Flow& flow) {
        FlowStream& stream = *flow.stream;
        stream.note_wire_checked();
        std::optional<ConnectionTuples> t = nat_tuples(flow);
        if (!t) return;
        stream.set_wire_endpoints(Direction::ClientToServer, t->orig_src, t->orig_dst);
        stream.set_wire_endpoints(Direction::ServerToClient, t->reply_src, t->reply_dst);
        if (nat_flows_++ == 0 && conntrack_tcp_liberal() == false)
            spdlog::warn(
                "queue {}: a flow in the stream engine behind NAT while "
                "net.netfilter.nf_conntrack_tcp_be_liberal is 0: once rewritten or relayed, "
                "it stalls (apply rules/nfqscan-sysctl.conf)",
                queue_.queue());
    }

    // The flow's conntrack tuples where NAT makes them differ from what the
    // queue shows; nullopt without NAT (or without conntrack).
    std::optional<ConnectionTuples> nat_tuples(const Flow& flow) {
        if (!conntrack_ && !conntrack_failed_) {
            try {
                conntrack_ = std::make_unique<ConntrackLookup>();
            } catch (const std::exception& e) {
                conntrack_failed_ = true;
                spdlog::warn(
                    "queue {}: cannot read conntrack ({}): behind NAT, segments "
                    "nfqscand sends will not reach the peers",
                    queue_.queue(), e.what());
            }
        }
        if (!conntrack_) return std::nullopt;
        Endpoint client{flow.client(), flow.client_port()};
        Endpoint server{flow.server(), flow.server_port()};
        // Masquerade leaves the original tuple as seen here, a port forward
        // the reply tuple.
        std::optional<ConnectionTuples> t = conntrack_->find(client, server, true);
        if (!t) t = conntrack_->find(server, client, false);
        if (!t || (t->orig_src == client && t->orig_dst == server && t->reply_src == server &&
                   t->reply_dst == client))
            return std::nullopt;
        return t;
    }

    // Whether the packet goes on to the flow's handling, as far as the
    // engine mark goes (engine_mark.h); otherwise it is answered here.
    static constexpr uint64_t kMarkMissingWarning = 16;
    bool pass_engine_mark(const QueuedPacket& qp, Flow& flow, Direction d, const DecodedPacket& p) {
        uint32_t mark = config_->marks.engine;
        if (!mark || !p.is_tcp()) return true;
        switch (engine_mark_step(flow, p, (qp.mark & mark) == mark)) {
            case EngineMarkStep::Proceed:
                return true;
            case EngineMarkStep::MarkMissing:
                // A few may have been queued just before the mark was saved.
                if (++packets_.engine_mark_missing == kMarkMissingWarning)
                    spdlog::warn(
                        "queue {}: packets of flows given the engine mark {:#x} come without "
                        "it: the ruleset lacks the rules that save it and queue such flows "
                        "without bypass (see rules/nfqscan.nft); while nfqscand is down they "
                        "would pass raw",
                        queue_.queue(), mark);
                return true;
            case EngineMarkStep::RequestMark:
                ++engine_marked_;
                queue_.verdict(qp.id, kVerdictRepeat, qp.mark | mark);
                return false;
            case EngineMarkStep::Orphan:
                if (packets_.engine_orphans++ == 0)
                    spdlog::warn(
                        "queue {}: packets of flows whose stream engine state is lost (an "
                        "earlier nfqscand rewrote or relayed them): dropped, their peers "
                        "reset",
                        queue_.queue());
                queue_.verdict(qp.id, kVerdictDrop, {});
                for (std::vector<uint8_t>& answer : orphan_answers(p, d, nat_tuples(flow))) {
                    ++packets_.orphan_answers;
                    injections_.push_back({0, PacketVerdict::Kind::Inject, std::move(answer)});
                }
                return false;
        }
        return true;
    }

    // Whether the flow may be one an inspector scans: a TCP flow seen from
    // its SYN (the handshake tells the engine the MSS, window scale and
    // timestamps it needs), not released, and either still being classified
    // while some protocol is scanned, or claimed for a scanned protocol.
    bool wants_inspection(const Flow& flow, const DecodedPacket& p) const {
        if (!p.is_tcp() || !p.has(tcp_flag::kSyn) || p.has(tcp_flag::kAck) ||
            flow.disposition == Disposition::Released)
            return false;
        auto scanned = [&](Service s) {
            return has_inspector(s) && config_->protocols[size_t(s)].policy.scan;
        };
        if (flow.disposition == Disposition::Claimed) return scanned(flow.service);
        for (size_t s = 1; s < kServiceCount; ++s)
            if (scanned(Service(s))) return true;
        return false;
    }

    // The stream engine with the flow's inspection as its transforms.
    bool admit_inspection(Flow& flow, uint32_t packet_id) {
        Admission a = admit_engine(flow, packet_id);
        if (a != Admission::Admitted) return a == Admission::Bypassed;
        auto inspection = std::unique_ptr<FlowInspection, FlowInspectionDeleter>(
            new FlowInspection(++inspection_ids_, flow, *this));
        inspections_[inspection->id()] = inspection.get();
        flow.stream.reset(new FlowStream({inspection->transform(Direction::ClientToServer),
                                          inspection->transform(Direction::ServerToClient)},
                                         stream_limits(), &relay_device_.families));
        account_stream_memory(0, flow.stream->memory_bytes());
        flow.inspection = std::move(inspection);
        if (flow.disposition == Disposition::Claimed) flow.inspection->attach(flow.service);
        return true;
    }

    // What a stream call changes, taken before it (StreamStep) and settled
    // after it: held packets, memory, the relay and deferred sets, what the
    // inspector asked for, the verdicts.
    struct StreamStep {
        explicit StreamStep(const FlowStream& s) : memory(s.memory_bytes()), held(s.held_count()) {}
        size_t memory, held;
    };
    static constexpr int kRequestRounds = 8;
    void settle(Flow& flow, const StreamStep& step, const QueuedPacket* packet = nullptr) {
        FlowStream& stream = *flow.stream;
        // A redrive can ask for more (an SMTP reply lets the held command
        // go, whose answer is then sent): a few rounds at most, since each
        // one needs bytes the previous one mapped.
        for (int round = 0; flow.inspection && round < kRequestRounds; ++round) {
            FlowInspection::Requests r = flow.inspection->take_requests();
            if (r.empty()) break;
            for (Direction d : {Direction::ClientToServer, Direction::ServerToClient})
                if (!r.own[size_t(d)].empty() && !r.reset && !stream.closed())
                    stream.send_own(d, r.own[size_t(d)], now_ms_, stream_verdicts_);
            if (r.close) stream.close_with(*r.close, r.message, now_ms_, stream_verdicts_);
            if (r.reset) stream.reset_peers(stream_verdicts_);
            if (r.redrive && !r.close && !r.reset) stream.redrive(now_ms_, stream_verdicts_);
        }
        uint64_t held = held_packets_ + stream.held_count();
        held_packets_ = held >= step.held ? held - step.held : 0;
        account_stream_memory(step.memory, stream.memory_bytes());
        if (stream.relay_active()) relayed_.insert(&stream);
        if (stream.has_deferred()) deferred_.insert(&stream);
        if (flow.inspection && flow.inspection->wants_ticks())
            ticking_.insert(flow.inspection->id());
        if (packet) carry_engine_mark(flow, *packet);
        take_stream_verdicts();
        maybe_detach(flow);
    }

    // The packet after which the flow needs the engine asks for the engine
    // mark itself (engine_mark.h): its verdict becomes NF_REPEAT with the
    // bit, its payload as it came. The ruleset saves the bit before any
    // verdict behind it in the batch is carried out, and queues the packet
    // again, now without bypass; the engine answers it then as a
    // retransmission of bytes it already took. Asked by the flow's next
    // packet instead, a nfqscand killed in between would let that one pass
    // raw. A held packet cannot ask (its verdict comes later): the next one
    // does.
    void carry_engine_mark(Flow& flow, const QueuedPacket& qp) {
        uint32_t mark = config_->marks.engine;
        if (!mark || flow.engine_marked || flow.engine_mark_requested || !flow.stream ||
            !flow.stream->needs_engine())
            return;
        auto own = std::find_if(stream_verdicts_.begin(), stream_verdicts_.end(),
                                [&](const PacketVerdict& v) {
                                    return v.id == qp.id && v.kind != PacketVerdict::Kind::Hold &&
                                           v.kind != PacketVerdict::Kind::Inject &&
                                           v.kind != PacketVerdict::Kind::InjectFrame;
                                });
        if (own == stream_verdicts_.end()) return;
        stream_verdicts_.erase(own);
        flow.engine_mark_requested = true;
        ++engine_marked_;
        ++engine_mark_carried_;
        queue_.verdict(qp.id, kVerdictRepeat, qp.mark | mark);
    }

    // A flow no inspector needs any more (classified as something else,
    // released by its inspector, a protocol without one) leaves the engine
    // once nothing depends on it; released flows go to the fast path.
    void maybe_detach(Flow& flow) {
        if (!flow.inspection || !flow.stream || flow.disposition == Disposition::Deciding) return;
        if (flow.inspection->inspecting() || flow.stream->needs_engine() ||
            flow.stream->held_count() > 0 || flow.stream->closed())
            return;
        bool released = flow.inspection->released();
        account_stream_memory(flow.stream->memory_bytes(), 0);
        relayed_.erase(flow.stream.get());
        deferred_.erase(flow.stream.get());
        ended_streams_.add_counters(*flow.stream);
        flow.stream.reset();
        inspections_.erase(flow.inspection->id());
        flow.inspection.reset();
        if (released && flow.disposition != Disposition::Released) {
            flow.disposition = Disposition::Released;
            on_decided(flow);
        }
    }

    // A scan verdict for an object of a flow (which may be gone meanwhile).
    void on_scan_verdict(uint64_t inspection_id, uint64_t object_id, const ScanVerdict& verdict) {
        auto it = inspections_.find(inspection_id);
        if (it == inspections_.end()) return;
        FlowInspection& inspection = *it->second;
        Flow& flow = inspection.flow();
        now_ms_ = clock();
        inspection.on_verdict(object_id, verdict);
        redrive(flow);
    }

    // Shows both directions of the flow their pending bytes again (after a
    // verdict or a tick that gave the inspector something to map).
    void redrive(Flow& flow) {
        if (!flow.stream) return;
        stream_verdicts_.clear();
        StreamStep step(*flow.stream);
        flow.stream->redrive(now_ms_, stream_verdicts_);
        settle(flow, step);
    }

    // The inspections that asked for ticks (trickling), not every flow. A
    // copy of the ids: a redrive may detach a flow or ask for ticks anew.
    void tick_inspections() {
        tick_ids_.assign(ticking_.begin(), ticking_.end());
        for (uint64_t id : tick_ids_) {
            auto it = inspections_.find(id);
            if (it == inspections_.end() || !it->second->wants_ticks()) {
                ticking_.erase(id);
                continue;
            }
            if (it->second->on_tick(now_ms_)) redrive(it->second->flow());
        }
    }

    // InspectionContext
    const Config& config() const override { return *config_; }
    void submit(uint64_t inspection_id, uint64_t object_id, ScanObject object) override {
        ++scans_in_flight_;
        auto done = [this, inspection_id, object_id](ScanVerdict v) {
            --scans_in_flight_;
            on_scan_verdict(inspection_id, object_id, v);
        };
        if (!services_.scan) {
            completions_->post([done] {
                done(ScanVerdict::failed(ScanError::EngineNotReady, "no scan service"));
            });
            return;
        }
        services_.scan->submit(std::move(object), completions_, std::move(done));
    }
    bool check_spam(uint64_t inspection_id, uint64_t object_id, SpamQuery query) override {
        if (!services_.spam) return false;
        services_.spam->submit(std::move(query), completions_,
                               [this, inspection_id, object_id](ScanVerdict v) {
                                   auto it = inspections_.find(inspection_id);
                                   if (it == inspections_.end()) return;
                                   now_ms_ = monotonic_ms();
                                   it->second->on_spam_verdict(object_id, v);
                                   redrive(it->second->flow());
                               });
        return true;
    }
    void log(const ScanEvent& event) override {
        if (!event.verdict.is_clean())
            spdlog::info("{} {} {}: {} -> {}", event.protocol, event.flow, event.object,
                         event.verdict.is_infected() ? event.verdict.detection.signature
                         : event.category.empty()
                             ? std::string(scan_error_name(event.verdict.error))
                             : event.category,
                         event.action);
        if (services_.on_event) services_.on_event(event);
        if (!services_.event_log) return;
        if (std::shared_ptr<EventLog> log = services_.event_log()) log->append(event);
    }
    void notify(Notification notification) override {
        if (services_.notifier) services_.notifier->notify(std::move(notification));
    }
    bool quarantine(QuarantineEntry entry, std::shared_ptr<const ObjectBuffer> bytes) override {
        return services_.quarantine &&
               services_.quarantine->submit(std::move(entry), std::move(bytes));
    }
    bool quarantining() const override { return services_.quarantine != nullptr; }
    InspectionCounters& counters(Service service) override {
        return protocol_counters_[size_t(service)];
    }
    uint64_t now_ms() const override { return now_ms_; }
    void classify(Flow& flow, Direction d, std::span<const uint8_t> bytes) override {
        if (classifier_.observe_bytes(flow, d, bytes)) on_decided(flow);
    }
    FtpExpectations* ftp_expectations() override { return services_.ftp; }
    std::function<void()> waker(uint64_t inspection_id) override {
        // The task runs on this worker's thread while its Loop lives (the
        // sink drops tasks once the worker is gone).
        std::weak_ptr<CompletionSink> sink = completions_;
        return [sink, this, inspection_id] {
            if (std::shared_ptr<CompletionSink> s = sink.lock())
                s->post([this, inspection_id] {
                    auto it = inspections_.find(inspection_id);
                    if (it == inspections_.end()) return;
                    now_ms_ = clock();
                    redrive(it->second->flow());
                });
        };
    }
    std::string next_event_id() override {
        return fmt::format("{:08x}-{}-{}", event_id_base_, queue_.queue(), ++events_);
    }

    // Puts the test inspector's stream engine on the flow (see admit_engine()).
    // False: the packet was dropped.
    bool admit_stream(Flow& flow, uint32_t packet_id) {
        Admission a = admit_engine(flow, packet_id);
        if (a != Admission::Admitted) return a == Admission::Bypassed;
        // The test inspector rewrites what the server sends.
        flow.stream.reset(
            new FlowStream({config_->test_rewrite.relay_requests ? relay_forwarder_.get() : nullptr,
                            test_replacer_.get()},
                           stream_limits(), &relay_device_.families));
        account_stream_memory(0, flow.stream->memory_bytes());
        if (flow.disposition == Disposition::Deciding) {
            flow.disposition = Disposition::Claimed;
            flow.claimed_by = ClaimSource::Port;
            on_decided(flow);
        }
        return true;
    }

    // Whether the flow may have a stream engine: the streams' memory cap
    // allows it, or the overflow policy says what happens instead (bypass:
    // the flow is released unseen; drop: the packet is dropped).
    enum class Admission : uint8_t { Admitted, Bypassed, Dropped };
    Admission admit_engine(Flow& flow, uint32_t packet_id) {
        if (at_memory_cap()) {
            if (config_->stream.overflow == StreamConfig::Overflow::Bypass) {
                // Not inspected: to the fast path, like a flow nothing claims.
                ++streams_bypassed_;
                flow.stream_refused = false;
                if (flow.disposition != Disposition::Released) {
                    flow.disposition = Disposition::Released;
                    on_decided(flow);
                }
                return Admission::Bypassed;
            }
            // Drop: the client retries its SYN; past the handshake there is
            // no way back for it.
            ++streams_refused_packets_;
            flow.stream_refused = true;
            queue_.verdict(packet_id, kVerdictDrop, {});
            return Admission::Dropped;
        }
        if (flow.stream_refused && flow.state != FlowState::Handshake) {
            ++streams_refused_packets_;
            queue_.verdict(packet_id, kVerdictDrop, {});
            return Admission::Dropped;
        }
        flow.stream_refused = false;
        // A packet the kernel let through on its own (fail-open) would leave
        // a hole in what the engine inspected, or reach the receiver at
        // unshifted offsets: while any flow is in the engine, the queue drops
        // what it cannot take and the sender sends it again (the
        // housekeeping tick restores it once none is left).
        if (queue_.fail_open()) {
            queue_.set_fail_open(false);
            if (queue_.counters().fail_open_suspensions == 1)
                spdlog::info("queue {}: fail-open suspended while flows are in the stream engine",
                             queue_.queue());
        }
        return Admission::Admitted;
    }

    // The streams take what they grow by from memory_room_ as they grow
    // (settle() sets it again from their sum).
    StreamLimits stream_limits() {
        const StreamConfig& c = config_->stream;
        StreamLimits l;
        l.max_held = c.hold_limit;
        l.max_pending = c.pending_limit;
        l.max_relay = c.relay_limit;
        l.refuse_holding = &refuse_holding_;
        l.memory_room = &memory_room_;
        return l;
    }

    uint64_t memory_share() const {
        return config_->stream.memory_limit / config_->daemon.queues.count();
    }

    // The cap is reached once the room left would not take one more full
    // packet (a GSO packet of 64 KiB): no new flow gets an engine, and the
    // streams refuse input that needs more memory (see StreamLimits).
    bool at_memory_cap() const { return memory_room_ < int64_t(64u << 10); }

    void account_stream_memory(size_t before, size_t after) {
        stream_memory_ = stream_memory_ + after >= before ? stream_memory_ + after - before : 0;
        update_refuse_holding();
    }

    // Held packets wait in the kernel queue: half of it stays for packets on
    // their way to nfqscand, or the queue fills and drops them all.
    void update_refuse_holding() {
        uint64_t share = memory_share();
        memory_room_ = int64_t(share) - int64_t(stream_memory_);
        refuse_holding_ =
            stream_memory_ >= share || held_packets_ >= config_->queue.max_queue_length / 2;
    }

    // The incremental total drifts (timers, resets change streams too): the
    // housekeeping tick sums it again.
    void recount_stream_memory() {
        uint64_t total = 0, held = 0, streams = 0;
        flows_.for_each([&](const Flow& f) {
            if (!f.stream) return;
            total += f.stream->memory_bytes();
            held += f.stream->held_count();
            ++streams;
        });
        stream_memory_ = total;
        held_packets_ = held;
        update_refuse_holding();
        if (streams == 0) queue_.set_fail_open(true);  // as configured
    }

    // The stream engine's answers: verdicts now, new packets after the batch.
    void take_stream_verdicts() {
        for (PacketVerdict& v : stream_verdicts_) {
            switch (v.kind) {
                case PacketVerdict::Kind::Accept:
                    queue_.accept(v.id);
                    break;
                case PacketVerdict::Kind::Replace:
                    queue_.verdict(v.id, kVerdictAccept, std::nullopt, v.packet);
                    break;
                case PacketVerdict::Kind::Hold:
                    queue_.hold(v.id);
                    break;
                case PacketVerdict::Kind::Drop:
                    queue_.verdict(v.id, kVerdictDrop, {});
                    break;
                case PacketVerdict::Kind::Inject:
                case PacketVerdict::Kind::InjectFrame:
                    injections_.push_back(std::move(v));
                    break;
            }
        }
        stream_verdicts_.clear();
    }

    void reset_peers(FlowStream& stream) {
        stream_verdicts_.clear();
        stream.reset_peers(stream_verdicts_);
        take_stream_verdicts();
    }

    // The relays' retransmission timers; whether any relay is still active.
    bool relay_timers() {
        uint64_t now = clock();
        for (auto it = relayed_.begin(); it != relayed_.end();) {
            FlowStream* stream = *it;
            std::optional<uint64_t> deadline = stream->deadline();
            if (deadline && *deadline <= now) {
                stream_verdicts_.clear();
                stream->on_timer(now, stream_verdicts_);
                take_stream_verdicts();
            }
            it = stream->relay_active() ? std::next(it) : relayed_.erase(it);
        }
        send_injections();
        return !relayed_.empty();
    }
    bool relaying() const { return !relayed_.empty(); }

    // nfqscand stops: the peers of every flow that cannot go on without it
    // (relayed, or with shifted sequence numbers) are reset, so that neither
    // takes a cut-off transfer for a complete one.
    void reset_dependent_flows() {
        size_t n = 0;
        flows_.for_each([&](const Flow& f) {
            if (!f.stream || !f.stream->needs_engine()) return;
            reset_peers(*f.stream);
            ++n;
        });
        send_injections();
        if (n)
            spdlog::info("queue {}: reset {} flows that depended on nfqscand", queue_.queue(), n);
    }

    // The end of a batch: output that waited for a next packet in it goes
    // out, after the batch's verdicts, with the other injections.
    void end_batch() {
        for (FlowStream* stream : deferred_) {
            stream_verdicts_.clear();
            stream->flush_deferred(stream_verdicts_);
            take_stream_verdicts();
        }
        deferred_.clear();
        send_injections();
    }

    // After the batch's verdicts went out: the segments that follow them, in
    // order: runs of raw packets through the raw sockets (sendmmsg), frames
    // through this worker's queue of the relay device.
    void send_injections() {
        if (injections_.empty()) return;
        if (offline_) {
            for (const PacketVerdict& v : injections_)
                offline_->sent(v);
            injections_.clear();
            return;
        }
        for (size_t i = 0; i < injections_.size();) {
            if (injections_[i].kind == PacketVerdict::Kind::InjectFrame) {
                send_frame(injections_[i++].packet);
                continue;
            }
            raw_run_.clear();
            for (; i < injections_.size() && injections_[i].kind == PacketVerdict::Kind::Inject;
                 ++i)
                raw_run_.push_back(std::move(injections_[i].packet));
            if (!injector_) {
                try {
                    injector_ = std::make_unique<RawInjector>(
                        config_->marks.inject, int(config_->stream.inject_send_buffer));
                } catch (const std::exception& e) {
                    spdlog::error("queue {}: cannot inject packets: {}", queue_.queue(), e.what());
                }
            }
            if (injector_) injector_->send_all(raw_run_);
        }
        injections_.clear();
        raw_run_.clear();
    }

    void send_frame(std::span<const uint8_t> frame) {
        if (!relay_device_.queue || relay_device_.queue->send(frame)) return;
        if (errno == ENOBUFS || errno == ENOMEM || errno == EAGAIN) return;  // lost: retransmitted
        // The device is gone or refuses frames: the relays go on through the
        // raw sockets (what this frame carried is retransmitted there).
        spdlog::warn(
            "queue {}: writing to the relay device {}: {}; relays use raw sockets from "
            "now on",
            queue_.queue(), config_->stream.relay_device, strerror(errno));
        relay_device_.families = {};
    }

    void housekeeping() {
        now_ms_ = clock();
        flows_.expire(now_ms_);
        tick_inspections();
        recount_stream_memory();
        shed_if_stuck_at_cap();
    }

    // At the memory cap new input is refused; flows whose receivers
    // acknowledge free memory and go on. A flow that made no progress at all
    // (nothing acknowledged, nothing new taken) for kStuckAtCapMs at the cap
    // cannot progress (an inspector waiting for bytes that cannot
    // come, a receiver that never acknowledges): the largest such flow is
    // reset, never passed raw.
    void shed_if_stuck_at_cap() {
        if (!at_memory_cap()) {
            progress_at_cap_.clear();
            return;
        }
        std::unordered_map<const FlowStream*, Progress> progress;
        FlowStream* largest = nullptr;
        size_t most = 0;
        flows_.for_each([&](const Flow& f) {
            if (!f.stream || f.stream->closed()) return;
            uint64_t now = 0;
            for (Direction d : {Direction::ClientToServer, Direction::ServerToClient})
                now += f.stream->direction(d).output_acked() + f.stream->direction(d).input_next();
            auto before = progress_at_cap_.find(f.stream.get());
            Progress p{now, now_ms_};
            if (before != progress_at_cap_.end() && before->second.value == now)
                p.since_ms = before->second.since_ms;
            progress[f.stream.get()] = p;
            // A receiver may pause for a while (a rate-limited reader, a
            // zero window): only a flow that did nothing for kStuckAtCapMs
            // at the cap is taken for one that cannot progress.
            bool stuck = now_ms_ - p.since_ms >= kStuckAtCapMs;
            if (stuck && f.stream->memory_bytes() > most) {
                most = f.stream->memory_bytes();
                largest = f.stream.get();
            }
        });
        progress_at_cap_ = std::move(progress);
        if (!largest) return;
        spdlog::warn(
            "queue {}: stream memory at its cap ({} bytes) and not going down: "
            "resetting the flow holding {} bytes",
            queue_.queue(), memory_share(), most);
        stream_verdicts_.clear();
        largest->shed(stream_verdicts_);
        take_stream_verdicts();
        send_injections();
        relayed_.erase(largest);
        deferred_.erase(largest);
        ++memory_resets_;
        recount_stream_memory();
    }

    void build_test_inspector() {
        // Flows already using the old one keep it until they end.
        if (test_replacer_) retired_replacers_.push_back(std::move(test_replacer_));
        if (config_->test_rewrite.present)
            test_replacer_ = std::make_unique<TokenReplacer>(config_->test_rewrite.replace,
                                                             config_->test_rewrite.relay);
    }

    void apply_config(std::shared_ptr<const Config> config) {
        config_ = std::move(config);
        build_test_inspector();
        classifier_.set_config(*config_);
        flows_.set_limits(per_worker_cap(*config_), timeouts_of(config_->flows));
    }

    WorkerSnapshot snapshot() {
        WorkerSnapshot s;
        s.queue = queue_.queue();
        s.queue_counters = queue_.counters();
        s.fail_open = queue_.fail_open();
        s.packets = packets_;
        s.packets.handling_errors = guard_.errors();
        s.packets.errors_dropped = guard_.dropped();
        s.released_verdicts = released_verdicts_;
        s.flows_active = flows_.size();
        s.flows_created = flows_.counters().created;
        s.flows_expired = flows_.counters().expired;
        s.flows_evicted = flows_.counters().evicted;
        s.flows_claimed = flows_claimed_;
        s.flows_released = flows_released_;
        s.max_flows = flows_.max_flows();
        s.memory_bytes = flows_.memory_bytes() + DpiEngine::allocated_bytes();

        std::unordered_map<uint32_t, uint64_t> active_labels;
        uint64_t active_services[kServiceCount] = {};
        s.streams = ended_streams_;
        s.streams.memory_limit = memory_share();
        s.streams.memory_resets = memory_resets_;
        s.streams.overflow_bypassed = streams_bypassed_;
        s.streams.overflow_dropped = streams_refused_packets_;
        if (relay_device_.queue) {
            s.streams.relay_device_frames = relay_device_.queue->counters().frames;
            s.streams.relay_device_errors = relay_device_.queue->counters().failed;
        }
        s.streams.relay_device_queued = relay_device_queued_;
        if (injector_) {
            s.streams.inject_failed = injector_->counters().failed;
            s.streams.inject_busy = injector_->counters().busy;
        }
        s.streams.nat_flows = nat_flows_;
        s.streams.engine_marked = engine_marked_;
        s.streams.engine_mark_carried = engine_mark_carried_;
        flows_.for_each([&](const Flow& f) {
            ++active_labels[label_key(f.dpi_master, f.dpi_app)];
            ++active_services[size_t(f.service)];
            if (!f.stream) return;
            ++s.streams.active;
            s.streams.memory_bytes += f.stream->memory_bytes();
            s.streams.held_now += f.stream->held_count();
            if (f.stream->relay_active()) ++s.streams.relaying_now;
            s.streams.add_counters(*f.stream);
        });
        s.memory_bytes += s.streams.memory_bytes;
        s.protocols = protocol_counters_;
        flows_.for_each([&](const Flow& f) {
            if (!f.inspection) return;
            s.protocols[size_t(f.service)].held_bytes +=
                f.inspection->memory_bytes() + (f.stream ? f.stream->memory_bytes() : 0);
        });
        auto name_of = [&](uint32_t key) {
            return classifier_.dpi().name({uint16_t(key >> 16), uint16_t(key & 0xffff)});
        };
        for (auto [key, n] : active_labels) {
            LabelCount& c = s.dpi_protocols[name_of(key)];
            c.active += n;
            c.total += n;
        }
        for (auto [key, n] : removed_by_label_)
            s.dpi_protocols[name_of(key)].total += n;
        for (size_t i = 0; i < kServiceCount; ++i) {
            if (!active_services[i] && !removed_by_service_[i]) continue;
            LabelCount& c = s.services[std::string(kServiceNames[i])];
            c.active = active_services[i];
            c.total = active_services[i] + removed_by_service_[i];
        }
        return s;
    }

    QueueWorker::Brief brief() const { return {flows_.size(), queue_.counters().packets}; }

    std::vector<FlowInfo> list_flows(size_t limit) {
        std::vector<FlowInfo> out;
        uint64_t now = clock();
        flows_.for_each([&](const Flow& f) {
            if (out.size() >= limit) return;
            FlowInfo i;
            i.queue = queue_.queue();
            i.protocol = f.key->protocol == IPPROTO_TCP ? "tcp" : "udp";
            i.client = f.client().to_string();
            i.server = f.server().to_string();
            i.client_port = f.client_port();
            i.server_port = f.server_port();
            i.state = flow_state_name(f.state);
            i.dpi = classifier_.dpi().name({f.dpi_master, f.dpi_app});
            i.service = service_name(f.service);
            i.disposition = disposition_name(f.disposition);
            i.claimed_by = claim_source_name(f.claimed_by);
            i.midstream = f.midstream;
            i.packets_c2s = f.packets[0];
            i.packets_s2c = f.packets[1];
            i.bytes_c2s = f.bytes[0];
            i.bytes_s2c = f.bytes[1];
            i.age_s = double(now - std::min(now, f.first_seen_ms)) / 1000.0;
            i.idle_s = double(now - std::min(now, f.last_seen_ms)) / 1000.0;
            if (f.stream) {
                i.stream.emplace();
                for (size_t d = 0; d < 2; ++d) {
                    const StreamDirection& s = f.stream->direction(Direction(d));
                    (*i.stream)[d] = {s.input_next(),  s.input_mapped(), s.output_acked(),
                                      s.output_sent(), s.output_end(),   s.held_segments(),
                                      s.held_bytes(),  s.relaying()};
                }
            }
            out.push_back(std::move(i));
        });
        return out;
    }

  private:
    void on_decided(Flow& flow) {
        // A protocol that is not scanned ([protocols.<name>] scan = false)
        // goes to the fast path like one nfqscan does not know.
        Service service = flow.service;
        if (flow.disposition == Disposition::Claimed && has_inspector(service) &&
            !config_->protocols[size_t(service)].policy.scan && !test_rewrites(flow)) {
            flow.disposition = Disposition::Released;
            ++protocol_counters_[size_t(service)].released[size_t(ReleaseReason::NotScanned)];
        }
        if (flow.disposition == Disposition::Released)
            ++flows_released_;
        else
            ++flows_claimed_;
        flows_.on_disposition_changed(flow);
        // Claimed: its inspector sees the bytes from this packet on.
        if (flow.inspection && flow.disposition == Disposition::Claimed)
            flow.inspection->attach(flow.service);
    }

    VerdictQueue& queue_;
    PacketGuard guard_{*this, queue_, queue_.queue()};
    std::shared_ptr<const Config> config_;
    FlowTable flows_;
    FlowClassifier classifier_;
    uint64_t now_ms_ = monotonic_ms();

    PacketCounters packets_;
    uint64_t released_verdicts_ = 0;
    uint64_t flows_claimed_ = 0, flows_released_ = 0;
    std::unique_ptr<TokenReplacer> test_replacer_;
    uint64_t stream_memory_ = 0;  // all streams of this worker
    bool refuse_holding_ = false;
    int64_t memory_room_ = INT64_MAX;  // memory_share() - stream_memory_ (StreamLimits)
    // Each stream's progress at the last housekeeping tick at the cap.
    struct Progress {
        uint64_t value = 0;     // bytes acknowledged and taken in, both directions
        uint64_t since_ms = 0;  // unchanged since
    };
    static constexpr uint64_t kStuckAtCapMs = 10'000;
    std::unordered_map<const FlowStream*, Progress> progress_at_cap_;
    uint64_t memory_resets_ = 0;
    std::vector<uint8_t> cut_packet_;  // scratch for decode_cut_packet()
    uint64_t held_packets_ = 0;        // packets of this worker's streams in the kernel queue
    uint64_t streams_bypassed_ = 0, streams_refused_packets_ = 0;
    std::unique_ptr<RelayForwarder> relay_forwarder_ = std::make_unique<RelayForwarder>();
    std::unordered_set<FlowStream*> relayed_;   // streams with a relay timer to run
    std::unordered_set<FlowStream*> deferred_;  // streams with output for end_batch()
    std::vector<std::unique_ptr<TokenReplacer>> retired_replacers_;
    std::vector<PacketVerdict> stream_verdicts_;
    std::vector<PacketVerdict> injections_;      // Inject and InjectFrame, in order
    std::vector<std::vector<uint8_t>> raw_run_;  // scratch: consecutive raw packets
    WorkerRelayDevice relay_device_;             // this worker's queue of it, if any
    uint64_t relay_device_queued_ = 0;
    StreamTotals ended_streams_;             // counters of flows no longer in the table
    std::unique_ptr<RawInjector> injector_;  // opened on first use
    std::unordered_map<uint32_t, uint64_t> removed_by_label_;
    WorkerServices services_;
    std::shared_ptr<CompletionSink> completions_;
    std::unordered_map<uint64_t, FlowInspection*> inspections_;  // by FlowInspection::id()
    std::unordered_set<uint64_t> ticking_;  // inspections that want ticks, by id
    std::vector<uint64_t> tick_ids_;        // scratch for tick_inspections()
    uint64_t inspection_ids_ = 0;
    std::array<InspectionCounters, kServiceCount> protocol_counters_;
    uint32_t event_id_base_ = std::random_device{}();
    std::unique_ptr<ConntrackLookup> conntrack_;  // opened at the first stream flow
    bool conntrack_failed_ = false;
    uint64_t nat_flows_ = 0;      // stream flows whose own segments are addressed for NAT
    uint64_t engine_marked_ = 0;  // flows given the engine mark
    uint64_t engine_mark_carried_ = 0;
    uint64_t events_ = 0;
    uint64_t removed_by_service_[kServiceCount] = {};
    uint64_t scans_in_flight_ = 0;  // submitted, verdict not back yet
    std::optional<OfflineWorld> offline_;
};

QueueWorker::QueueWorker(uint16_t queue, std::shared_ptr<const Config> config,
                         WorkerRelayDevice relay_device, WorkerServices services)
    : queue_number_(queue),
      config_(std::move(config)),
      relay_device_(std::move(relay_device)),
      services_(std::move(services)),
      completions_(std::make_shared<TaskSink>(this)) {
    QueueOptions options;
    options.queue = queue;
    options.socket_buffer_bytes = config_->queue.socket_buffer_mb << 20;
    options.max_queue_length = config_->queue.max_queue_length;
    options.fail_open = config_->queue.fail_open;
    options.gso = config_->queue.gso;
    options.batch_size = config_->queue.batch_size;
    nfqueue_ = std::make_unique<NfQueue>(options);
    task_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (task_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

QueueWorker::~QueueWorker() {
    completions_->detach();
    stop();
    if (task_fd_ >= 0) close(task_fd_);
}

void QueueWorker::start() {
    running_ = true;
    thread_ = std::thread([this] { run(); });
}

void QueueWorker::stop() {
    if (!thread_.joinable()) return;
    running_ = false;
    uint64_t one = 1;
    (void)!write(task_fd_, &one, sizeof one);
    thread_.join();
}

void QueueWorker::post(std::function<void()> task) {
    {
        std::lock_guard lock(tasks_mutex_);
        tasks_.push_back(std::move(task));
    }
    uint64_t one = 1;
    (void)!write(task_fd_, &one, sizeof one);
}

std::optional<QueueWorker::Brief> QueueWorker::brief(std::chrono::milliseconds timeout) {
    return call<Brief>([this] { return loop_->brief(); }, timeout);
}

std::optional<WorkerSnapshot> QueueWorker::snapshot(std::chrono::milliseconds timeout) {
    return call<WorkerSnapshot>([this] { return loop_->snapshot(); }, timeout);
}

void QueueWorker::run() {
    pthread_setname_np(pthread_self(), ("nfq-worker-" + std::to_string(queue_number_)).c_str());
    Loop loop(*nfqueue_, config_, std::move(relay_device_), services_, completions_);
    loop_ = &loop;

    int epoll = epoll_create1(EPOLL_CLOEXEC);
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    itimerspec second{{1, 0}, {1, 0}};
    timerfd_settime(timer, 0, &second, nullptr);
    // The relays' retransmission timers: a 10 ms tick while any relay runs.
    int relay_timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    bool relay_ticking = false;
    auto tick_relays = [&](bool on) {
        if (on == relay_ticking) return;
        itimerspec tick{};
        if (on) tick = {{0, 10'000'000}, {0, 10'000'000}};
        timerfd_settime(relay_timer, 0, &tick, nullptr);
        relay_ticking = on;
    };
    enum : uint64_t { kQueue, kTasks, kTimer, kRelayTimer };
    for (auto [fd, tag] : {std::pair{nfqueue_->fd(), kQueue},
                           {task_fd_, kTasks},
                           {timer, kTimer},
                           {relay_timer, kRelayTimer}}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag;
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev);
    }

    const size_t batch = config_->queue.batch_size;
    std::vector<std::function<void()>> tasks;
    while (running_) {
        epoll_event events[4];
        int n = epoll_wait(epoll, events, 4, -1);
        if (n < 0 && errno != EINTR) {
            spdlog::error("queue {}: epoll_wait: {}", queue_number_, strerror(errno));
            break;
        }
        for (int i = 0; i < n; ++i) {
            switch (events[i].data.u64) {
                case kQueue: {
                    // Drain what waits, answering each batch at once so that
                    // verdict latency stays one batch. Bounded, so that under
                    // sustained load the timer and requests still get their
                    // turn (epoll is level-triggered: the queue comes back).
                    size_t got;
                    int rounds = kMaxBatchesPerWakeup;
                    do {
                        loop.set_now(monotonic_ms());
                        try {
                            got = nfqueue_->receive(loop.guarded());
                        } catch (const std::exception& e) {
                            spdlog::error("queue {}: {}", queue_number_, e.what());
                            got = 0;
                        }
                        nfqueue_->flush();
                        loop.end_batch();
                    } while (got == batch && --rounds > 0);
                    tick_relays(loop.relaying());
                    break;
                }
                case kRelayTimer: {
                    uint64_t expirations;
                    (void)!read(relay_timer, &expirations, sizeof expirations);
                    tick_relays(loop.relay_timers());
                    break;
                }
                case kTasks: {
                    uint64_t count;
                    (void)!read(task_fd_, &count, sizeof count);
                    {
                        std::lock_guard lock(tasks_mutex_);
                        tasks.swap(tasks_);
                    }
                    for (auto& task : tasks)
                        task();
                    tasks.clear();
                    // Scan verdicts among them: what they released goes out.
                    nfqueue_->flush();
                    loop.end_batch();
                    tick_relays(loop.relaying());
                    break;
                }
                case kTimer: {
                    uint64_t expirations;
                    (void)!read(timer, &expirations, sizeof expirations);
                    loop.housekeeping();
                    nfqueue_->flush();  // e.g. fail-open restored
                    loop.end_batch();   // what ticks mapped (trickling) goes out
                    tick_relays(loop.relaying());
                    break;
                }
            }
        }
    }
    // Answer whatever is still pending so that callers do not hang.
    {
        std::lock_guard lock(tasks_mutex_);
        tasks.swap(tasks_);
    }
    for (auto& task : tasks)
        task();
    loop.reset_dependent_flows();
    nfqueue_->flush();
    loop_ = nullptr;
    close(relay_timer);
    close(timer);
    close(epoll);
}

OfflineWorker::OfflineWorker(VerdictQueue& queue, std::shared_ptr<const Config> config,
                             WorkerServices services, std::shared_ptr<CompletionSink> completions,
                             OfflineWorld world)
    : loop_(std::make_unique<QueueWorker::Loop>(queue, std::move(config), WorkerRelayDevice{},
                                                std::move(services), std::move(completions),
                                                std::move(world))) {}

OfflineWorker::~OfflineWorker() = default;

void OfflineWorker::on_packet(const QueuedPacket& packet) {
    loop_->set_now(loop_->clock());
    loop_->guarded().on_packet(packet);
}
void OfflineWorker::end_batch() {
    loop_->end_batch();
}
void OfflineWorker::housekeeping() {
    loop_->housekeeping();
}
bool OfflineWorker::relay_timers() {
    return loop_->relay_timers();
}
uint64_t OfflineWorker::scans_in_flight() const {
    return loop_->scans_in_flight();
}
WorkerSnapshot OfflineWorker::snapshot() {
    return loop_->snapshot();
}

std::optional<std::vector<FlowInfo>> QueueWorker::flows(size_t limit,
                                                        std::chrono::milliseconds timeout) {
    return call<std::vector<FlowInfo>>([this, limit] { return loop_->list_flows(limit); }, timeout);
}

void QueueWorker::apply_config(std::shared_ptr<const Config> config) {
    post([this, config] {
        config_ = config;
        if (loop_) loop_->apply_config(config);
    });
}

}  // namespace nfqscan
