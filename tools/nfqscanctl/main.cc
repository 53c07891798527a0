// nfqscanctl: inspect and steer a running nfqscand through its control
// socket. Human tables by default, --json for tools.
#include <fcntl.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "nfqscan/config.h"
#include "nfqscan/control.h"
#include "quarantine_cli.h"

namespace {

using nlohmann::json;

// Columns sized to their widest cell; numbers right-aligned.
class Table {
  public:
    explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
    void print() const {
        std::vector<size_t> width(rows_[0].size(), 0);
        for (const auto& row : rows_)
            for (size_t i = 0; i < row.size() && i < width.size(); ++i)
                width[i] = std::max(width[i], row[i].size());
        for (const auto& row : rows_) {
            std::string line;
            for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
                bool numeric =
                    !row[i].empty() && row[i].find_first_not_of("0123456789.") == std::string::npos;
                line += numeric ? fmt::format("{:>{}}", row[i], width[i])
                                : fmt::format("{:<{}}", row[i], width[i]);
                if (i + 1 < row.size()) line += "  ";
            }
            while (!line.empty() && line.back() == ' ')
                line.pop_back();
            std::puts(line.c_str());
        }
    }

  private:
    std::vector<std::vector<std::string>> rows_;
};

std::string num(const json& v) {
    if (v.is_number_float()) return fmt::format("{:.1f}", v.get<double>());
    if (v.is_number()) return std::to_string(v.get<uint64_t>());
    if (v.is_null()) return "-";
    return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string human_bytes(uint64_t b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(b);
    int u = 0;
    while (v >= 1024 && u < 4)
        v /= 1024, ++u;
    return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

std::string str(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string histogram_line(const json& h) {
    std::string out;
    for (const json& b : h.value("buckets", json::array())) {
        const uint64_t n = b.value("count", uint64_t(0));
        if (n == 0) continue;
        std::string le = b["le_us"].is_number()
                             ? (b["le_us"].get<uint64_t>() >= 1000
                                    ? fmt::format("{}ms", b["le_us"].get<uint64_t>() / 1000.0)
                                    : fmt::format("{}us", b["le_us"].get<uint64_t>()))
                             : "inf";
        out += fmt::format("  <={} {}", le, n);
    }
    return out.empty() ? "  -" : out;
}

void print_scan_status(const json& s) {
    std::string engines =
        s.value("ready", false)
            ? fmt::format("engines ready (generation {}, {})", num(s["generation"]),
                          num(s["backend"]))
            : fmt::format("engines not loaded yet ({}): verdicts are engine-not-ready",
                          num(s["backend"]));
    if (s.value("loading", false) && s.value("ready", false)) engines += ", reloading";
    std::printf("\nscan: %s, %s threads, queue %s/%s (max %s)\n", engines.c_str(),
                num(s["threads"]).c_str(), num(s["queue"]["depth"]).c_str(),
                num(s["queue"]["capacity"]).c_str(), num(s["queue"]["depth_max"]).c_str());
    if (str(s, "isolation") == "process") {
        std::string pids;
        for (const json& pid : s.value("scanner_pids", json::array()))
            pids += " " + num(pid);
        std::printf("  scanner processes:%s (%s restarted after a crash or hang)\n",
                    pids.empty() ? " none" : pids.c_str(), num(s["scanner_restarts"]).c_str());
    }
    if (!str(s, "last_reload_error").empty())
        std::printf("  last reload FAILED (%s): %s\n",
                    s.value("ready", false) ? "running engines kept" : "no engines",
                    str(s, "last_reload_error").c_str());
    if (s.contains("signatures") && s["signatures"].is_object()) {
        const json& w = s["signatures"];
        std::printf(
            "  signature updates: %s, self-check %s; %s checks, %s rebuilds (reload = %s)\n",
            w.value("inotify", false)
                ? fmt::format("inotify on {} folders", num(w["watched_folders"])).c_str()
                : "inotify off",
            w.value("self_check_s", 0) > 0
                ? fmt::format("every {} s", num(w["self_check_s"])).c_str()
                : "off",
            num(w["checks"]["inotify"].get<uint64_t>() + w["checks"]["self_check"].get<uint64_t>())
                .c_str(),
            num(w["builds"]).c_str(), str(s, "reload_mode").c_str());
    }
    std::string errors;
    uint64_t error_total = 0;
    for (const auto& [name, n] : s["errors"].items()) {
        if (n.get<uint64_t>() == 0) continue;
        error_total += n.get<uint64_t>();
        errors += fmt::format("{}{} {}", errors.empty() ? " (" : ", ", name, num(n));
    }
    if (!errors.empty()) errors += ")";
    std::printf(
        "  objects: %s submitted, %s verdicts: %s clean, %s skipped, %s infected, %s "
        "errors%s\n",
        num(s["submitted"]).c_str(), num(s["completed"]).c_str(), num(s["clean"]).c_str(),
        num(s["skipped"]).c_str(), num(s["infected"]).c_str(), std::to_string(error_total).c_str(),
        errors.c_str());
    const json& e = s["engines"];
    std::printf(
        "  throughput %.1f MB/s per busy thread, %s scanned; clamav %s objects, yara %s "
        "objects and layers\n",
        s.value("throughput_mb_per_s", 0.0), human_bytes(s.value("bytes", uint64_t(0))).c_str(),
        num(e["clamav"]["scans"]).c_str(), num(e["yara"]["scans"]).c_str());
    if (s.contains("cache")) {
        const json& c = s["cache"];
        if (c.value("capacity", uint64_t(0)) == 0)
            std::printf("  verdict cache: off\n");
        else
            std::printf(
                "  verdict cache: %s hits, %s misses; %s/%s entries, %s; %s evicted, %s "
                "dropped by reloads\n",
                num(c["hits"]).c_str(), num(c["misses"]).c_str(), num(c["entries"]).c_str(),
                num(c["capacity"]).c_str(),
                human_bytes(c.value("memory_bytes", uint64_t(0))).c_str(),
                num(c["evictions"]).c_str(), num(c["invalidated"]).c_str());
    }
    std::printf("  scan latency (%s, mean %s us):%s\n", num(s["scan_latency"]["count"]).c_str(),
                num(s["scan_latency"]["mean_us"]).c_str(),
                histogram_line(s["scan_latency"]).c_str());
    std::printf("  queue wait (%s, mean %s us):%s\n", num(s["queue_wait"]["count"]).c_str(),
                num(s["queue_wait"]["mean_us"]).c_str(), histogram_line(s["queue_wait"]).c_str());
    const json& log = s["event_log"];
    if (log.value("open", false))
        std::printf("  event log %s: %s written, %s failed\n", num(log["path"]).c_str(),
                    num(log["written"]).c_str(), num(log["failed"]).c_str());
    else
        std::printf("  event log %s: not open (%s)\n", num(log["path"]).c_str(),
                    str(log, "error").c_str());
}

// What the inspectors did, one row per protocol; the error categories and
// release reasons that happened, below it.
void print_protocols(const json& protocols) {
    Table t({"protocol", "flows", "objects", "scanned", "clean", "infected", "errors",
             "allowlisted", "blocked", "passed", "resets", "released", "held now"});
    std::vector<std::string> notes;
    for (const auto& [name, c] : protocols.items()) {
        uint64_t errors = 0, released = 0;
        for (const auto& [category, n] : c["errors"].items()) {
            errors += n.get<uint64_t>();
            if (n.get<uint64_t>())
                notes.push_back(fmt::format("{} {}: {}", name, category, num(n)));
        }
        for (const auto& [reason, n] : c["released"].items()) {
            released += n.get<uint64_t>();
            if (n.get<uint64_t>())
                notes.push_back(fmt::format("{} released ({}): {}", name, reason, num(n)));
        }
        if (c.contains("inspector")) {
            // The inspector's own counters (SmtpCounters, ...), one line.
            std::string own;
            for (const auto& [counter, n] : c["inspector"].items())
                own += fmt::format("{}{} {}", own.empty() ? "" : ", ", counter, num(n));
            notes.push_back(fmt::format("{}: {}", name, own));
        }
        if (c.contains("spam")) {
            // Spam verdicts by action, when there were any.
            std::string spam;
            for (const auto& [action, n] : c["spam"].items())
                if (n.get<uint64_t>())
                    spam += fmt::format("{}{} {}", spam.empty() ? "" : ", ", action, num(n));
            if (!spam.empty()) notes.push_back(fmt::format("{} spam: {}", name, spam));
        }
        const json& a = c["actions"];
        t.add({name, num(c["flows"]), num(c["objects"]),
               human_bytes(c["scanned_bytes"].get<uint64_t>()), num(c["clean"]), num(c["infected"]),
               num(json(errors)), num(c["allowlisted"]), num(a["block"]), num(a["pass"]),
               num(a["reset"]), num(json(released)), human_bytes(c["held_bytes"].get<uint64_t>())});
    }
    t.print();
    for (const std::string& n : notes)
        std::printf("  %s\n", n.c_str());
    std::puts("");
}

void print_status(const json& s) {
    std::printf("nfqscand %s  pid %s  up %s s  config %s\n\n", num(s["version"]).c_str(),
                num(s["pid"]).c_str(), num(s["uptime_s"]).c_str(), num(s["config"]).c_str());
    Table queues({"queue", "packets", "bytes", "verdicts", "msgs", "batches", "released",
                  "malformed", "enobufs", "fail-open", "k.waiting", "k.q_dropped", "k.user_dropped",
                  "k.id_seq"});
    for (const json& q : s["queues"]) {
        json k = q.value("kernel", json::object());
        queues.add({num(q["queue"]), num(q["packets"]), human_bytes(q["bytes"].get<uint64_t>()),
                    num(q["verdicts"]), num(q["verdict_messages"]), num(q["verdict_batches"]),
                    num(q["released"]), num(q["malformed"]), num(q["enobufs"]),
                    // Off while flows are in the stream engine (see README).
                    q.value("fail_open", false) ? "on" : "off", num(k.value("queue_total", json())),
                    num(k.value("queue_dropped", json())), num(k.value("user_dropped", json())),
                    num(k.value("id_sequence", json()))});
    }
    queues.print();
    const json& f = s["flows"];
    std::printf(
        "\nflows: %s active (max %s), %s total, %s claimed, %s released, %s expired, "
        "%s evicted, memory %s\n",
        num(f["active"]).c_str(), num(f["max"]).c_str(), num(f["total"]).c_str(),
        num(f["claimed"]).c_str(), num(f["released"]).c_str(), num(f["expired"]).c_str(),
        num(f["evicted"]).c_str(), human_bytes(f["memory_bytes"].get<uint64_t>()).c_str());
    const json& p = s["packets"];
    std::printf("packets: %s tcp, %s udp, %s other, %s malformed\n\n", num(p["tcp"]).c_str(),
                num(p["udp"]).c_str(), num(p["other"]).c_str(), num(p["malformed"]).c_str());
    if (s.contains("streams")) {
        const json& st = s["streams"];
        std::printf(
            "stream engine: %s streams, memory %s, %s packets rewritten, %s injected, "
            "%s held now, %s SACKs for held data, %s conflicts, %s held overflow, %s stalls, "
            "%s kept tails acknowledged\n\n",
            num(st["active"]).c_str(), human_bytes(st["memory_bytes"].get<uint64_t>()).c_str(),
            num(st["rewritten_packets"]).c_str(), num(st["injected_packets"]).c_str(),
            num(st["held_packets"]).c_str(), num(st.value("sack_acks", json())).c_str(),
            num(st["conflicts"]).c_str(), num(st["held_overflow"]).c_str(),
            num(st["stalls"]).c_str(), num(st.value("tails_acknowledged", json())).c_str());
    }
    Table services({"service", "active", "total"});
    for (const json& e : s["services"])
        services.add({num(e["name"]), num(e["active"]), num(e["total"])});
    services.print();
    std::puts("");
    if (s.contains("protocols") && !s["protocols"].empty()) print_protocols(s["protocols"]);
    if (s.contains("ftp")) {
        // FtpCounters: the daemon's, shared by every worker.
        const json& ftp = s["ftp"];
        std::printf(
            "ftp: %s sessions, %s data connections expected (%s now), %s claimed, %s expired, "
            "%s evicted; %s downloads, %s uploads, %s listings; %s files scanned, %s blocked, "
            "%s replies turned into 550; %s resumed (REST), %s aborted, %s data unseen, "
            "%s TLS, %s refused addresses, %s protocol errors\n\n",
            num(ftp["sessions"]).c_str(), num(ftp["expectations"]).c_str(),
            num(ftp["expected_now"]).c_str(), num(ftp["claimed"]).c_str(),
            num(ftp["expired"]).c_str(), num(ftp["evicted"]).c_str(), num(ftp["downloads"]).c_str(),
            num(ftp["uploads"]).c_str(), num(ftp["listings"]).c_str(),
            num(ftp["files_scanned"]).c_str(), num(ftp["files_blocked"]).c_str(),
            num(ftp["replies_replaced"]).c_str(), num(ftp["resumed"]).c_str(),
            num(ftp["aborted"]).c_str(), num(ftp["data_unseen"]).c_str(), num(ftp["tls"]).c_str(),
            num(ftp["refused_addresses"]).c_str(), num(ftp["protocol_errors"]).c_str());
    }
    if (s.contains("quarantine") && !str(s["quarantine"], "dir").empty()) {
        const json& q = s["quarantine"];
        std::printf(
            "quarantine %s: %s entries, %s; %s written, %s evicted, %s write failures, %s "
            "dropped, %s too big, %s released\n\n",
            str(q, "dir").c_str(), num(q["entries"]).c_str(),
            human_bytes(q.value("bytes", uint64_t(0))).c_str(), num(q["written"]).c_str(),
            num(q["evicted"]).c_str(), num(q["write_failures"]).c_str(), num(q["dropped"]).c_str(),
            num(q["too_big"]).c_str(), num(q["released"]).c_str());
    }
    Table dpi({"nDPI protocol", "active", "total"});
    for (const json& e : s["dpi_protocols"])
        dpi.add({num(e["name"]), num(e["active"]), num(e["total"])});
    dpi.print();
    if (s.contains("scan")) print_scan_status(s["scan"]);
}

std::string endpoint(const json& addr, const json& port) {
    std::string a = addr.get<std::string>();
    return a.find(':') != std::string::npos ? fmt::format("[{}]:{}", a, num(port))
                                            : fmt::format("{}:{}", a, num(port));
}

void print_flows(const json& flows) {
    Table t({"queue", "proto", "client", "server", "state", "nDPI", "service", "disposition", "by",
             "pkts c>s", "pkts s>c", "bytes c>s", "bytes s>c", "age s", "idle s"});
    for (const json& f : flows)
        t.add({num(f["queue"]), num(f["proto"]), endpoint(f["client"], f["client_port"]),
               endpoint(f["server"], f["server_port"]), num(f["state"]), num(f["dpi"]),
               num(f["service"]), num(f["disposition"]), num(f["claimed_by"]),
               num(f["packets_c2s"]), num(f["packets_s2c"]), num(f["bytes_c2s"]),
               num(f["bytes_s2c"]), num(f["age_s"]), num(f["idle_s"])});
    t.print();
    std::printf("%zu flows\n", flows.size());
}

// Regular files under each argument (directories recursively, in name
// order), as absolute paths: the daemon opens them, from its own directory.
std::vector<std::string> expand_paths(const std::vector<std::string>& args) {
    namespace fs = std::filesystem;
    std::vector<std::string> out;
    for (const std::string& arg : args) {
        std::error_code ec;
        fs::path path = fs::absolute(arg, ec).lexically_normal();
        if (ec) path = arg;
        if (!fs::is_directory(path, ec)) {
            out.push_back(path.string());
            continue;
        }
        std::vector<std::string> found;
        for (auto it = fs::recursive_directory_iterator(
                 path, fs::directory_options::skip_permission_denied, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
            if (it->is_regular_file(ec)) found.push_back(it->path().string());
        std::sort(found.begin(), found.end());
        out.insert(out.end(), found.begin(), found.end());
    }
    return out;
}

// Exit status of `scan`, as clamscan's: 0 all clean, 1 something infected,
// 2 an error (and nothing infected).
int print_scan(const json& results, bool as_json) {
    size_t clean = 0, infected = 0, errors = 0;
    for (const json& r : results) {
        const std::string v = str(r, "verdict");
        (v == "clean" ? clean : v == "infected" ? infected : errors)++;
    }
    if (as_json) {
        std::puts(results.dump(2).c_str());
    } else {
        Table t({"path", "verdict", "category", "engine", "name / reason", "layer", "ms"});
        for (const json& r : results) {
            std::string verdict = str(r, "verdict");
            if (verdict == "clean" && r.value("skipped", false)) verdict = "clean (skipped)";
            if (r.value("cached", false)) verdict += " (cached)";
            std::string name = str(r, "name");
            if (name.empty()) name = str(r, "reason");
            t.add({str(r, "path"), verdict, str(r, "category"), str(r, "engine"), name,
                   str(r, "layer"),
                   r.contains("elapsed_ms") ? fmt::format("{:.1f}", r["elapsed_ms"].get<double>())
                                            : ""});
        }
        t.print();
        std::printf("%zu files: %zu clean, %zu infected, %zu errors\n", results.size(), clean,
                    infected, errors);
    }
    return infected ? 1 : errors ? 2 : 0;
}

void print_engines(const json& e) {
    const json& info = e["engines"];
    if (!e.value("ready", false)) {
        std::puts("scan engines: not loaded yet (verdicts are engine-not-ready)");
    } else {
        std::printf("scan engines: generation %s, backend %s, loaded %s in %s ms\n",
                    num(info["generation"]).c_str(), num(info["backend"]).c_str(),
                    num(info["loaded_at"]).c_str(), num(info["load_time_ms"]).c_str());
        const json& c = info["clamav"];
        if (info["backend"] == "clamd") {
            std::printf("ClamAV: clamd at %s: %s\n", num(c["clamd_address"]).c_str(),
                        str(c, "version").empty() ? "not reachable" : str(c, "version").c_str());
        } else {
            std::string db;
            if (c.value("db_version", 0) != 0)
                db = fmt::format(", official database version {}", num(c["db_version"]));
            std::printf("ClamAV: libclamav %s, %s signatures%s\n", num(c["version"]).c_str(),
                        num(c["signatures"]).c_str(), db.c_str());
            for (const json& dir : c["db_dirs"])
                std::printf("  %s\n", num(dir).c_str());
        }
        const json& y = info["yara"];
        std::printf("YARA: %s, %s rules in %zu files\n", num(y["version"]).c_str(),
                    num(y["rules"]).c_str(), y["rule_files"].size());
        for (const json& file : y["rule_files"])
            std::printf("  %s\n", num(file).c_str());
        for (const json& w : info["warnings"])
            std::printf("warning: %s\n", num(w).c_str());
    }
    const json& r = e["reload"];
    if (r.value("running", false) || r.value("done", 0) < r.value("requested", 0))
        std::printf("a reload (#%s) is running\n", num(r["requested"]).c_str());
    if (r["last"].is_object()) {
        const json& last = r["last"];
        if (last.value("ok", false))
            std::printf("last reload: #%s ok at %s\n", num(last["id"]).c_str(),
                        num(last["finished_at"]).c_str());
        else
            std::printf("last reload: #%s FAILED at %s, %s: %s\n", num(last["id"]).c_str(),
                        num(last["finished_at"]).c_str(),
                        e.value("ready", false) ? "the running engines stay" : "no engines",
                        num(last["error"]).c_str());
        if (last.value("trigger", "") == "signatures")
            std::printf("  (signature update: %s)\n", num(last["changes"]).c_str());
    }
}

void print_detections(const json& events) {
    Table t({"time", "protocol", "flow", "object", "verdict", "detail", "action"});
    for (const json& ev : events) {
        if (ev.contains("raw")) {
            t.add({"?", "", "", "", "", str(ev, "raw")});
            continue;
        }
        // The verdict's fields are the event's own (as in `scan --json`).
        std::string verdict = str(ev, "verdict");
        if (ev.value("cached", false)) verdict += " (cached)";
        std::string detail;
        if (verdict.starts_with("infected"))
            detail = fmt::format("{} {} ({}) in {}", str(ev, "engine"), str(ev, "name"),
                                 str(ev, "category"), str(ev, "layer"));
        if (verdict.starts_with("infected") && ev.contains("score") && ev["score"].is_number())
            detail += fmt::format(" score {:.2f}", ev["score"].get<double>());
        else if (verdict == "error")
            detail = fmt::format("{}: {}", str(ev, "category"), str(ev, "reason"));
        t.add({str(ev, "time"), str(ev, "protocol"), str(ev, "flow"), str(ev, "object"), verdict,
               detail, str(ev, "action")});
    }
    t.print();
    std::printf("%zu events\n", events.size());
}

// After a reload: wait for the engine build that covers it, report it.
int wait_engine_reload(const std::string& control, uint64_t id, double timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    for (;;) {
        json e = nfqscan::control_request(control, {{"command", "engines"}});
        const json& r = e["reload"];
        if (r.value("done", uint64_t(0)) >= id && r["last"].is_object()) {
            const json& last = r["last"];
            if (!last.value("ok", false)) {
                std::fprintf(stderr,
                             "nfqscanctl: scan engines not reloaded, the running ones stay: %s\n",
                             num(last["error"]).c_str());
                return 1;
            }
            const json& info = e["engines"];
            std::printf(
                "scan engines generation %s: %s ClamAV signatures, %s YARA rules, loaded in %s "
                "ms\n",
                num(info["generation"]).c_str(), num(info["clamav"]["signatures"]).c_str(),
                num(info["yara"]["rules"]).c_str(), num(info["load_time_ms"]).c_str());
            for (const json& w : info["warnings"])
                std::printf("warning: %s\n", num(w).c_str());
            return 0;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            std::fprintf(stderr,
                         "nfqscanctl: the scan engines are still loading after %.0f s; see "
                         "`nfqscanctl engines`\n",
                         timeout_s);
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"nfqscanctl - inspect and control nfqscand"};
    app.require_subcommand(1);
    std::string control = "/run/nfqscan/control.sock";
    app.add_option("--control", control, "nfqscand control socket")->capture_default_str();
    bool as_json = false;

    auto* status = app.add_subcommand("status", "queues, flows and protocol counters");
    status->add_flag("--json", as_json, "machine-readable output");
    auto* flows = app.add_subcommand("flows", "live flows");
    flows->add_flag("--json", as_json, "machine-readable output");
    size_t limit = 100000;
    flows->add_option("--limit", limit, "at most this many flows")->capture_default_str();
    auto* reload = app.add_subcommand(
        "reload", "re-read the configuration and rebuild the scan engines (as SIGHUP)");
    bool no_wait = false;
    double timeout_s = 600;
    reload->add_flag("--no-wait", no_wait, "do not wait for the scan engines");
    reload->add_option("--timeout", timeout_s, "seconds to wait for the scan engines")
        ->capture_default_str();
    auto* scan = app.add_subcommand(
        "scan",
        "scan files (directories recursively) with the daemon's engines; exit 0 clean, "
        "1 infected, 2 error");
    std::vector<std::string> scan_paths;
    std::string profile;
    bool no_log = false;
    double scan_timeout_s = 300;
    scan->add_option("PATH", scan_paths, "files or directories")->required();
    scan->add_flag("--json", as_json, "machine-readable output");
    scan->add_option("--profile", profile, "scan mode profile ([scan.profiles.NAME])");
    scan->add_flag("--no-log", no_log, "do not write detections to the event log");
    scan->add_option("--timeout", scan_timeout_s, "seconds per file")->capture_default_str();
    auto* engines = app.add_subcommand("engines", "engine versions, signatures, rule files");
    engines->add_flag("--json", as_json, "machine-readable output");
    auto* detections = app.add_subcommand("detections", "the last events of the event log");
    detections->add_flag("--json", as_json, "machine-readable output");
    size_t count = 20;
    detections->add_option("-n,--count", count, "how many")->capture_default_str();
    auto* metrics = app.add_subcommand(
        "metrics",
        "the status counters in Prometheus' text format (node_exporter's textfile collector: "
        "nfqscanctl metrics > f.tmp && mv f.tmp f.prom)");
    auto* config = app.add_subcommand("config", "configuration tools");
    config->require_subcommand(1);
    auto* check = config->add_subcommand("check", "validate a configuration file");
    std::string config_file;
    check->add_option("FILE", config_file, "configuration file")->required();

    nfqscan::QuarantineCli quarantine;
    nfqscan::add_quarantine_cli(app, quarantine);

    CLI11_PARSE(app, argc, argv);

    try {
        if (check->parsed()) {
            nfqscan::Config c = nfqscan::load_config(config_file);
            std::printf("%s: OK (queues %u-%u)\n", config_file.c_str(), c.daemon.queues.first,
                        c.daemon.queues.last);
            auto join = [](const std::vector<std::string>& v) {
                std::string out;
                for (const std::string& s : v)
                    out += (out.empty() ? "" : ", ") + s;
                return out.empty() ? std::string("(none)") : out;
            };
            std::printf("scan: engine %s; ClamAV databases %s; YARA rules %s\n",
                        std::string(nfqscan::backend_name(c.scan.engine)).c_str(),
                        join(c.scan.clamav_db_dirs).c_str(), join(c.scan.yara_rule_dirs).c_str());
            std::printf("messages: %s: %s\n",
                        c.daemon.messages_dir.empty() ? "built-in" : c.daemon.messages_dir.c_str(),
                        join(c.messages->names()).c_str());
            return 0;
        }
        if (quarantine.command->parsed()) return nfqscan::run_quarantine_cli(quarantine, control);
        if (status->parsed()) {
            json s = nfqscan::control_request(control, {{"command", "status"}});
            if (as_json)
                std::puts(s.dump(2).c_str());
            else
                print_status(s);
        } else if (flows->parsed()) {
            json f = nfqscan::control_request(control, {{"command", "flows"}, {"limit", limit}});
            if (as_json)
                std::puts(f.dump(2).c_str());
            else
                print_flows(f);
        } else if (reload->parsed()) {
            json r = nfqscan::control_request(control, {{"command", "reload"}});
            std::printf("reloaded %s\n", num(r["reloaded"]).c_str());
            if (!no_wait)
                return wait_engine_reload(control, r.value("engine_reload", uint64_t(0)),
                                          timeout_s);
        } else if (scan->parsed()) {
            json results = json::array();
            const auto timeout =
                std::chrono::milliseconds(static_cast<int64_t>(scan_timeout_s * 1000));
            try {
                // One request per file: the daemon stays responsive between
                // them, and no request outgrows the control socket's bound.
                for (const std::string& path : expand_paths(scan_paths)) {
                    // Opened here, as the caller: the daemon scans what it is
                    // handed and never opens a path itself. O_NONBLOCK: a FIFO
                    // must not hang the open (the daemon refuses non-files).
                    nfqscan::UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
                    if (!file) {
                        results.push_back(
                            {{"path", path},
                             {"verdict", "error"},
                             {"reason", "open " + path + ": " + std::strerror(errno)}});
                        continue;
                    }
                    json r = nfqscan::control_request(control,
                                                      {{"command", "scan"},
                                                       {"paths", {path}},
                                                       {"profile", profile},
                                                       {"log", !no_log}},
                                                      timeout, {file.get()});
                    for (json& entry : r)
                        results.push_back(std::move(entry));
                }
            } catch (const std::exception& e) {
                std::fprintf(stderr, "nfqscanctl: %s\n", e.what());
                return 2;
            }
            return print_scan(results, as_json);
        } else if (engines->parsed()) {
            json e = nfqscan::control_request(control, {{"command", "engines"}});
            if (as_json)
                std::puts(e.dump(2).c_str());
            else
                print_engines(e);
        } else if (metrics->parsed()) {
            json m = nfqscan::control_request(control, {{"command", "metrics"}});
            if (!m.is_string()) throw std::runtime_error("metrics: the daemon sent no text");
            std::fputs(m.get_ref<const std::string&>().c_str(), stdout);
            if (std::fflush(stdout) != 0 || std::ferror(stdout))
                throw std::runtime_error(std::string("metrics: write: ") + std::strerror(errno));
        } else if (detections->parsed()) {
            json d =
                nfqscan::control_request(control, {{"command", "detections"}, {"count", count}});
            if (as_json)
                std::puts(d.dump(2).c_str());
            else
                print_detections(d);
        }
    } catch (const nfqscan::ConfigError& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "nfqscanctl: %s\n", e.what());
        return 1;
    }
    return 0;
}
