#include "nfqscan/daemon.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fmt/format.h>

#include "nfqscan/nfqueue.h"

namespace nfqscan {

namespace {

constexpr auto kWorkerTimeout = std::chrono::seconds(2);

nlohmann::json label_counts_json(const std::map<std::string, LabelCount>& counts) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [name, c] : counts)
        out.push_back({{"name", name}, {"active", c.active}, {"total", c.total}});
    return out;
}

}  // namespace

std::shared_ptr<Config> Daemon::load() const {
    auto config = std::make_shared<Config>(load_config(options_.config_path));
    if (options_.queues) config->daemon.queues = *options_.queues;
    if (options_.control_socket) config->daemon.control_socket = *options_.control_socket;
    if (config->test_rewrite.present && !options_.allow_test_inspectors)
        throw ConfigError(config->source, config->test_rewrite.line, "test_rewrite",
                          "a test inspector: nfqscand accepts it only when started with "
                          "--allow-test-inspectors");
    return config;
}

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {
    config_ = load();
    const QueueRange& queues = config_->daemon.queues;
    for (uint32_t q = queues.first; q <= queues.last; ++q) {
        try {
            workers_.push_back(std::make_unique<QueueWorker>(uint16_t(q), config_));
        } catch (const std::system_error& e) {
            throw std::runtime_error(
                fmt::format("cannot bind NFQUEUE {}: {}{}", q, e.code().message(),
                            e.code().value() == EPERM   ? " (needs CAP_NET_ADMIN)"
                            : e.code().value() == EBUSY ? " (another process is bound to it)"
                                                        : ""));
        }
    }
    control_ = std::make_unique<ControlServer>(config_->daemon.control_socket);
    control_->handle("status", [this](const nlohmann::json&) { return status(); });
    control_->handle("flows", [this](const nlohmann::json& request) {
        return flows(request.value("limit", size_t(100000)));
    });
    control_->handle("reload", [this](const nlohmann::json&) {
        std::string error = reload();
        if (!error.empty()) throw std::runtime_error(error);
        return nlohmann::json{{"reloaded", config_->source}};
    });
}

Daemon::~Daemon() {
    stop();
}

void Daemon::start() {
    for (auto& w : workers_)
        w->start();
    control_->start();
    spdlog::info("nfqscand {} running on queues {}-{}, control socket {}", NFQSCAN_VERSION,
                 config_->daemon.queues.first, config_->daemon.queues.last,
                 config_->daemon.control_socket);
}

void Daemon::stop() {
    if (control_) control_->stop();
    for (auto& w : workers_)
        w->stop();
}

std::string Daemon::reload() {
    std::lock_guard lock(reload_mutex_);
    std::shared_ptr<Config> fresh;
    try {
        fresh = load();
    } catch (const std::exception& e) {
        spdlog::error("reload failed, the running configuration stays: {}", e.what());
        return e.what();
    }
    const Config& old = *config_;
    if (fresh->daemon.queues.first != old.daemon.queues.first ||
        fresh->daemon.queues.last != old.daemon.queues.last ||
        fresh->daemon.control_socket != old.daemon.control_socket ||
        fresh->queue.socket_buffer_mb != old.queue.socket_buffer_mb ||
        fresh->queue.batch_size != old.queue.batch_size) {
        spdlog::warn("reload: queue numbers, [queue] and the control socket apply at restart");
        fresh->daemon.queues = old.daemon.queues;
        fresh->daemon.control_socket = old.daemon.control_socket;
        fresh->queue = old.queue;
    }
    spdlog::set_level(spdlog::level::from_str(fresh->daemon.log_level));
    config_ = fresh;
    for (auto& w : workers_)
        w->apply_config(config_);
    spdlog::info("configuration reloaded from {}", config_->source);
    return {};
}

