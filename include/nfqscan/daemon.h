// nfqscand: the queue workers, the scan service, the detection event log, the
// control socket and the commands it answers, configuration reload. main()
// only parses the command line and turns signals into calls on Daemon.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/control.h"
#include "nfqscan/ftp_expectations.h"
#include "nfqscan/nfqueue.h"
#include "nfqscan/privileges.h"
#include "nfqscan/quarantine.h"
#include "nfqscan/relay_device.h"
#include "nfqscan/scan.h"
#include "nfqscan/scan_event_log.h"
#include "nfqscan/signature_watch.h"
#include "nfqscan/worker.h"

namespace nfqscan {

struct DaemonOptions {
    std::string config_path;
    std::optional<QueueRange> queues;           // --queue overrides [daemon] queues
    std::optional<std::string> control_socket;  // --control overrides [daemon] control_socket
    bool allow_test_inspectors = false;         // accept [test_rewrite]
};

// What a reload did at once: the configuration is applied (or refused with
// `error`), and the scan engines are being rebuilt in the background; that
// build's outcome is reported under `engine_reload` by engines().
struct ReloadStarted {
    std::string error;           // empty: the configuration was applied
    uint64_t engine_reload = 0;  // id of the engine build that covers it
};

class Daemon {
  public:
    // Loads the configuration, opens the relay device and the control
    // socket, switches to [daemon] user (privileges.h), then starts the scan
    // pool, opens the event log and binds every queue. Throws ConfigError or
    // std::exception with a message for the operator.
    explicit Daemon(DaemonOptions options);
    ~Daemon();

    // Starts the workers, the control socket and the first engine build in
    // the background: traffic flows at once, verdicts are engine-not-ready
    // until the engines are in.
    void start();
    void stop();

    // Re-reads the configuration file and reopens the event log. On error
    // the running configuration stays. The scan engines rebuild in the
    // background; a broken rule file keeps the running engines (the error,
    // with file and line, is logged and shown by engines()).
    ReloadStarted reload();

    nlohmann::json status();
    nlohmann::json flows(size_t limit);
    std::string status_line();
    // Puts the relay device's rp_filter back to 0 if something changed it
    // (udev applies sysctl.d to new interfaces); called every second.
    void check_relay_device();

    // Control commands of the scan service (see README, nfqscanctl). A scan
    // goes through the scan pool and answers `reply` when its last file is
    // judged; the control thread does not wait for it.
    void scan_files(ControlRequest& request, PendingReply reply);
    static ControlPermissions control_permissions(const DaemonConfig& daemon);
    nlohmann::json engines() const;
    nlohmann::json detections(size_t count) const;

  private:
    class EngineLoader;  // the background engine builds

    std::shared_ptr<Config> load() const;
    std::shared_ptr<const Config> config() const;
    // Opens the event log at `path`, or reopens it when it is already that
    // file (logrotate). A failure is logged and leaves no event log.
    void open_event_log(const std::string& path);
    std::shared_ptr<EventLog> event_log() const;
    // Signature updates: the watcher follows `scan`'s folders; a check
    // rebuilds the engines when the signature files differ from those the
    // latest build loaded (configuration as it is, not re-read).
    void watch_signatures(const ScanConfig& scan);
    void check_signatures(SignatureWatcher::Trigger trigger);
    nlohmann::json scan_status() const;
    nlohmann::json notify_status() const;
    nlohmann::json quarantine_status() const;
    // `nfqscanctl quarantine ...`: one admin command, answered by the
    // quarantine's thread.
    void quarantine_command(ControlRequest& request, PendingReply reply);
    void open_control_socket();
    // Started as root with a [daemon] user: the folders of the control socket
    // and the event log, and the event log itself, made the account's.
    void prepare_owned_paths(const Account& account);
    // Opens [stream] relay_device with a queue per worker; on failure one
    // warning, and the relays use raw sockets.
    void open_relay_device(size_t queues);

    DaemonOptions options_;
    mutable std::mutex config_mutex_;  // guards config_ (read by every thread)
    std::shared_ptr<const Config> config_;
    std::mutex reload_mutex_;                  // one reload at a time (control thread, SIGHUP)
    std::optional<RelayDevice> relay_device_;  // its queues moved to the workers
    // Shared by every worker: a data connection may land on another queue
    // than its control connection. Declared before the workers: outlives them.
    FtpExpectations ftp_expectations_;
    std::vector<std::unique_ptr<QueueWorker>> workers_;
    std::unique_ptr<KernelQueueStatsReader> kernel_stats_;  // opened before the switch

    std::unique_ptr<ScanService> scan_;
    // Sender notifications of the mail inspectors ([notify]; applies at restart).
    std::unique_ptr<Notifier> notifier_;
    // Calls to the spam engine ([spam]; the engine's address is read per call,
    // so a reload applies at once).
    std::unique_ptr<SpamChecker> spam_;
    // Kept originals of blocked objects ([quarantine]; null when off; applies
    // at restart). Like the notifier, used by the workers, which ~Daemon()
    // stops first.
    std::unique_ptr<Quarantine> quarantine_;
    std::unique_ptr<EngineLoader> loader_;
    std::unique_ptr<SignatureWatcher> watcher_;  // after loader_: stops first
    mutable std::mutex event_log_mutex_;
    std::shared_ptr<EventLog> event_log_;
    std::string event_log_error_;

    // Declared last: destroyed first, so no handler runs on a dying daemon.
    std::unique_ptr<ControlServer> control_;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace nfqscan
