#include "nfqscan/daemon.h"
#include "nfqscan/timestamp.h"

#include <grp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "nfqscan/conntrack.h"
#include "nfqscan/metrics.h"
#include "nfqscan/nfqueue.h"
#include "nfqscan/privileges.h"

namespace nfqscan {

namespace {

constexpr auto kWorkerTimeout = std::chrono::seconds(2);
// `detections` reads at most this many lines, `scan` this many paths per request.
constexpr size_t kMaxDetections = 10000;

nlohmann::json label_counts_json(const std::map<std::string, LabelCount>& counts) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [name, c] : counts)
        out.push_back({{"name", name}, {"active", c.active}, {"total", c.total}});
    return out;
}

}  // namespace

// Builds scan engines on its own thread, one build at a time. Requests that
// arrive during a build are coalesced: the next build uses the latest
// configuration and answers all of them.
class Daemon::EngineLoader {
  public:
    struct State {
        uint64_t requested = 0;         // id of the latest request
        uint64_t done = 0;              // id of the latest request a finished build covered
        uint64_t started = 0;           // id of the latest request a build started on
        uint64_t signature_builds = 0;  // builds started for a signature update
        bool running = false;
        std::optional<ReloadResult> last;  // that build's outcome
        std::chrono::system_clock::time_point finished_at{};
        // Why that build ran ("start", "reload", "signatures") and, for a
        // signature update, what changed.
        std::string trigger, changes;
        // The signature files as the latest build started to load them
        // (whether it succeeded or not): a change is judged against them.
        // Taken under the loader's lock, so that a check never sees a
        // started build without its snapshot.
        std::optional<SignatureSnapshot> attempted;
    };

    explicit EngineLoader(ScanService& service) : service_(service) {
        thread_ = std::thread([this] { run(); });
    }
    ~EngineLoader() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();  // a build in progress cannot be interrupted
    }
    EngineLoader(const EngineLoader&) = delete;
    EngineLoader& operator=(const EngineLoader&) = delete;

    uint64_t request(ScanConfig config, std::string trigger, std::string changes = {}) {
        uint64_t id;
        {
            std::lock_guard lock(mutex_);
            pending_ = std::move(config);
            pending_trigger_ = std::move(trigger);
            pending_changes_ = std::move(changes);
            id = ++state_.requested;
        }
        wake_.notify_all();
        return id;
    }

    State state() const {
        std::lock_guard lock(mutex_);
        return state_;
    }

  private:
    void run() {
        pthread_setname_np(pthread_self(), "nfq-engines");
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return stopping_ || pending_.has_value(); });
            if (stopping_) return;
            ScanConfig config = std::move(*pending_);
            pending_.reset();
            const uint64_t id = state_.requested;
            std::string trigger = std::move(pending_trigger_),
                        changes = std::move(pending_changes_);
            state_.running = true;
            state_.started = id;
            if (trigger == "signatures") ++state_.signature_builds;
            // Before the engines read the files: a change during the build
            // differs from it and is picked up by the next check.
            state_.attempted = SignatureSnapshot::take(config);
            lock.unlock();
            // Logs its outcome itself (ready with counts, or the failure).
            ReloadResult result = service_.reload(config);
            lock.lock();
            state_.running = false;
            state_.done = id;
            state_.last = std::move(result);
            state_.finished_at = std::chrono::system_clock::now();
            state_.trigger = std::move(trigger);
            state_.changes = std::move(changes);
        }
    }

    ScanService& service_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::optional<ScanConfig> pending_;
    std::string pending_trigger_, pending_changes_;
    State state_;
    bool stopping_ = false;
    std::thread thread_;  // last: starts after everything above exists
};

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

