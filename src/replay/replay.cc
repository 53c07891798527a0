#include "nfqscan/replay.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "nat_undo.h"
#include "nfqscan/capture.h"
#include "nfqscan/ftp_expectations.h"
#include "nfqscan/scan.h"
#include "nfqscan/timestamp.h"

namespace nfqscan {

namespace {

// From <linux/netfilter.h>, which clashes with <netinet/in.h>.
constexpr uint32_t kVerdictDrop = 0, kVerdictAccept = 1, kVerdictRepeat = 4;
constexpr uint64_t kHousekeepingMs = 1000;  // the live worker's tick
// Ticks run for one silence in the capture: more than the memory cap's
// "stuck" period (10 s), which needs consecutive ticks.
constexpr uint64_t kMaxTicksPerGap = 30;
// A scan's verdict is waited for this long: a scanner that hangs is killed
// by the scan service's own timeout well before.
constexpr auto kVerdictWait = std::chrono::minutes(10);

// The queue as the worker sees it: every verdict counted, nothing sent.
class ReplayQueue final : public VerdictQueue {
  public:
    explicit ReplayQueue(ReplayVerdicts& verdicts) : verdicts_(verdicts) {}
    uint16_t queue() const override { return 0; }
    void accept(uint32_t id) override { answer(id, verdicts_.accepted); }
    void drop(uint32_t id) override { answer(id, verdicts_.dropped); }
    void verdict(uint32_t id, uint32_t verdict, std::optional<uint32_t>,
                 std::span<const uint8_t> packet) override {
        if (verdict == kVerdictDrop)
            answer(id, verdicts_.dropped);
        else if (verdict == kVerdictRepeat)
            answer(id, verdicts_.released);
        else if (verdict == kVerdictAccept && !packet.empty())
            answer(id, verdicts_.replaced);
        else
            answer(id, verdicts_.accepted);
    }
    void hold(uint32_t id) override {
        held_.insert(id);
        answered_.note(id);
    }
    bool answered(uint32_t id) const override { return answered_.covers(id); }
    const QueueCounters& counters() const override { return counters_; }
    void set_fail_open(bool) override {}
    bool fail_open() const override { return false; }

    void count_packet(size_t bytes) {
        ++counters_.packets;
        counters_.bytes += bytes;
    }
    uint64_t held() const { return held_.size(); }

  private:
    void answer(uint32_t id, uint64_t& counter) {
        ++counter;
        ++counters_.verdicts;
        held_.erase(id);
        answered_.note(id);
    }

    ReplayVerdicts& verdicts_;
    QueueCounters counters_;
    std::unordered_set<uint32_t> held_;
    AnsweredIds answered_;
};

// Scan verdicts and wakeups, posted from the pool's threads, run on the
// replaying thread when it asks for them.
class ReplayCompletions final : public CompletionSink {
  public:
    void post(std::function<void()> task) override {
        {
            std::lock_guard lock(mutex_);
            tasks_.push_back(std::move(task));
        }
        posted_.notify_one();
    }
    // Runs what waits; with `wait`, first waits for at least one task.
    // False: waited in vain.
    bool run(bool wait) {
        std::deque<std::function<void()>> tasks;
        {
            std::unique_lock lock(mutex_);
            if (wait && !posted_.wait_for(lock, kVerdictWait, [this] { return !tasks_.empty(); }))
                return false;
            tasks.swap(tasks_);
        }
        for (auto& task : tasks)
            task();
        return true;
    }

