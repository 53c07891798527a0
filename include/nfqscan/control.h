// Control socket: a UNIX stream socket speaking one JSON request and one JSON
// reply per connection, each a single line. Requests are
// {"command": "status", ...}; replies {"ok": true, "result": ...} or
// {"ok": false, "error": "..."}. Handlers run on the control thread; they
// reach the workers only through QueueWorker::call().
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace nfqscan {

class ControlServer {
  public:
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

    // Creates the socket (and its directory), mode 0660. Throws on failure.
    explicit ControlServer(std::string path);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    void handle(const std::string& command, Handler handler);
    void start();
    void stop();

    // For tests: handle one request text as a connection would.
    std::string dispatch(const std::string& request_line);

  private:
    void run();

    std::string path_;
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    std::map<std::string, Handler> handlers_;
    std::thread thread_;
};

// Client: sends `request` to the daemon at `path`, returns the reply's
// "result". Throws std::runtime_error with the daemon's error or the socket
// error.
nlohmann::json control_request(const std::string& path, const nlohmann::json& request,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace nfqscan