std::shared_ptr<const Config> Daemon::config() const {
    std::lock_guard lock(config_mutex_);
    return config_;
}

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {
    config_ = load();
    const QueueRange& queues = config_->daemon.queues;
    // What may need root comes first: the relay device (TUNSETIFF, its
    // sysctls) and the control socket (in a folder root may own). Then the
    // switch to [daemon] user, before any thread exists (capabilities belong
    // to threads: each one started later inherits exactly the two kept).
    const std::optional<Account> account = configured_account(config_->daemon, config_->source);
    open_relay_device(queues.count());
    kernel_stats_ = std::make_unique<KernelQueueStatsReader>();
    if (switches_user(account)) prepare_owned_paths(*account);
    open_control_socket();
    drop_privileges(account, config_->source, config_->daemon.user_line);
    if (account)
        spdlog::info("running as {}", describe_privileges());
    else
        spdlog::warn("running as {}: [daemon] user is \"\", nothing was dropped",
                     describe_privileges());

    // The pool starts now, its engines in start(): no engines, no verdicts
    // but engine-not-ready.
    scan_ = std::make_unique<ScanService>(config_->scan);
    loader_ = std::make_unique<EngineLoader>(*scan_);
    open_event_log(config_->daemon.event_log);
    notifier_ = std::make_unique<Notifier>(config_->notify);
    spam_ = std::make_unique<SpamChecker>();
    if (!config_->quarantine.dir.empty()) {
        quarantine_ = std::make_unique<Quarantine>(
            config_->quarantine, QuarantineRelease{config_->notify.relay, config_->marks.inject});
        spdlog::info("quarantine {}: {} entries, {} bytes kept", quarantine_->dir(),
                     quarantine_->counters().entries, quarantine_->counters().bytes);
    }
    WorkerServices services{.scan = scan_.get(),
                            .event_log = [this] { return event_log(); },
                            .notifier = notifier_.get(),
                            .ftp = &ftp_expectations_,
                            .spam = spam_.get(),
                            .quarantine = quarantine_.get()};
    // NFQUEUE binds with CAP_NET_ADMIN, as under systemd's User=.
    for (uint32_t q = queues.first; q <= queues.last; ++q) {
        WorkerRelayDevice device;
        if (relay_device_) {
            device.queue = std::move(relay_device_->queues[q - queues.first]);
            device.families = {relay_device_->ipv4, relay_device_->ipv6};
            device.ifindex = relay_device_->ifindex;
        }
        try {
            workers_.push_back(
                std::make_unique<QueueWorker>(uint16_t(q), config_, std::move(device), services));
        } catch (const std::system_error& e) {
            throw std::runtime_error(
                fmt::format("cannot bind NFQUEUE {}: {}{}", q, e.code().message(),
                            e.code().value() == EPERM   ? " (needs CAP_NET_ADMIN)"
                            : e.code().value() == EBUSY ? " (another process is bound to it)"
                                                        : ""));
        }
    }
    control_->handle("status", [this](const nlohmann::json&) { return status(); });
    control_->handle("flows", [this](const nlohmann::json& request) {
        return flows(request.value("limit", size_t(100000)));
    });
    control_->handle(
        "reload",
        [this](const nlohmann::json&) {
            ReloadStarted r = reload();
            if (!r.error.empty()) throw std::runtime_error(r.error);
            return nlohmann::json{{"reloaded", config()->source},
                                  {"engine_reload", r.engine_reload}};
        },
        ControlAccess::Admin);
    control_->handle_async(
        "scan",
        [this](ControlRequest& request, PendingReply reply) {
            scan_files(request, std::move(reply));
        },
        ControlAccess::Admin);
    control_->handle_async(
        "quarantine",
        [this](ControlRequest& request, PendingReply reply) {
            quarantine_command(request, std::move(reply));
        },
        ControlAccess::Admin);
    control_->handle("engines", [this](const nlohmann::json&) { return engines(); });
    control_->handle("metrics", [this](const nlohmann::json&) { return metrics_text(status()); });
    control_->handle("detections", [this](const nlohmann::json& request) {
        return detections(request.value("count", size_t(20)));
    });
}

void Daemon::open_control_socket() {
    control_ = std::make_unique<ControlServer>(config_->daemon.control_socket,
                                               control_permissions(config_->daemon));
    // Bound here, before the switch to [daemon] user, as the control socket:
    // a port below 1024 works too. Served by the control thread.
    if (const std::string& listen = config_->daemon.metrics_listen; !listen.empty()) {
        UniqueFd fd;
        try {
            fd = listen_socket(ListenAddress::parse(listen));
        } catch (const std::exception& e) {
            throw std::runtime_error(fmt::format("{}: daemon.metrics_listen: cannot listen: {}",
                                                 config_->source, e.what()));
        }
        // Anyone who reaches the address may scrape, as often as they like:
        // the workers' snapshots are taken at most once a second for them.
        auto cache = std::make_shared<ExpositionCache>(std::chrono::seconds(1));
        control_->serve_http(std::move(fd), [this, cache](std::string_view request) {
            return metrics_http_response(
                request, [&] { return cache->get([this] { return metrics_text(status()); }); });
        });
        spdlog::info("metrics at http://{}/metrics", listen);
    }
}

