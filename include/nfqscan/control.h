// Control socket: a UNIX stream socket speaking one JSON request and one JSON
// reply per connection, each a single line. Requests are
// {"command": "status", ...}; replies {"ok": true, "result": ...} or
// {"ok": false, "error": "..."}. Handlers run on the control thread; they
// reach the workers only through QueueWorker::call().
//
// A request that takes long (a scan) has an asynchronous handler: it starts
// the work and returns at once with the connection held open; the answer is
// sent when the work calls PendingReply::ok() or fail(). Meanwhile the control
// thread goes on answering other requests. Work that completes on other
// threads gets back onto the control thread with post().
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace nfqscan {

class ControlServer;

// The answer to one held request. Copyable; the first ok()/fail() of any copy
// answers, later ones are ignored, and if every copy is gone unanswered the
// client gets an error. Callable from any thread.
class PendingReply {
  public:
    void ok(nlohmann::json result) const;
    void fail(const std::string& error) const;

  private:
    friend class ControlServer;
    struct State;
    explicit PendingReply(std::shared_ptr<State> state) : state_(std::move(state)) {}
    std::shared_ptr<State> state_;
};

class ControlServer {
  public:
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
    // Throwing before the reply is handed on answers with the error.
    using AsyncHandler = std::function<void(const nlohmann::json& request, PendingReply reply)>;

    // Creates the socket (and its directory), mode 0660. Throws on failure.
    explicit ControlServer(std::string path);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    void handle(const std::string& command, Handler handler);
    void handle_async(const std::string& command, AsyncHandler handler);
    void start();
    // Held requests still unanswered are dropped (their clients see no reply).
    void stop();

    // Runs `task` on the control thread. Thread-safe; tasks posted after
    // stop() (or before start()) are dropped.
    void post(std::function<void()> task);
    // post() as a function that stays safe to call after this server is gone
    // (it then drops the task): for completions of work that may outlive it.
    std::function<void(std::function<void()>)> poster() const;

    // For tests: handle one request text as a connection would.
    std::string dispatch(const std::string& request_line);

    // Requests held for an asynchronous answer at most at a time; beyond,
    // a request gets an error at once.
    static constexpr size_t kMaxHeld = 64;

  private:
    friend class PendingReply;
    struct Inbox;

    void run();
    void serve(int client, const std::string& line);
    void answer(uint64_t id, const std::string& reply_line);

    std::string path_;
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    std::map<std::string, Handler> handlers_;
    std::map<std::string, AsyncHandler> async_handlers_;
    std::shared_ptr<Inbox> inbox_;
    // Control thread only: connections waiting for their answer.
    std::map<uint64_t, int> held_;
    uint64_t next_id_ = 1;
    std::thread thread_;
};

// Client: sends `request` to the daemon at `path`, returns the reply's
// "result". Throws std::runtime_error with the daemon's error or the socket
// error.
nlohmann::json control_request(const std::string& path, const nlohmann::json& request,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace nfqscan
