// Control socket: a UNIX stream socket speaking one JSON request and one JSON
// reply per connection, each a single line. Requests are
// {"command": "status", ...}; replies {"ok": true, "result": ...} or
// {"ok": false, "error": "..."}. Handlers run on the control thread; they
// reach the workers only through QueueWorker::call().
//
// Who may ask what: the peer's credentials (SO_PEERCRED, SO_PEERGROUPS) are
// checked on every request. Admin commands (reload, scan) are for root
// only; query commands also for members of a configured group. Files to scan come as descriptors
// the client opened (SCM_RIGHTS): the daemon never opens a path on a client's behalf.
//
// One thread serves every connection without blocking on any of them: each
// is read and written as poll() allows, with a deadline, so a slow or stuck
// client costs a slot, not the control thread. The same loop serves the
// HTTP metrics listener (serve_http), one request per connection.
//
// A request that takes long (a scan) has an asynchronous handler: it starts
// the work and returns at once with the connection held open; the answer is
// sent when the work calls PendingReply::ok() or fail(). Meanwhile the control
// thread goes on answering other requests. Work that completes on other
// threads gets back onto the control thread with post().
#pragma once

#include <sys/types.h>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "nfqscan/unique_fd.h"

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

// Who is on the other end of a connection, from the kernel (SO_PEERCRED).
struct ControlPeer {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS)
};

// What a command needs from its caller.
enum class ControlAccess {
    Query,  // read-only: root and members of the query group
    Admin,  // changes or costs something: root only
};

struct ControlPermissions {
    // Members of this group may run query commands; the socket file gets this
    // group and mode 0660. Unset: only admins (mode 0600).
    std::optional<gid_t> query_group;
    std::string query_group_name;  // for error messages
};

// One request: its JSON, the descriptors that came with it, its sender.
struct ControlRequest {
    nlohmann::json body;
    std::vector<UniqueFd> files;
    ControlPeer peer;
};

class ControlServer {
  public:
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
    // Throwing before the reply is handed on answers with the error.
    using AsyncHandler = std::function<void(ControlRequest& request, PendingReply reply)>;

    // Creates the socket (and its directory). Throws on failure.
    explicit ControlServer(std::string path, ControlPermissions permissions = {});
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    void handle(const std::string& command, Handler handler,
                ControlAccess access = ControlAccess::Query);
    void handle_async(const std::string& command, AsyncHandler handler,
                      ControlAccess access = ControlAccess::Admin);
    // Also serves HTTP on `listener` (a listening TCP socket, [daemon]
    // metrics_listen): each connection sends one request, its header up to
    // the blank line (at most kMaxHttpRequest bytes: beyond, what came is
    // handed on as it is), gets `handler`'s answer to it and is closed.
    // Same thread and deadlines as the control clients; at most
    // kMaxHttpConnections at a time, the oldest one still sending its
    // request closed to make room for a new one. Call before start().
    using HttpHandler = std::function<std::string(std::string_view request)>;
    void serve_http(UniqueFd listener, HttpHandler handler);

    void start();
    // Held requests still unanswered are dropped (their clients see no reply).
    void stop();

    // Runs `task` on the control thread. Thread-safe; tasks posted after
    // stop() (or before start()) are dropped.
    void post(std::function<void()> task);
    // post() as a function that stays safe to call after this server is gone
    // (it then drops the task): for completions of work that may outlive it.
    std::function<void(std::function<void()>)> poster() const;

    // For tests: handle one request text as a connection of `peer` would
    // (synchronous commands only); by default as root.
    std::string dispatch(const std::string& request_line, const ControlPeer& peer = {});

    // Requests held for an asynchronous answer at most at a time; beyond,
    // a request gets an error at once.
    static constexpr size_t kMaxHeld = 64;
    // Open connections at most (reading, held or writing); beyond, new ones
    // are closed at once.
    static constexpr size_t kMaxConnections = 128;
    // A client has this long to send its request, and again to read the reply.
    static constexpr std::chrono::milliseconds kClientTimeout{5000};
    // Descriptors one request may carry (the kernel's SCM_MAX_FD).
    static constexpr size_t kMaxFiles = 253;
    // serve_http(): connections at a time, and the size of one request.
    static constexpr size_t kMaxHttpConnections = 8;
    static constexpr size_t kMaxHttpRequest = 8 * 1024;

  private:
    friend class PendingReply;
    struct Inbox;
    struct Connection;
    struct Command {
        Handler sync;
        AsyncHandler async;
        ControlAccess access;
    };

    void run();
    void accept_clients();
    void accept_http_clients();
    // Reads what `c` has sent; a complete request is served.
    void read_from(uint64_t id, Connection& c);
    void serve(uint64_t id, Connection& c, const std::string& line);
    // Why `peer` may not run `command`, or "" when it may.
    std::string refusal(const ControlPeer& peer, const std::string& command,
                        ControlAccess access) const;
    void answer(uint64_t id, const std::string& reply_line);

    std::string path_;
    ControlPermissions permissions_;
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    std::map<std::string, Command> commands_;
    std::shared_ptr<Inbox> inbox_;
    UniqueFd http_fd_;  // serve_http()'s listener
    HttpHandler http_handler_;
    // Control thread only: open connections by id.
    std::map<uint64_t, std::unique_ptr<Connection>> connections_;
    size_t held_ = 0;
    uint64_t next_id_ = 1;
    std::thread thread_;
};

// Client: sends `request` (and `files`, descriptors passed with SCM_RIGHTS)
// to the daemon at `path`, returns the reply's "result". Throws
// std::runtime_error with the daemon's error or the socket error.
nlohmann::json control_request(const std::string& path, const nlohmann::json& request,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30),
                               const std::vector<int>& files = {});

}  // namespace nfqscan