void Daemon::prepare_owned_paths(const Account& account) {
    // As systemd's RuntimeDirectory= and LogsDirectory= do for the unit: the
    // folders nfqscand creates are the account's, so it can remove its socket
    // at exit and create the event log after logrotate moved it.
    for (const std::string& path : {config_->daemon.control_socket, config_->daemon.event_log}) {
        const std::filesystem::path dir = std::filesystem::path(path).parent_path();
        if (!dir.empty()) create_owned_directories(dir, account);
    }
    // An event log a run as root left behind.
    give_file_to(config_->daemon.event_log, account);
    // The quarantine folder itself (made 0700 by the store), not only its parent.
    if (!config_->quarantine.dir.empty())
        create_owned_directories(config_->quarantine.dir, account);
}

ControlPermissions Daemon::control_permissions(const DaemonConfig& daemon) {
    ControlPermissions permissions;
    if (daemon.control_group.empty()) return permissions;
    const group* g = getgrnam(daemon.control_group.c_str());
    if (g == nullptr)
        throw std::runtime_error("[daemon] control_group: no group named " + daemon.control_group);
    permissions.query_group = g->gr_gid;
    permissions.query_group_name = daemon.control_group;
    return permissions;
}

void Daemon::open_relay_device(size_t queues) {
    const std::string& name = config_->stream.relay_device;
    if (name.empty()) return;
    try {
        relay_device_ = nfqscan::open_relay_device(name, queues);
        for (const std::string& warning : relay_device_->warnings)
            spdlog::warn("relay device {}: {}", name, warning);
        spdlog::info("relay device {} (ifindex {}): relayed output goes out as GSO frames{}", name,
                     relay_device_->ifindex,
                     !relay_device_->ipv4   ? " (IPv6 only)"
                     : !relay_device_->ipv6 ? " (IPv4 only)"
                                            : "");
    } catch (const std::exception& e) {
        spdlog::warn("relay device {}: {}; relays send one segment per packet through raw sockets",
                     name, e.what());
        relay_device_.reset();
    }
}

void Daemon::check_relay_device() {
    if (!relay_device_) return;
    std::string found = recheck_relay_device(*relay_device_);
    if (!found.empty()) spdlog::warn("relay device {}: {}", relay_device_->name, found);
}

Daemon::~Daemon() {
    stop();
}

void Daemon::start() {
    const auto c = config();
    for (auto& w : workers_)
        w->start();
    control_->start();
    loader_->request(c->scan, "start");
    watcher_ = std::make_unique<SignatureWatcher>(
        [this](SignatureWatcher::Trigger trigger) { check_signatures(trigger); });
    watch_signatures(c->scan);
    spdlog::info(
        "nfqscand {} running on queues {}-{}, control socket {}; scan engines ({}) "
        "loading in the background",
        NFQSCAN_VERSION, c->daemon.queues.first, c->daemon.queues.last, c->daemon.control_socket,
        backend_name(c->scan.engine));
    if (conntrack_tcp_liberal() == false)
        spdlog::warn(
            "net.netfilter.nf_conntrack_tcp_be_liberal is 0 in this network namespace: "
            "conntrack will mark the segments of flows nfqscand rewrites or relays INVALID, "
            "and such flows stall behind NAT or a `ct state invalid drop` rule; apply "
            "rules/nfqscan-sysctl.conf (sysctl -p)");
}

void Daemon::stop() {
    if (control_) control_->stop();
    for (auto& w : workers_)
        w->stop();
}