  private:
    std::mutex mutex_;
    std::condition_variable posted_;
    std::deque<std::function<void()>> tasks_;
};

// The capture's handshakes, paired across NAT: a first pass over the file
// with the replay's own choice of frames.
NatUndo learn_nat(const std::string& path, int link_type, bool skip_tunnels) {
    NatUndo nat;
    CaptureReader reader(path);
    CapturedPacket captured;
    CaptureFrame frame;
    DecodedPacket p;
    while (reader.next(captured))
        if (parse_frame(link_type, captured.data, frame) == FrameStatus::Ok &&
            !(frame.tunnel && skip_tunnels) && decode_packet(frame.ip, p) == DecodeStatus::Ok)
            nat.learn(p);
    return nat;
}

std::chrono::system_clock::time_point capture_time(uint64_t us) {
    return std::chrono::system_clock::time_point(std::chrono::microseconds(us));
}

}  // namespace

std::shared_ptr<const Config> replay_config(const Config& config) {
    auto c = std::make_shared<Config>(config);
    // One worker sees every flow: it gets the whole flow cap and stream memory.
    c->daemon.queues = {0, 0};
    // The engine mark asks the kernel to queue a packet again; no kernel here.
    c->marks.engine = 0;
    return c;
}

ReplayReport replay_capture(const ReplayOptions& options) {
    ReplayReport report;
    report.capture = options.capture;
    CaptureReader reader(options.capture);
    report.link_type = reader.link_type_name();
    if (!supported_link_type(reader.link_type()))
        throw CaptureError(options.capture + ": link type " + report.link_type +
                           " is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP)");

    uint64_t now_ms = 0;
    uint64_t now_us = 0;
    ReplayQueue queue(report.verdicts);
    auto completions = std::make_shared<ReplayCompletions>();
    FtpExpectations ftp;
    WorkerServices services;
    services.scan = options.scan;
    services.ftp = &ftp;
    services.on_event = [&](const ScanEvent& e) {
        ScanEvent event = e;
        event.time = capture_time(now_us);
        ++report.event_count;
        // Printed as they come, or kept for the table.
        if (options.on_event)
            options.on_event(event);
        else
            report.events.push_back(std::move(event));
    };
    OfflineWorld world;
    world.clock = [&] { return now_ms; };
    world.sent = [&](const PacketVerdict&) { ++report.verdicts.injected; };
    OfflineWorker worker(queue, options.config, services, completions, world);

    // Every verdict the scans owe, before time moves on: the outcome must
    // not depend on how fast this machine scans.
    auto settle = [&] {
        completions->run(false);
        worker.end_batch();
        while (worker.scans_in_flight() > 0) {
            if (!completions->run(true))
                throw std::runtime_error("a scan verdict did not come back within 10 minutes");
            worker.end_batch();
        }
    };

    const auto started = std::chrono::steady_clock::now();
    const bool skip_tunnels = !options.config->stream.relay_device.empty();
    uint64_t next_tick_ms = 0;
    NatUndo nat = learn_nat(options.capture, reader.link_type(), skip_tunnels);
    std::vector<uint8_t> nat_scratch;
    uint32_t id = 0;
    CapturedPacket captured;
    while (reader.next(captured)) {
        ++report.frames;
        if (report.frames == 1) {
            report.first_us = captured.time_us;
            now_ms = captured.time_us / 1000;
            next_tick_ms = now_ms + kHousekeepingMs;
        }
        if (captured.time_us < now_us) {
            ++report.time_went_back;
            captured.time_us = now_us;
        }
        now_us = captured.time_us;
        report.last_us = now_us;
        // The worker's timers, at the capture's time. Over a long silence
        // only the last ticks run: with no packet between them the first
        // ones would change nothing the last ones do not (expiry is by
        // age), and a hostile timestamp years ahead must not cost a tick
        // per second.
        const uint64_t packet_ms = now_us / 1000;
        if (packet_ms > next_tick_ms + kMaxTicksPerGap * kHousekeepingMs)
            next_tick_ms = packet_ms - kMaxTicksPerGap * kHousekeepingMs;
        for (; next_tick_ms <= packet_ms; next_tick_ms += kHousekeepingMs) {
            now_ms = next_tick_ms;
            worker.housekeeping();
            worker.relay_timers();
            settle();
        }
        now_ms = now_us / 1000;
        worker.relay_timers();

        CaptureFrame frame;
        switch (parse_frame(reader.link_type(), captured.data, frame)) {
            case FrameStatus::Ok:
                break;
            case FrameStatus::Outgoing:
                ++report.outgoing;
                continue;
            case FrameStatus::NotIp:
                ++report.not_ip;
                continue;
            default:
                ++report.bad_frames;
                continue;
        }
        if (frame.tunnel && skip_tunnels) {
            ++report.tunnel;
            continue;
        }
        if (captured.wire_length > captured.data.size()) ++report.snapped;
        ++report.ip_packets;
        // As nfqscand saw it on the router: with NAT undone.
        if (DecodedPacket decoded; decode_packet(frame.ip, decoded) == DecodeStatus::Ok)
            frame.ip = nat.apply(frame.ip, decoded, nat_scratch);
        QueuedPacket packet;
        packet.id = ++id;
        packet.hw_protocol = frame.ethertype;
        packet.original_length = uint32_t(frame.ip.size());
        packet.data = frame.ip;
        queue.count_packet(frame.ip.size());
        worker.on_packet(packet);
        settle();
    }
    report.read_error = reader.error();
    report.nat_flows = nat.flows();
    report.nat_packets = nat.rewritten();
    settle();
    report.verdicts.held_at_end = queue.held();
    report.worker = worker.snapshot();
    report.elapsed_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return report;
}

namespace {

struct EventRow {
    std::string time, protocol, flow, direction, object, verdict, action;
};

EventRow row_of(const ScanEvent& event) {
    nlohmann::json j = nlohmann::json::parse(format_scan_event(event));
    EventRow r;
    r.time = j.value("time", "");
    r.protocol = j.value("protocol", "");
    r.flow = j.value("flow", "");
    r.direction = j.value("direction", "");
    r.object = j.value("object", "");
    std::string verdict = j.value("verdict", "");
    std::string name = j.value("name", "");
    std::string category = j.value("category", "");
    r.verdict = verdict;
    if (!name.empty()) r.verdict += " " + name;
    if (!category.empty() && name.empty()) r.verdict += " (" + category + ")";
    r.action = j.value("action", "");
    return r;
}

}  // namespace

std::string format_replay_table(const ReplayReport& report) {
    std::vector<EventRow> rows;
    rows.push_back({"TIME", "PROTOCOL", "FLOW", "DIRECTION", "OBJECT", "VERDICT", "ACTION"});
    for (const ScanEvent& e : report.events)
        rows.push_back(row_of(e));
    size_t w[6] = {};
    for (const EventRow& r : rows) {
        const std::string* cells[6] = {&r.time,      &r.protocol, &r.flow,
                                       &r.direction, &r.object,   &r.verdict};
        for (size_t i = 0; i < 6; ++i)
            w[i] = std::max(w[i], std::min<size_t>(cells[i]->size(), 60));
    }
    std::string out;
    for (const EventRow& r : rows)
        out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", r.time, w[0],
                           r.protocol, w[1], r.flow, w[2], r.direction, w[3], r.object, w[4],
                           r.verdict, w[5], r.action);
    return out;
}

