// nfqscand: inline content scanner on NFQUEUE. See README.md.
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "nfqscan/daemon.h"
#include "nfqscan/replay.h"

int main(int argc, char** argv) {
    using namespace nfqscan;
    CLI::App app{"nfqscand - inline content scanner on NFQUEUE"};
    DaemonOptions options;
    std::string queues, control;
    bool foreground = false;
    ReplayCommand replay;
    app.add_option("--config", options.config_path,
                   "configuration file (with --replay: default /etc/nfqscan/nfqscan.toml)");
    app.add_option("--replay", replay.capture,
                   "run a capture (pcap, pcapng) through the configuration offline and print "
                   "what nfqscand would have done; sends nothing");
    app.add_flag("--json", replay.json, "with --replay: event log lines instead of a table");
    app.add_option("--queue", queues, "queue number N or range N-M (overrides the config)");
    app.add_option("--control", control, "control socket path (overrides the config)");
    app.add_flag("--foreground", foreground, "stay in the foreground, log to stderr");
    app.add_flag("--allow-test-inspectors", options.allow_test_inspectors,
                 "accept test inspectors ([test_rewrite]) in the configuration");
    app.set_version_flag("--version", NFQSCAN_VERSION);
    CLI11_PARSE(app, argc, argv);
    if (replay.json && replay.capture.empty()) {
        std::fprintf(stderr, "nfqscand: --json goes with --replay\n");
        return 2;
    }
    if (options.config_path.empty()) {
        if (replay.capture.empty()) {
            std::fprintf(stderr, "nfqscand: --config is required\n");
            return 2;
        }
        options.config_path = "/etc/nfqscan/nfqscan.toml";
    }

    try {
        if (!queues.empty()) options.queues = QueueRange::parse(queues);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "nfqscand: --queue %s: %s\n", queues.c_str(), e.what());
        return 2;
    }
    if (!control.empty()) options.control_socket = control;
    // daemon() changes to /, and reloads read the file again; relative scan
    // folders resolve against the file's folder.
    {
        std::error_code ec;
        std::filesystem::path absolute = std::filesystem::absolute(options.config_path, ec);
        if (!ec) options.config_path = absolute.lexically_normal().string();
    }

    // Signals are read from a signalfd by this thread only; block them in
    // every thread before any is created.
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGHUP})
        sigaddset(&signals, s);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    std::unique_ptr<Daemon> daemon;
    try {
        Config config = load_config(options.config_path);  // errors before forking
        if (config.test_rewrite.present && !options.allow_test_inspectors)
            throw ConfigError(config.source, config.test_rewrite.line, "test_rewrite",
                              "a test inspector: nfqscand accepts it only when started with "
                              "--allow-test-inspectors");
        spdlog::set_level(spdlog::level::from_str(config.daemon.log_level));
        if (!replay.capture.empty()) {
            // The report goes to stdout; the log only says what went wrong.
            spdlog::set_default_logger(spdlog::stderr_color_mt("replay"));
            spdlog::set_level(spdlog::level::warn);
            pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);  // Ctrl-C ends a replay
            return run_replay(replay, config);
        }
        if (!foreground) {
            if (::daemon(0, 0) < 0) {
                std::perror("nfqscand: daemon");
                return 1;
            }
            spdlog::set_default_logger(spdlog::syslog_logger_mt("nfqscand", "nfqscand", LOG_PID));
            spdlog::set_level(spdlog::level::from_str(config.daemon.log_level));
        }
        daemon = std::make_unique<Daemon>(options);
        daemon->start();
    } catch (const ConfigError& e) {
        spdlog::critical("configuration: {}", e.what());
        return 2;
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return 1;
    }

    sd_notify(0, "READY=1\nSTATUS=running");
    int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
    for (unsigned seconds = 1;; ++seconds) {
        pollfd p{sfd, POLLIN, 0};
        int ready = poll(&p, 1, 1000);
        if (ready == 0) {
            daemon->check_relay_device();
            if (seconds % 10 == 0) sd_notifyf(0, "STATUS=%s", daemon->status_line().c_str());
            continue;
        }
        signalfd_siginfo info;
        if (ready < 0 || read(sfd, &info, sizeof info) != sizeof info) continue;
        if (info.ssi_signo == SIGHUP) {
            sd_notify(0, "RELOADING=1");
            // The engines rebuild in the background; their outcome goes to the log.
            ReloadStarted r = daemon->reload();
            sd_notifyf(0, "READY=1\nSTATUS=%s",
                       r.error.empty() ? "reloaded, scan engines rebuilding" : r.error.c_str());
            continue;
        }
        spdlog::info("signal {}: stopping", info.ssi_signo);
        sd_notify(0, "STOPPING=1");
        break;
    }
    daemon->stop();
    daemon.reset();
    return 0;
}