ReloadStarted Daemon::reload() {
    std::lock_guard lock(reload_mutex_);
    std::shared_ptr<Config> fresh;
    try {
        fresh = load();
    } catch (const std::exception& e) {
        spdlog::error("reload failed, the running configuration stays: {}", e.what());
        return {e.what(), 0};
    }
    const std::shared_ptr<const Config> current = config();
    const Config& old = *current;
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
    if (fresh->daemon.user != old.daemon.user) {
        spdlog::warn("reload: daemon.user applies at restart");
        fresh->daemon.user = old.daemon.user;
        fresh->daemon.user_line = old.daemon.user_line;
    }
    if (fresh->daemon.metrics_listen != old.daemon.metrics_listen) {
        spdlog::warn("reload: daemon.metrics_listen applies at restart");
        fresh->daemon.metrics_listen = old.daemon.metrics_listen;
    }
    if (fresh->stream.relay_device != old.stream.relay_device) {
        spdlog::warn("reload: stream.relay_device applies at restart");
        fresh->stream.relay_device = old.stream.relay_device;
    }
    if (fresh->scan.pool_threads != old.scan.pool_threads ||
        fresh->scan.queue_length != old.scan.queue_length ||
        fresh->scan.isolation != old.scan.isolation) {
        spdlog::warn(
            "reload: scan.pool_threads, scan.queue_length and scan.isolation apply at restart");
        fresh->scan.pool_threads = old.scan.pool_threads;
        fresh->scan.queue_length = old.scan.queue_length;
        fresh->scan.isolation = old.scan.isolation;
    }
    if (fresh->notify.relay != old.notify.relay || fresh->notify.from != old.notify.from ||
        fresh->notify.per_sender_per_minute != old.notify.per_sender_per_minute) {
        spdlog::warn(
            "reload: notify.relay, notify.from and notify.per_sender_per_minute apply "
            "at restart");
        fresh->notify.relay = old.notify.relay;
        fresh->notify.from = old.notify.from;
        fresh->notify.per_sender_per_minute = old.notify.per_sender_per_minute;
    }
    if (fresh->quarantine.dir != old.quarantine.dir ||
        fresh->quarantine.max_size != old.quarantine.max_size ||
        fresh->quarantine.max_age_days != old.quarantine.max_age_days) {
        spdlog::warn("reload: [quarantine] applies at restart");
        fresh->quarantine = old.quarantine;
    }
    spdlog::set_level(spdlog::level::from_str(fresh->daemon.log_level));
    open_event_log(fresh->daemon.event_log);
    {
        std::lock_guard config_lock(config_mutex_);
        config_ = fresh;
    }
    for (auto& w : workers_)
        w->apply_config(fresh);
    const uint64_t id = loader_->request(fresh->scan, "reload");
    if (watcher_) watch_signatures(fresh->scan);
    spdlog::info("configuration reloaded from {}; scan engines rebuilding in the background",
                 fresh->source);
    return {{}, id};
}

void Daemon::watch_signatures(const ScanConfig& scan) {
    SignatureWatcher::Options options;
    options.folders = SignatureSnapshot::take(scan).folders();
    options.inotify = scan.watch_signatures;
    options.self_check = std::chrono::seconds(scan.self_check_s);
    watcher_->configure(std::move(options));
}

void Daemon::check_signatures(SignatureWatcher::Trigger trigger) {
    const std::shared_ptr<const Config> current = config();
    const EngineLoader::State state = loader_->state();
    // A build that has not started yet reads the files anyway.
    if (!state.attempted || state.started < state.requested) return;
    const SignatureChanges changes =
        compare(*state.attempted, SignatureSnapshot::take(current->scan));
    if (changes.empty()) return;
    const std::string summary = changes.summary();
    spdlog::info("signature files changed ({}): {}; scan engines rebuilding in the background",
                 trigger_name(trigger), summary);
    loader_->request(current->scan, "signatures", summary);
}

void Daemon::open_event_log(const std::string& path) {
    std::shared_ptr<EventLog> current = event_log();
    try {
        if (current && current->path() == path) {
            current->reopen();
            return;
        }
        const std::filesystem::path dir = std::filesystem::path(path).parent_path();
        if (!dir.empty()) std::filesystem::create_directories(dir);
        auto fresh = std::make_shared<EventLog>(path);
        std::lock_guard lock(event_log_mutex_);
        event_log_ = std::move(fresh);
        event_log_error_.clear();
    } catch (const std::exception& e) {
        // Detections still reach the daemon's log; the data path never
        // depends on the event log.
        spdlog::error("event log {}: {}{}", path, e.what(),
                      current ? " (still writing to " + current->path() + ")" : "");
        std::lock_guard lock(event_log_mutex_);
        event_log_error_ = e.what();
    }
}

std::shared_ptr<EventLog> Daemon::event_log() const {
    std::lock_guard lock(event_log_mutex_);
    return event_log_;
}

namespace {

// Scan completions run on the control thread, like the rest of a request.
class ControlSink : public CompletionSink {
  public:
    explicit ControlSink(std::function<void(std::function<void()>)> post)
        : post_(std::move(post)) {}
    void post(std::function<void()> task) override { post_(std::move(task)); }

