// nfqscand --replay: a capture's packets through a worker's packet handling
// (OfflineWorker: the live flow table, classifier, stream engine, inspectors,
// scan service and policy), offline and as fast as it goes, reporting every
// detection and action nfqscand would have taken. Nothing is sent: verdicts
// are counted, the segments the engine would send are counted and dropped.
// The clock is the capture's; each scan's verdict is waited for before the
// next packet, so the outcome does not depend on the machine's speed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/scan_event_log.h"
#include "nfqscan/worker.h"

namespace nfqscan {

class ScanService;

// What the replayed queue was told (ReplayQueue).
struct ReplayVerdicts {
    uint64_t accepted = 0, replaced = 0, dropped = 0;
    uint64_t released = 0;     // NF_REPEAT with the release mark: the fast path
    uint64_t held_at_end = 0;  // packets still held when the capture ended
    uint64_t injected = 0;     // segments nfqscand would have sent itself
};

struct ReplayReport {
    std::string capture, link_type;
    uint64_t frames = 0;      // records in the capture
    uint64_t ip_packets = 0;  // handed to the worker
    uint64_t outgoing = 0;    // cooked capture: sent by the capturing host, skipped
    // Cooked capture, from a TUN device while [stream] relay_device is set:
    // nfqscand's own relayed output, skipped.
    uint64_t tunnel = 0;
    uint64_t not_ip = 0;      // not IPv4/IPv6
    uint64_t bad_frames = 0;  // link header cut off, or an unknown link type
    uint64_t snapped = 0;     // cut by the snap length (tcpdump -s 0 captures whole)
    uint64_t time_went_back = 0;
    uint64_t nat_flows = 0;    // flows whose halves were paired across NAT (nat_undo.h)
    uint64_t nat_packets = 0;  // packets given the address nfqscand saw         // timestamps older
                               // than the one before (taken as equal)
    uint64_t first_us = 0, last_us = 0;  // capture time span
    double elapsed_s = 0;                // how long the replay took
    std::string read_error;              // the capture ended with a read error
    std::vector<ScanEvent> events;       // time: the capture's; none with on_event
    uint64_t event_count = 0;
    ReplayVerdicts verdicts;
    WorkerSnapshot worker;
};

struct ReplayOptions {
    std::string capture;
    std::shared_ptr<const Config> config;
    ScanService* scan = nullptr;  // nullptr: objects get engine-not-ready
    // Each event as it happens (--json prints it at once), instead of
    // keeping them all in the report.
    std::function<void(const ScanEvent&)> on_event;
};

// Throws CaptureError when the capture cannot be opened or its link type is
// not supported; a read error part way through ends the replay and is
// reported in read_error.
ReplayReport replay_capture(const ReplayOptions& options);

// The configuration a replay runs with: one queue taking every flow, no
// engine mark (no kernel to save it).
std::shared_ptr<const Config> replay_config(const Config& config);

// The human report: a table of the events, then what the replay saw.
std::string format_replay_table(const ReplayReport& report);
std::string format_replay_summary(const ReplayReport& report);

// `nfqscand --replay`: loads the scan engines, replays, prints; the exit
// status (0, 1: the capture or the engines failed).
struct ReplayCommand {
    std::string capture;
    bool json = false;
};
int run_replay(const ReplayCommand& command, const Config& config);

}  // namespace nfqscan