std::string format_replay_summary(const ReplayReport& r) {
    std::string out;
    double span = r.last_us > r.first_us ? double(r.last_us - r.first_us) / 1e6 : 0;
    out += fmt::format("capture: {} ({}), {} frames over {:.3f} s, replayed in {:.3f} s\n",
                       r.capture, r.link_type, r.frames, span, r.elapsed_s);
    out += fmt::format(
        "packets: {} IPv4/IPv6 replayed; skipped: {} outgoing copies, {} from TUN devices, {} "
        "not IP, {} bad frames; {} cut by the snap length, {} timestamps out of order\n",
        r.ip_packets, r.outgoing, r.tunnel, r.not_ip, r.bad_frames, r.snapped, r.time_went_back);
    if (!r.read_error.empty()) out += "read error: " + r.read_error + "\n";
    if (r.nat_flows)
        out += fmt::format("NAT undone: {} flows paired across it, {} packets readdressed\n",
                           r.nat_flows, r.nat_packets);
    const ReplayVerdicts& v = r.verdicts;
    out += fmt::format(
        "verdicts: {} accepted, {} replaced, {} dropped, {} released to the fast path, {} "
        "held at the end; {} segments nfqscand would have sent\n",
        v.accepted, v.replaced, v.dropped, v.released, v.held_at_end, v.injected);
    const WorkerSnapshot& w = r.worker;
    out += fmt::format("flows: {} created, {} claimed, {} released, {} still open\n",
                       w.flows_created, w.flows_claimed, w.flows_released, w.flows_active);
    for (size_t s = 1; s < kServiceCount; ++s) {
        const InspectionCounters& c = w.protocols[s];
        if (c.objects == 0 && c.infected == 0) continue;
        out +=
            fmt::format("  {}: {} objects, {} infected\n", kServiceNames[s], c.objects, c.infected);
    }
    // Packets the stream engine refused: where a replay parts from what the
    // peers saw (a capture that missed packets, or one taken downstream of
    // a live nfqscand).
    std::string refused;
    for (const auto& [name, field] : PeerCheckCounters::kFields)
        if (w.streams.peer_checks.*field)
            refused += fmt::format(" {} {},", name, w.streams.peer_checks.*field);
    if (!refused.empty()) {
        refused.pop_back();
        out += "stream engine refused:" + refused + "\n";
    }
    out += fmt::format("events: {}\n", r.event_count);
    return out;
}

int run_replay(const ReplayCommand& command, const Config& loaded) {
    std::shared_ptr<const Config> config = replay_config(loaded);
    ScanService scan(config->scan);
    ReloadResult engines = scan.reload(config->scan);
    if (!engines.ok) {
        std::fprintf(stderr, "nfqscand: scan engines: %s\n", engines.error.c_str());
        return 1;
    }
    ReplayOptions options;
    options.capture = command.capture;
    options.config = config;
    options.scan = &scan;
    if (command.json)
        options.on_event = [](const ScanEvent& e) {
            std::string line = format_scan_event(e) + "\n";
            std::fwrite(line.data(), 1, line.size(), stdout);
            std::fflush(stdout);
        };
    ReplayReport report;
    try {
        report = replay_capture(options);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "nfqscand: replay: %s\n", e.what());
        return 1;
    }
    std::string summary = format_replay_summary(report);
    if (command.json) {
        std::fputs(summary.c_str(), stderr);
    } else {
        std::fputs(format_replay_table(report).c_str(), stdout);
        std::fputs("\n", stdout);
        std::fputs(summary.c_str(), stdout);
    }
    return report.read_error.empty() ? 0 : 1;
}

}  // namespace nfqscan