  private:
    std::function<void(std::function<void()>)> post_;
};

}  // namespace

void Daemon::scan_files(ControlRequest& request, PendingReply reply) {
    // The caller opened the files and passed their descriptors: the daemon
    // never opens a path for a client (it could read what the client cannot).
    // "paths" only names them in the results and events.
    const nlohmann::json paths = request.body.value("paths", nlohmann::json());
    if (!paths.is_array() || paths.empty())
        throw std::runtime_error("scan: \"paths\" must be a non-empty array of file names");
    for (const nlohmann::json& p : paths)
        if (!p.is_string()) throw std::runtime_error("scan: paths must be strings");
    if (request.files.size() != paths.size())
        throw std::runtime_error(
            fmt::format("scan: {} paths but {} file descriptors: the files must be passed open "
                        "(SCM_RIGHTS), as nfqscanctl scan does",
                        paths.size(), request.files.size()));
    const std::string profile = request.body.value("profile", std::string());
    const bool log = request.body.value("log", true);

    // The request's results, filled in as verdicts arrive (on the control
    // thread, so without a lock); answered when the last one is in.
    struct Batch {
        nlohmann::json results;
        size_t pending;
        PendingReply reply;
        std::shared_ptr<EventLog> events;
        void done() {
            if (--pending == 0) reply.ok(std::move(results));
        }
    };
    auto batch = std::make_shared<Batch>(Batch{nlohmann::json::array(), paths.size(),
                                               std::move(reply), log ? event_log() : nullptr});
    auto sink = std::make_shared<ControlSink>(control_->poster());
    for (size_t i = 0; i < paths.size(); ++i) {
        const std::string path = paths[i].get<std::string>();
        batch->results.push_back({{"path", path}});
        ScanObject object;
        try {
            object = ScanService::map_fd(request.files[i].get(), path, profile);
        } catch (const std::exception& e) {
            // Not a verdict about the content: the file could not be read.
            batch->results[i] = {{"verdict", "error"}, {"reason", e.what()}, {"path", path}};
            batch->done();
            continue;
        }
        // Through the pool like traffic: an operator's scan waits its turn in
        // the queue (or gets too-many-requests when the queue is full).
        scan_->submit(std::move(object), sink, [batch, i, path](ScanVerdict verdict) {
            nlohmann::json entry = verdict;
            entry["path"] = path;
            batch->results[i] = std::move(entry);
            if (!verdict.is_clean()) {
                if (verdict.is_infected())
                    spdlog::warn("scan {}: {} {} in {}", path,
                                 scan_engine_name(verdict.detection.engine),
                                 verdict.detection.signature, verdict.detection.layer_path);
                if (batch->events)
                    batch->events->append(ScanEvent{
                        .protocol = "cli", .object = path, .verdict = verdict, .action = "none"});
            }
            batch->done();
        });
    }
}

nlohmann::json Daemon::engines() const {
    const EngineLoader::State state = loader_->state();
    nlohmann::json reload = {
        {"requested", state.requested}, {"done", state.done}, {"running", state.running}};
    if (state.last) {
        const ReloadResult& r = *state.last;
        nlohmann::json last = {{"id", state.done},
                               {"ok", r.ok},
                               {"finished_at", iso8601(state.finished_at)},
                               {"trigger", state.trigger},
                               {"changes", state.changes}};
        if (r.ok) {
            last["generation"] = r.engines.generation;
        } else {
            last["error"] = r.error;
            last["file"] = r.file;
            last["line"] = r.line;
        }
        reload["last"] = std::move(last);
    } else {
        reload["last"] = nullptr;
    }
    std::optional<EnginesInfo> info = scan_->engines_info();
    return {{"ready", info.has_value()},
            {"engines", info ? nlohmann::json(*info) : nlohmann::json()},
            {"reload", std::move(reload)}};
}

nlohmann::json Daemon::detections(size_t count) const {
    const std::string path = config()->daemon.event_log;
    nlohmann::json out = nlohmann::json::array();
    for (const std::string& line : read_last_events(path, std::min(count, kMaxDetections))) {
        nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
        out.push_back(event.is_discarded() ? nlohmann::json{{"raw", line}} : event);
    }
    return out;
}

