// The status snapshot as Prometheus metrics: which status field becomes
// which metric. Names follow Prometheus' conventions: nfqscan_ prefix,
// counters end in _total, base units (seconds, bytes), what varies (queue,
// protocol, category, action, engine...) is a label, not part of the name.
#include <algorithm>
#include <initializer_list>
#include <span>

#include "nfqscan/metrics.h"

namespace nfqscan {

namespace {

using json = nlohmann::json;
using Type = Exposition::Type;
using Labels = Exposition::Labels;

constexpr Type kCounter = Type::Counter;
constexpr Type kGauge = Type::Gauge;

// One status field and the metric it becomes.
struct Field {
    const char* key;
    const char* metric;
    Type type;
    const char* help;
};

// The member `key` of `object`, or null.
const json& member(const json& object, std::string_view key) {
    static const json none;
    if (!object.is_object()) return none;
    auto it = object.find(key);
    return it == object.end() ? none : *it;
}

// A label value from a JSON scalar (a queue number, a name).
std::string format_label(const json& value) {
    return value.is_string() ? value.get<std::string>() : value.dump();
}

Labels with(Labels labels, std::string name, std::string value) {
    labels.emplace_back(std::move(name), std::move(value));
    return labels;
}

// Every number of `object` as one sample of `metric`, the key as `label`.
void labelled(Exposition& out, const json& object, const char* metric, Type type, const char* help,
              const char* label, const Labels& labels = {}) {
    if (!object.is_object()) return;
    for (const auto& [key, value] : object.items())
        if (value.is_number()) out.sample(metric, type, help, with(labels, label, key), value);
}

// Every counter of `object` (numbers, but not the keys in `skip`) as a
// metric of its own: PREFIX_KEY_total. For tables of unrelated counters
// that a label would wrongly invite to sum.
void own_counters(Exposition& out, const json& object, std::string_view prefix,
                  std::string_view what, std::initializer_list<std::string_view> skip = {}) {
    if (!object.is_object()) return;
    for (const auto& [key, value] : object.items()) {
        if (!value.is_number() || std::find(skip.begin(), skip.end(), key) != skip.end()) continue;
        out.sample(std::string(prefix) + key + "_total", kCounter,
                   std::string(what) + " " + key + " (nfqscanctl status --json)", {}, value);
    }
}

constexpr Field kQueueFields[] = {
    {"packets", "nfqscan_queue_packets_total", kCounter, "Packets read from the queue."},
    {"bytes", "nfqscan_queue_bytes_total", kCounter, "Bytes of the packets read from the queue."},
    {"verdicts", "nfqscan_queue_verdicts_total", kCounter, "Verdicts given to the kernel."},
    {"verdict_messages", "nfqscan_queue_verdict_messages_total", kCounter,
     "Verdict messages sent (a batch verdict covers several packets)."},
    {"verdict_batches", "nfqscan_queue_verdict_batches_total", kCounter,
     "sendmsg calls carrying verdicts."},
    {"recv_batches", "nfqscan_queue_receive_batches_total", kCounter,
     "recvmmsg calls that read packets."},
    {"enobufs", "nfqscan_queue_enobufs_total", kCounter,
     "ENOBUFS on the queue's socket: the kernel dropped messages."},
    {"netlink_errors", "nfqscan_queue_netlink_errors_total", kCounter,
     "Error messages from the kernel on the queue's socket."},
    {"truncated", "nfqscan_queue_truncated_packets_total", kCounter,
     "Packets that arrived truncated."},
    {"fail_open", "nfqscan_queue_fail_open", kGauge,
     "1 while the kernel's fail-open is in force on the queue."},
    {"fail_open_suspensions", "nfqscan_queue_fail_open_suspensions_total", kCounter,
     "Times fail-open was switched off because flows entered the stream engine."},
    {"malformed", "nfqscan_queue_malformed_packets_total", kCounter,
     "Packets the decoder refused."},
    {"released", "nfqscan_queue_released_verdicts_total", kCounter,
     "Packets answered with the release mark."},
    {"replaced", "nfqscan_queue_replaced_packets_total", kCounter,
     "Verdicts carrying a rewritten packet."},
    {"flows", "nfqscan_queue_flows", kGauge, "Flows tracked by the queue's worker."},
    {"stream_memory_bytes", "nfqscan_queue_stream_memory_bytes", kGauge,
     "Stream engine buffers of the queue's worker."},
    {"stream_memory_limit", "nfqscan_queue_stream_memory_limit_bytes", kGauge,
     "The worker's share of [stream] memory_limit."},
};

constexpr Field kKernelQueueFields[] = {
    {"queue_total", "nfqscan_kernel_queue_waiting_packets", kGauge,
     "Packets the kernel holds for the queue now (/proc/net/netfilter/nfnetlink_queue)."},
    {"queue_dropped", "nfqscan_kernel_queue_dropped_packets_total", kCounter,
     "Packets the kernel dropped: the queue was full."},
    {"user_dropped", "nfqscan_kernel_queue_user_dropped_packets_total", kCounter,
     "Packets the kernel dropped: the netlink socket's buffer was full."},
    {"id_sequence", "nfqscan_kernel_queue_packets_total", kCounter,
     "Packets the kernel queued (its packet id sequence)."},
};

constexpr Field kFlowFields[] = {
    {"active", "nfqscan_flows_active", kGauge, "Flows tracked now."},
    {"total", "nfqscan_flows_created_total", kCounter, "Flows created."},
    {"evicted", "nfqscan_flows_evicted_total", kCounter, "Flows evicted: the table was full."},
    {"expired", "nfqscan_flows_expired_total", kCounter, "Flows that timed out."},
    {"released", "nfqscan_flows_released_total", kCounter,
     "Flows released to the kernel's fast path."},
    {"claimed", "nfqscan_flows_claimed_total", kCounter, "Flows claimed by an inspector."},
    {"max", "nfqscan_flows_max", kGauge, "[flows] max_flows."},
    {"memory_bytes", "nfqscan_flow_table_memory_bytes", kGauge,
     "Memory of the flow tables (estimate)."},
};

constexpr Field kProtocolFields[] = {
    {"flows", "nfqscan_protocol_flows_total", kCounter, "Flows inspected."},
    {"objects", "nfqscan_objects_total", kCounter, "Objects handed to the scan service."},
    {"scanned_bytes", "nfqscan_protocol_scanned_bytes_total", kCounter, "Bytes of the objects."},
    {"allowlisted", "nfqscan_objects_allowlisted_total", kCounter,
     "Objects not scanned: an allowlist names them."},
    {"held_bytes", "nfqscan_protocol_held_bytes", kGauge, "Object bytes held now."},
};

constexpr Field kStreamFields[] = {
    {"active", "nfqscan_streams_active", kGauge, "Flows in the stream engine now."},
    {"memory_bytes", "nfqscan_stream_memory_bytes", kGauge, "Stream engine buffers now."},
    {"memory_limit", "nfqscan_stream_memory_limit_bytes", kGauge, "[stream] memory_limit."},
    {"rewritten_packets", "nfqscan_stream_rewritten_packets_total", kCounter,
     "Packets rewritten (sequence numbers, payload)."},
    {"injected_packets", "nfqscan_stream_injected_packets_total", kCounter,
     "Packets nfqscand sent itself."},
    {"sack_acks", "nfqscan_stream_sack_acks_total", kCounter,
     "ACKs with SACK blocks sent to senders for held data."},
    {"held_packets", "nfqscan_stream_held_packets", kGauge, "Packets held behind a gap now."},
    {"conflicts", "nfqscan_stream_conflicts_total", kCounter,
     "Retransmitted bytes that differed from the inspected ones."},
    {"held_overflow", "nfqscan_stream_held_overflow_total", kCounter,
     "Segments dropped: [stream] hold_limit reached."},
    {"stalls", "nfqscan_stream_stalls_total", kCounter,
     "Times a sender waited on held bytes (the inspector had to map them)."},
    {"tails_acknowledged", "nfqscan_stream_tails_acknowledged_total", kCounter,
     "Kept input before a gap that nfqscand acknowledged."},
    {"resets", "nfqscan_stream_resets_total", kCounter, "RSTs sent to peers."},
    {"nat_flows", "nfqscan_stream_nat_flows_total", kCounter,
     "Flows whose own segments carry NAT addresses."},
    {"engine_marked", "nfqscan_stream_engine_marked_flows_total", kCounter,
     "Flows given the engine mark."},
    {"conntrack_tcp_liberal", "nfqscan_conntrack_tcp_liberal", kGauge,
     "net.netfilter.nf_conntrack_tcp_be_liberal (the stream engine needs 1)."},
};

constexpr Field kRelayFields[] = {
    {"active", "nfqscan_relays_active", kGauge, "Directions in store-and-forward now."},
    {"started", "nfqscan_relays_started_total", kCounter,
     "Directions that went into store-and-forward."},
    {"acks", "nfqscan_relay_acks_total", kCounter, "ACKs sent to senders for relayed data."},
    {"segments", "nfqscan_relay_segments_total", kCounter, "Segments the relay sent."},
    {"retransmissions", "nfqscan_relay_retransmissions_total", kCounter,
     "Segments the relay sent again."},
    {"timeouts", "nfqscan_relay_timeouts_total", kCounter, "Relay retransmission timeouts."},
    {"buffer_full", "nfqscan_relay_buffer_full_total", kCounter,
     "Segments dropped: the relay buffer was full."},
    {"gso_frames", "nfqscan_relay_gso_frames_total", kCounter,
     "Frames of several segments written to the relay device."},
    {"device_frames", "nfqscan_relay_device_frames_total", kCounter,
     "Frames written to the relay device."},
    {"device_errors", "nfqscan_relay_device_errors_total", kCounter,
     "Failed writes to the relay device."},
    {"device_queued", "nfqscan_relay_device_queued_total", kCounter,
     "Relay device frames the ruleset queued back (the mark rule is missing)."},
};

constexpr Field kScanFields[] = {
    {"ready", "nfqscan_scan_engines_ready", kGauge, "1 when scan engines are loaded."},
    {"generation", "nfqscan_scan_engine_generation", kGauge,
     "Generation of the scan engines in use (0: none yet)."},
    {"loading", "nfqscan_scan_engines_loading", kGauge, "1 while engines are being built."},
    {"threads", "nfqscan_scan_threads", kGauge, "Scan pool threads."},
    {"scanner_restarts", "nfqscan_scanner_restarts_total", kCounter,
     "Scanner processes replaced after a crash or hang."},
    {"submitted", "nfqscan_scan_submitted_total", kCounter,
     "Objects submitted to the scan service (including refused ones)."},
    {"completed", "nfqscan_scan_completed_total", kCounter, "Verdicts produced."},
    {"bytes", "nfqscan_scan_bytes_total", kCounter, "Object bytes scanned."},
};

constexpr Field kScanQueueFields[] = {
    {"capacity", "nfqscan_scan_queue_capacity", kGauge, "[scan] queue_length."},
    {"depth", "nfqscan_scan_queue_depth", kGauge, "Objects waiting for a scan thread now."},
    {"depth_max", "nfqscan_scan_queue_depth_max", kGauge,
     "Most objects ever waiting for a scan thread."},
};

constexpr Field kCacheFields[] = {
    {"capacity", "nfqscan_verdict_cache_capacity", kGauge,
     "[scan] cache_entries in force (0: off)."},
    {"entries", "nfqscan_verdict_cache_entries", kGauge, "Verdicts cached now."},
    {"memory_bytes", "nfqscan_verdict_cache_memory_bytes", kGauge,
     "Memory of the verdict cache (estimate)."},
    {"hits", "nfqscan_verdict_cache_hits_total", kCounter, "Objects judged by the cache."},
    {"misses", "nfqscan_verdict_cache_misses_total", kCounter, "Objects the cache did not know."},
    {"inserts", "nfqscan_verdict_cache_inserts_total", kCounter, "Verdicts cached."},
    {"evictions", "nfqscan_verdict_cache_evictions_total", kCounter,
     "Least recently used entries dropped beyond capacity."},
    {"invalidated", "nfqscan_verdict_cache_invalidated_total", kCounter,
     "Entries dropped by engine reloads."},
};

constexpr Field kEventLogFields[] = {
    {"open", "nfqscan_event_log_open", kGauge, "1 while the event log is open."},
    {"written", "nfqscan_event_log_written_total", kCounter, "Events written."},
    {"failed", "nfqscan_event_log_failed_total", kCounter, "Events that could not be written."},
};

void add_fields(Exposition& out, const json& object, std::span<const Field> table,
                const Labels& labels = {}) {
    for (const Field& f : table)
        out.sample(f.metric, f.type, f.help, labels, member(object, f.key));
}

void queues(Exposition& out, const json& list) {
    if (!list.is_array()) return;
    for (const json& q : list) {
        const Labels labels = {{"queue", format_label(member(q, "queue"))}};
        add_fields(out, q, kQueueFields, labels);
        add_fields(out, member(q, "kernel"), kKernelQueueFields, labels);
    }
}

// dpi_protocols[] and services[]: {name, active, total} per label value.
void label_counts(Exposition& out, const json& list, const char* label, const char* active,
                  const char* total, const char* what) {
    if (!list.is_array()) return;
    for (const json& entry : list) {
        const Labels labels = {{label, format_label(member(entry, "name"))}};
        out.sample(active, kGauge, std::string(what) + ": flows now.", labels,
                   member(entry, "active"));
        out.sample(total, kCounter, std::string(what) + ": flows created.", labels,
                   member(entry, "total"));
    }
}

void packets(Exposition& out, const json& p) {
    for (const char* transport : {"tcp", "udp", "other"})
        out.sample("nfqscan_packets_total", kCounter, "Packets by transport protocol.",
                   {{"transport", transport}}, member(p, transport));
    own_counters(out, p, "nfqscan_packets_", "Packets:", {"tcp", "udp", "other"});
}

void protocols(Exposition& out, const json& table) {
    if (!table.is_object()) return;
    for (const auto& [name, p] : table.items()) {
        const Labels labels = {{"protocol", name}};
        add_fields(out, p, kProtocolFields, labels);
        for (const char* result : {"clean", "infected"})
            out.sample("nfqscan_objects_scanned_total", kCounter,
                       "Objects judged, by verdict (errors: nfqscan_object_errors_total).",
                       with(labels, "result", result), member(p, result));
        labelled(out, member(p, "errors"), "nfqscan_object_errors_total", kCounter,
                 "Objects not judged, by error category (each has a fallback action).", "category",
                 labels);
        labelled(out, member(p, "actions"), "nfqscan_actions_total", kCounter,
                 "Actions on objects not judged clean.", "action", labels);
        labelled(out, member(p, "released"), "nfqscan_protocol_flows_released_total", kCounter,
                 "Flows of the protocol released unscanned, by reason.", "reason", labels);
        labelled(out, member(p, "inspector"), "nfqscan_inspector_events_total", kCounter,
                 "The inspector's own counters, summed over flows.", "event", labels);
        labelled(out, member(p, "spam"), "nfqscan_spam_total", kCounter,
                 "Messages judged spam, by the action taken ([protocols.*] on_spam).", "action",
                 labels);
    }
}

void streams(Exposition& out, const json& s) {
    add_fields(out, s, kStreamFields);
    const json& overflow = member(s, "overflow");
    for (const char* outcome : {"bypassed", "dropped"})
        out.sample("nfqscan_stream_overflow_total", kCounter,
                   "[stream] memory_limit reached: flows bypassed, packets dropped.",
                   {{"outcome", outcome}}, member(overflow, outcome));
    out.sample("nfqscan_stream_memory_refused_segments_total", kCounter,
               "Segments of admitted flows dropped at the memory cap.", {},
               member(overflow, "refused_segments"));
    out.sample("nfqscan_stream_memory_resets_total", kCounter,
               "Flows reset: over the memory cap and not progressing.", {},
               member(overflow, "resets"));
    add_fields(out, member(s, "relay"), kRelayFields);
    labelled(out, member(s, "inject"), "nfqscan_inject_failures_total", kCounter,
             "Raw socket sends that failed (failed: refused, busy: send buffer full).", "reason");
    labelled(out, member(s, "peer_checks"), "nfqscan_stream_peer_checks_total", kCounter,
             "Packets of the peers refused by the stream engine's checks.", "check");
}

// A status histogram {buckets: [{le_us, count}...], total_us}, in seconds.
void histogram(Exposition& out, const json& h, const char* name, const char* help) {
    const json& buckets = member(h, "buckets");
    if (!buckets.is_array()) return;
    std::vector<double> bounds;
    std::vector<uint64_t> counts;
    for (const json& b : buckets) {
        const json& le = member(b, "le_us");
        if (le.is_number()) bounds.push_back(le.get<double>() / 1e6);
        const json& n = member(b, "count");
        const bool count =
            n.is_number_unsigned() || (n.is_number_integer() && n.get<int64_t>() >= 0);
        counts.push_back(count ? n.get<uint64_t>() : 0);
    }
    const json& total = member(h, "total_us");
    out.histogram(name, help, {}, bounds, counts,
                  total.is_number() ? total.get<double>() / 1e6 : 0.0);
}

void scan(Exposition& out, const json& s) {
    add_fields(out, s, kScanFields);
    const json& pids = member(s, "scanner_pids");
    if (pids.is_array())
        out.sample("nfqscan_scanner_processes", kGauge,
                   "Scanner processes of the engines in use (isolation = process).", {},
                   pids.size());
    if (s.contains("last_reload_error"))
        out.sample("nfqscan_scan_last_reload_failed", kGauge,
                   "1 when the last engine reload failed (the running engines stayed).", {},
                   !member(s, "last_reload_error").is_null());
    if (member(s, "backend").is_string())
        out.sample("nfqscan_scan_info", kGauge, "The scan backend and isolation in use.",
                   {{"backend", format_label(member(s, "backend"))},
                    {"isolation", format_label(member(s, "isolation"))}},
                   1);
    const json& signatures = member(s, "signatures");
    if (signatures.is_object()) {
        out.sample("nfqscan_signature_rebuilds_total", kCounter,
                   "Engine builds started because signature files changed.", {},
                   member(signatures, "builds"));
        labelled(out, member(signatures, "checks"), "nfqscan_signature_checks_total", kCounter,
                 "Checks of the signature folders, by what started them.", "trigger");
    }
    add_fields(out, member(s, "queue"), kScanQueueFields);
    for (const char* result : {"clean", "skipped", "infected"})
        out.sample("nfqscan_scan_verdicts_total", kCounter,
                   "Verdicts by result (skipped: clean, excluded by the scan profile; "
                   "errors: nfqscan_scan_errors_total).",
                   {{"result", result}}, member(s, result));
    labelled(out, member(s, "errors"), "nfqscan_scan_errors_total", kCounter,
             "Error verdicts by category.", "category");
    histogram(out, member(s, "scan_latency"), "nfqscan_scan_duration_seconds",
              "Time to scan one object (scans only, not cached verdicts).");
    histogram(out, member(s, "queue_wait"), "nfqscan_scan_queue_wait_seconds",
              "Time an object waited for a scan thread.");
    const json& engines = member(s, "engines");
    if (engines.is_object()) {
        for (const auto& [engine, c] : engines.items()) {
            const Labels labels = {{"engine", engine}};
            out.sample("nfqscan_engine_scans_total", kCounter,
                       "Objects (ClamAV) or layers (YARA) scanned.", labels, member(c, "scans"));
            out.sample("nfqscan_engine_detections_total", kCounter, "Detections.", labels,
                       member(c, "detections"));
            out.sample("nfqscan_engine_errors_total", kCounter, "Scan errors.", labels,
                       member(c, "errors"));
            out.sample("nfqscan_engine_bytes_total", kCounter, "Bytes scanned.", labels,
                       member(c, "bytes"));
            const json& busy = member(c, "busy_us");
            if (busy.is_number())
                out.sample("nfqscan_engine_busy_seconds_total", kCounter, "Time spent scanning.",
                           labels, busy.get<double>() / 1e6);
        }
    }
    add_fields(out, member(s, "cache"), kCacheFields);
    add_fields(out, member(s, "event_log"), kEventLogFields);
}

void notify(Exposition& out, const json& n) {
    if (!n.is_object()) return;
    for (const auto& [key, value] : n.items())
        if (value.is_number() && key != "queued_now")
            out.sample("nfqscan_notifications_total", kCounter,
                       "Sender notifications by outcome (queued: accepted; then sent, failed, "
                       "rate_limited, null_sender, invalid, dropped).",
                       {{"outcome", key}}, value);
    out.sample("nfqscan_notifications_waiting", kGauge, "Notifications waiting to be sent now.", {},
               member(n, "queued_now"));
}

void ftp(Exposition& out, const json& f) {
    own_counters(out, f, "nfqscan_ftp_", "FTP:", {"expected_now"});
    out.sample("nfqscan_ftp_expectations_waiting", kGauge,
               "Data connections announced on a control connection and not seen yet.", {},
               member(f, "expected_now"));
}

}  // namespace

std::string metrics_text(const json& status) {
    Exposition out;
    out.sample("nfqscan_build_info", kGauge, "The nfqscand version (the value is 1).",
               {{"version", format_label(member(status, "version"))}}, 1);
    out.sample("nfqscan_uptime_seconds", kGauge, "Time since nfqscand started.", {},
               member(status, "uptime_s"));
    queues(out, member(status, "queues"));
    add_fields(out, member(status, "flows"), kFlowFields);
    label_counts(out, member(status, "services"), "service", "nfqscan_service_flows_active",
                 "nfqscan_service_flows_total", "Flows by service (what claimed them)");
    label_counts(out, member(status, "dpi_protocols"), "dpi_protocol", "nfqscan_dpi_flows_active",
                 "nfqscan_dpi_flows_total", "Flows by nDPI protocol");
    packets(out, member(status, "packets"));
    protocols(out, member(status, "protocols"));
    streams(out, member(status, "streams"));
    scan(out, member(status, "scan"));
    notify(out, member(status, "notify"));
    ftp(out, member(status, "ftp"));
    return out.text();
}

}  // namespace nfqscan
