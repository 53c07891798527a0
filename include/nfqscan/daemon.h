// nfqscand: the queue workers, the control socket and the commands it
// answers, configuration reload. main() only parses the command line and
// turns signals into calls on Daemon.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/control.h"
#include "nfqscan/worker.h"

namespace nfqscan {

struct DaemonOptions {
    std::string config_path;
    std::optional<QueueRange> queues;           // --queue overrides [daemon] queues
    std::optional<std::string> control_socket;  // --control overrides [daemon] control_socket
    bool allow_test_inspectors = false;         // accept [test_rewrite]
};

class Daemon {
  public:
    // Loads the configuration, binds every queue and the control socket.
    // Throws ConfigError or std::exception with a message for the operator.
    explicit Daemon(DaemonOptions options);
    ~Daemon();

    void start();
    void stop();

    // Re-reads the configuration file. On error the running configuration
    // stays and the error is returned (empty string on success).
    std::string reload();

    nlohmann::json status();
    nlohmann::json flows(size_t limit);
    std::string status_line();

  private:
    std::shared_ptr<Config> load() const;

    DaemonOptions options_;
    std::shared_ptr<const Config> config_;
    std::mutex reload_mutex_;
    std::vector<std::unique_ptr<QueueWorker>> workers_;
    std::unique_ptr<ControlServer> control_;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace nfqscan