nlohmann::json Daemon::scan_status() const {
    nlohmann::json s = scan_->stats();
    s["ready"] = scan_->ready();
    if (std::optional<EnginesInfo> info = scan_->engines_info()) {
        s["generation"] = info->generation;
        s["backend"] = info->backend;
    } else {
        s["generation"] = 0;
        s["backend"] = backend_name(config()->scan.engine);
    }
    const EngineLoader::State state = loader_->state();
    s["loading"] = state.running || state.done < state.requested;
    s["last_reload_error"] =
        state.last && !state.last->ok ? nlohmann::json(state.last->error) : nlohmann::json();
    s["reload_mode"] = reload_mode_name(config()->scan.reload);
    s["signatures"] = watcher_ ? watcher_->status() : nlohmann::json();
    if (watcher_) s["signatures"]["builds"] = state.signature_builds;
    nlohmann::json log = {{"path", config()->daemon.event_log}};
    std::shared_ptr<EventLog> events = event_log();
    log["open"] = events != nullptr;
    log["written"] = events ? events->written() : 0;
    log["failed"] = events ? events->failed() : 0;
    {
        std::lock_guard lock(event_log_mutex_);
        log["error"] =
            event_log_error_.empty() ? nlohmann::json() : nlohmann::json(event_log_error_);
    }
    s["event_log"] = std::move(log);
    return s;
}

nlohmann::json Daemon::status() {
    std::vector<KernelQueueStats> kernel = kernel_stats_->read();
    nlohmann::json queues = nlohmann::json::array();
    uint64_t active = 0, total = 0, evicted = 0, expired = 0, released = 0, claimed = 0;
    uint64_t max_flows = 0, memory = 0;
    PacketCounters packets;
    StreamTotals streams;
    std::map<std::string, LabelCount> dpi, services;
    std::array<InspectionCounters, kServiceCount> protocols;
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
                            {"fail_open", s->fail_open},
                            {"fail_open_suspensions", c.fail_open_suspensions},
                            {"malformed", s->packets.malformed},
                            {"released", s->released_verdicts},
                            {"replaced", c.replaced},
                            {"flows", s->flows_active},
                            {"stream_memory_bytes", s->streams.memory_bytes},
                            {"stream_memory_limit", s->streams.memory_limit}};
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
        streams += s->streams;
        packets += s->packets;
        for (const auto& [name, n] : s->dpi_protocols) {
            dpi[name].active += n.active;
            dpi[name].total += n.total;
        }
        for (const auto& [name, n] : s->services) {
            services[name].active += n.active;
            services[name].total += n.total;
        }
        for (size_t i = 0; i < kServiceCount; ++i)
            protocols[i] += s->protocols[i];
    }
    // Every protocol that has an inspector, scanned or not (scan = false
    // releases are counted there too).
    nlohmann::json inspected = nlohmann::json::object();
    for (size_t i = 1; i < kServiceCount; ++i)
        if (has_inspector(Service(i)))
            inspected[std::string(service_name(Service(i)))] = protocols[i];
    double uptime =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const std::optional<bool> liberal = conntrack_tcp_liberal();
    nlohmann::json status = {
        {"version", NFQSCAN_VERSION},
        {"pid", getpid()},
        {"uptime_s", uptime},
        {"config", config()->source},
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
        {"protocols", inspected},
        {"packets", {{"tcp", packets.tcp}, {"udp", packets.udp}, {"other", packets.other}}},
        {"streams",
         {{"active", streams.active},
          {"memory_bytes", streams.memory_bytes},
          {"memory_limit", streams.memory_limit},
          {"overflow",
           {{"bypassed", streams.overflow_bypassed},
            {"dropped", streams.overflow_dropped},
            {"refused_segments", streams.memory_refused},
            {"resets", streams.memory_resets}}},
          {"rewritten_packets", streams.rewritten_packets},
          {"injected_packets", streams.injected_packets},
          {"sack_acks", streams.sack_acks},
          {"held_packets", streams.held_now},
          {"conflicts", streams.conflicts},
          {"held_overflow", streams.held_overflow},
          {"stalls", streams.stalls},
          {"tails_acknowledged", streams.tails_acknowledged},
          {"relay",
           {{"active", streams.relaying_now},
            {"started", streams.relays},
            {"acks", streams.relay_acks},
            {"segments", streams.relay_segments},
            {"retransmissions", streams.relay_retransmissions},
            {"timeouts", streams.relay_timeouts},
            {"buffer_full", streams.relay_full},
            {"device", relay_device_ ? relay_device_->name : std::string()},
            {"gso_frames", streams.relay_gso_frames},
            {"device_frames", streams.relay_device_frames},
            {"device_errors", streams.relay_device_errors},
            {"device_queued", streams.relay_device_queued}}},
          {"inject", {{"failed", streams.inject_failed}, {"busy", streams.inject_busy}}},
          {"resets", streams.resets},
          {"nat_flows", streams.nat_flows},
          {"conntrack_tcp_liberal", liberal ? nlohmann::json(*liberal) : nlohmann::json()},
          {"engine_marked", streams.engine_marked},
          {"engine_mark_carried", streams.engine_mark_carried}}},
        {"scan", scan_status()},
        {"notify", notify_status()}};
    status["quarantine"] = quarantine_status();
    nlohmann::json& ftp = status["ftp"];
    ftp = ftp_expectations_.counters();
    ftp["expected_now"] = ftp_expectations_.size();
    for (const auto& [name, field] : PacketCounters::kFields)
        status["packets"][name] = packets.*field;
    nlohmann::json& peers = status["streams"]["peer_checks"];
    for (const auto& [name, field] : PeerCheckCounters::kFields)
        peers[name] = streams.peer_checks.*field;
    return status;
}

