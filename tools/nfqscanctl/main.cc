// nfqscanctl: inspect and steer a running nfqscand through its control
// socket. Human tables by default, --json for tools.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "nfqscan/config.h"
#include "nfqscan/control.h"

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

void print_status(const json& s) {
    std::printf("nfqscand %s  pid %s  up %s s  config %s\n\n", num(s["version"]).c_str(),
                num(s["pid"]).c_str(), num(s["uptime_s"]).c_str(), num(s["config"]).c_str());
    Table queues({"queue", "packets", "bytes", "verdicts", "msgs", "batches", "released",
                  "malformed", "enobufs", "k.waiting", "k.q_dropped", "k.user_dropped",
                  "k.id_seq"});
    for (const json& q : s["queues"]) {
        json k = q.value("kernel", json::object());
        queues.add({num(q["queue"]), num(q["packets"]), human_bytes(q["bytes"].get<uint64_t>()),
                    num(q["verdicts"]), num(q["verdict_messages"]), num(q["verdict_batches"]),
                    num(q["released"]), num(q["malformed"]), num(q["enobufs"]),
                    num(k.value("queue_total", json())), num(k.value("queue_dropped", json())),
                    num(k.value("user_dropped", json())), num(k.value("id_sequence", json()))});
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
    Table services({"service", "active", "total"});
    for (const json& e : s["services"])
        services.add({num(e["name"]), num(e["active"]), num(e["total"])});
    services.print();
    std::puts("");
    Table dpi({"nDPI protocol", "active", "total"});
    for (const json& e : s["dpi_protocols"])
        dpi.add({num(e["name"]), num(e["active"]), num(e["total"])});
    dpi.print();
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
    auto* reload = app.add_subcommand("reload", "re-read the configuration (as SIGHUP)");
    auto* config = app.add_subcommand("config", "configuration tools");
    config->require_subcommand(1);
    auto* check = config->add_subcommand("check", "validate a configuration file");
    std::string config_file;
    check->add_option("FILE", config_file, "configuration file")->required();

    CLI11_PARSE(app, argc, argv);

    try {
        if (check->parsed()) {
            nfqscan::Config c = nfqscan::load_config(config_file);
            std::printf("%s: OK (queues %u-%u)\n", config_file.c_str(), c.daemon.queues.first,
                        c.daemon.queues.last);
            return 0;
        }
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