nlohmann::json Daemon::status() {
    std::vector<KernelQueueStats> kernel = read_kernel_queue_stats();
    nlohmann::json queues = nlohmann::json::array();
    uint64_t active = 0, total = 0, evicted = 0, expired = 0, released = 0, claimed = 0;
    uint64_t max_flows = 0, memory = 0, tcp = 0, udp = 0, other = 0, malformed = 0;
    std::map<std::string, LabelCount> dpi, services;
    for (auto& w : workers_) {
        std::optional<WorkerSnapshot> s = w->snapshot(kWorkerTimeout);
        if (!s) throw std::runtime_error(fmt::format("queue {} did not answer", w->queue()));
        const QueueCounters& c = s->queue_counters;
        nlohmann::json q = {{"queue", s->queue},
                            {"packets", c.packets},
                            {"bytes", c.bytes},
                            {"verdicts", c.verdicts},
                            {"verdict_messages", c.verdict_messages},
                            {"verdict_batches", c.verdict_batches},
                            {"recv_batches", c.recv_batches},
                            {"enobufs", c.enobufs},
                            {"netlink_errors", c.netlink_errors},
                            {"truncated", c.truncated},
                            {"malformed", s->packets_malformed},
                            {"released", s->released_verdicts},
                            {"flows", s->flows_active}};
        for (const KernelQueueStats& k : kernel) {
            if (k.queue != s->queue) continue;
            q["kernel"] = {{"queue_total", k.queue_total},   {"queue_dropped", k.queue_dropped},
                           {"user_dropped", k.user_dropped}, {"id_sequence", k.id_sequence},
                           {"peer_portid", k.peer_portid},   {"copy_mode", k.copy_mode},
                           {"copy_range", k.copy_range}};
        }
        queues.push_back(std::move(q));
        active += s->flows_active;
        total += s->flows_created;
        evicted += s->flows_evicted;
        expired += s->flows_expired;
        released += s->flows_released;
        claimed += s->flows_claimed;
        max_flows += s->max_flows;
        memory += s->memory_bytes;
        tcp += s->packets_tcp;
        udp += s->packets_udp;
        other += s->packets_other;
        malformed += s->packets_malformed;
        for (const auto& [name, n] : s->dpi_protocols) {
            dpi[name].active += n.active;
            dpi[name].total += n.total;
        }
        for (const auto& [name, n] : s->services) {
            services[name].active += n.active;
            services[name].total += n.total;
        }
    }
    double uptime =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    return {{"version", NFQSCAN_VERSION},
            {"pid", getpid()},
            {"uptime_s", uptime},
            {"config", config_->source},
            {"queues", queues},
            {"flows",
             {{"active", active},
              {"total", total},
              {"evicted", evicted},
              {"expired", expired},
              {"released", released},
              {"claimed", claimed},
              {"max", max_flows},
              {"memory_bytes", memory}}},
            {"dpi_protocols", label_counts_json(dpi)},
            {"services", label_counts_json(services)},
            {"packets", {{"tcp", tcp}, {"udp", udp}, {"other", other}, {"malformed", malformed}}}};
}

nlohmann::json Daemon::flows(size_t limit) {
    nlohmann::json out = nlohmann::json::array();
    for (auto& w : workers_) {
        auto list = w->flows(limit, kWorkerTimeout);
        if (!list) throw std::runtime_error(fmt::format("queue {} did not answer", w->queue()));
        for (const FlowInfo& f : *list) {
            if (out.size() >= limit) break;
            out.push_back({{"queue", f.queue},
                           {"proto", f.protocol},
                           {"client", f.client},
                           {"client_port", f.client_port},
                           {"server", f.server},
                           {"server_port", f.server_port},
                           {"state", f.state},
                           {"dpi", f.dpi},
                           {"service", f.service},
                           {"disposition", f.disposition},
                           {"claimed_by", f.claimed_by},
                           {"midstream", f.midstream},
                           {"packets_c2s", f.packets_c2s},
                           {"packets_s2c", f.packets_s2c},
                           {"bytes_c2s", f.bytes_c2s},
                           {"bytes_s2c", f.bytes_s2c},
                           {"age_s", f.age_s},
                           {"idle_s", f.idle_s}});
        }
    }
    return out;
}

std::string Daemon::status_line() {
    uint64_t flows = 0, packets = 0;
    for (auto& w : workers_) {
        if (auto s = w->snapshot(kWorkerTimeout)) {
            flows += s->flows_active;
            packets += s->queue_counters.packets;
        }
    }
    return fmt::format("{} flows, {} packets", flows, packets);
}

}  // namespace nfqscan