nlohmann::json Daemon::quarantine_status() const {
    if (!quarantine_) return {{"dir", ""}};
    nlohmann::json j = quarantine_->counters();
    j["dir"] = quarantine_->dir();
    return j;
}

void Daemon::quarantine_command(ControlRequest& request, PendingReply reply) {
    if (!quarantine_)
        throw std::runtime_error("no quarantine: [quarantine] dir is not set in " +
                                 config()->source);
    const std::string op = request.body.value("op", std::string());
    auto done = [reply](nlohmann::json result, std::string error) {
        if (error.empty())
            reply.ok(std::move(result));
        else
            reply.fail(error);
    };
    if (op == "list") {
        quarantine_->list(request.body, done);
        return;
    }
    const nlohmann::json id = request.body.value("id", nlohmann::json());
    if (!id.is_string()) throw std::runtime_error("quarantine " + op + ": \"id\" must be a string");
    if (op == "show") {
        quarantine_->show(id, done);
    } else if (op == "delete") {
        quarantine_->remove(id, done);
    } else if (op == "release") {
        quarantine_->release(id, done);
    } else if (op == "export") {
        // The client opened the file it exports to and passed it
        // (SCM_RIGHTS): the daemon never creates a path for a client.
        if (request.files.size() != 1)
            throw std::runtime_error(
                "quarantine export: pass exactly one open file (as nfqscanctl does)");
        auto file = std::make_shared<UniqueFd>(std::move(request.files[0]));
        const int fd = file->get();
        quarantine_->export_to(id, fd, [done, file](nlohmann::json result, std::string error) {
            done(std::move(result), std::move(error));
        });
    } else {
        throw std::runtime_error("quarantine: unknown operation \"" + op +
                                 "\" (list, show, export, release, delete)");
    }
}

nlohmann::json Daemon::notify_status() const {
    nlohmann::json j = notifier_->counters();
    j["relay"] = config()->notify.relay;
    j["queued_now"] = notifier_->queued();
    return j;
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
            if (f.stream) {
                nlohmann::json& s = out.back()["stream"];
                for (size_t d = 0; d < 2; ++d) {
                    const StreamDirectionInfo& i = (*f.stream)[d];
                    s[d == 0 ? "c2s" : "s2c"] = {
                        {"in_next", i.in_next},       {"in_mapped", i.in_mapped},
                        {"out_acked", i.out_acked},   {"out_sent", i.out_sent},
                        {"out_next", i.out_next},     {"held_segments", i.held_segments},
                        {"held_bytes", i.held_bytes}, {"relaying", i.relaying}};
                }
            }
        }
    }
    return out;
}

std::string Daemon::status_line() {
    uint64_t flows = 0, packets = 0;
    for (auto& w : workers_) {
        // Counters only: this runs every 10 s, a snapshot walks the flow table.
        if (auto b = w->brief(kWorkerTimeout)) {
            flows += b->flows_active;
            packets += b->packets;
        }
    }
    std::optional<EnginesInfo> info = scan_->engines_info();
    return fmt::format("{} flows, {} packets, {}", flows, packets,
                       info ? fmt::format("scan engines generation {}", info->generation)
                            : std::string("scan engines loading"));
}

}  // namespace nfqscan
