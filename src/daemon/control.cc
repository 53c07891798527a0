#include "nfqscan/control.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

namespace nfqscan {

namespace {

// Requests are small; a bound keeps a hostile client from growing memory.
constexpr size_t kMaxRequest = 64 * 1024;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

sockaddr_un address_of(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw std::runtime_error("control socket path too long: " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

nlohmann::json parse_request(const std::string& line) {
    nlohmann::json request = nlohmann::json::parse(line);
    if (!request.is_object() || !request.contains("command") || !request["command"].is_string())
        throw std::runtime_error("request must be an object with a \"command\" string");
    return request;
}

std::string reply_line(const nlohmann::json& reply) {
    return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string error_line(const std::string& error) {
    return reply_line({{"ok", false}, {"error", error}});
}

ControlPeer peer_of(int fd) {
    ControlPeer peer;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        // Unknown callers get nothing: an impossible uid is no one's.
        peer.uid = peer.gid = static_cast<uid_t>(-1);
        return peer;
    }
    peer.pid = cred.pid;
    peer.uid = cred.uid;
    peer.gid = cred.gid;
    std::vector<gid_t> groups(64);
    for (int attempt = 0; attempt < 2; ++attempt) {
        len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
            groups.resize(len / sizeof(gid_t));
            peer.groups = std::move(groups);
            break;
        }
        if (errno != ERANGE) break;
        groups.resize(len / sizeof(gid_t) + 1);  // len holds the size it needs
    }
    return peer;
}

// Every byte of `data` with `files` attached to the first send.
bool send_all(int fd, const std::string& data, const std::vector<int>& files, int timeout_ms) {
    size_t done = 0;
    bool files_sent = files.empty();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (done < data.size()) {
        iovec iov{const_cast<char*>(data.data() + done), data.size() - done};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        std::vector<char> control;
        if (!files_sent) {
            control.resize(CMSG_SPACE(files.size() * sizeof(int)));
            msg.msg_control = control.data();
            msg.msg_controllen = control.size();
            cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(files.size() * sizeof(int));
            std::memcpy(CMSG_DATA(cmsg), files.data(), files.size() * sizeof(int));
        }
        const ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return false;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd p{fd, POLLOUT, 0};
            if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
            continue;
        }
        files_sent = true;
        done += static_cast<size_t>(n);
    }
    return true;
}

// The client's side: one line (without the newline), bounded in size and time.
std::optional<std::string> read_reply(int fd, size_t limit, int timeout_ms) {
    std::string data;
    char buffer[4096];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        const auto pos = data.find('\n');
        if (pos != std::string::npos) return data.substr(0, pos);
        if (data.size() > limit) return std::nullopt;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0)
            return std::nullopt;
        const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return data.empty() ? std::nullopt : std::optional(data);
        data.append(buffer, static_cast<size_t>(n));
    }
}

}  // namespace

// One client connection, from accept to the last byte of its reply.
struct ControlServer::Connection {
    enum class State { Reading, Held, Writing };

    UniqueFd fd;
    ControlPeer peer;
    bool http = false;  // from serve_http()'s listener
    State state = State::Reading;
    std::string input;
    std::vector<UniqueFd> files;
    std::string output;
    size_t written = 0;
    // Reading and Writing end by this time; Held waits for its handler.
    std::chrono::steady_clock::time_point deadline;

    void reply(std::string line) {
        output = std::move(line);
        written = 0;
        state = State::Writing;
        deadline = std::chrono::steady_clock::now() + kClientTimeout;
    }
};

// Tasks for the control thread, from any thread; an eventfd wakes its poll.
struct ControlServer::Inbox {
    std::mutex mutex;
    std::vector<std::function<void()>> tasks;
    bool open = false;  // between start() and stop()
    int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    ~Inbox() {
        if (wake_fd >= 0) close(wake_fd);
    }
    void post(std::function<void()> task) {
        {
            std::lock_guard lock(mutex);
            if (!open) return;
            tasks.push_back(std::move(task));
        }
        uint64_t one = 1;
        (void)!write(wake_fd, &one, sizeof one);
    }
    std::vector<std::function<void()>> take() {
        uint64_t count;
        (void)!read(wake_fd, &count, sizeof count);
        std::lock_guard lock(mutex);
        return std::exchange(tasks, {});
    }
};

struct PendingReply::State {
    std::shared_ptr<ControlServer::Inbox> inbox;
    ControlServer* server;  // used only by tasks, which run on its thread
    uint64_t id;
    std::atomic<bool> answered{false};

    State(std::shared_ptr<ControlServer::Inbox> i, ControlServer* s, uint64_t n)
        : inbox(std::move(i)), server(s), id(n) {}
    ~State() {
        if (!answered) send(error_line("the request was dropped without an answer"));
    }
    void send(std::string line) {
        inbox->post(
            [server = server, id = id, line = std::move(line)] { server->answer(id, line); });
    }
};

void PendingReply::ok(nlohmann::json result) const {
    if (state_->answered.exchange(true)) return;
    state_->send(reply_line({{"ok", true}, {"result", std::move(result)}}));
}

void PendingReply::fail(const std::string& error) const {
    if (state_->answered.exchange(true)) return;
    state_->send(error_line(error));
}

ControlServer::ControlServer(std::string path, ControlPermissions permissions)
    : path_(std::move(path)),
      permissions_(std::move(permissions)),
      inbox_(std::make_shared<Inbox>()) {
    std::filesystem::path dir = std::filesystem::path(path_).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir);
    sockaddr_un addr = address_of(path_);
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) throw_errno("control socket");
    // A socket file left by a crashed daemon would make bind fail; one that
    // answers belongs to a running daemon.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        bool alive = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        close(probe);
        if (alive) {
            close(listen_fd_);
            throw std::runtime_error("control socket " + path_ +
                                     " is in use by a running nfqscand");
        }
    }
    unlink(path_.c_str());
    // Nobody but the owner may connect until the mode below is set.
    const mode_t old_mask = umask(0077);
    const bool bound = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    umask(old_mask);
    if (!bound || listen(listen_fd_, 64) < 0) {
        int saved = errno;
        close(listen_fd_);
        errno = saved;
        throw_errno("control socket " + path_);
    }
    const bool group_set = !permissions_.query_group || chown(path_.c_str(), static_cast<uid_t>(-1),
                                                              *permissions_.query_group) == 0;
    if (!group_set || chmod(path_.c_str(), permissions_.query_group ? 0660 : 0600) != 0) {
        int saved = errno;
        close(listen_fd_);
        errno = saved;
        throw_errno("control socket " + path_ +
                    (permissions_.query_group ? ": group " + permissions_.query_group_name : ""));
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

ControlServer::~ControlServer() {
    stop();
    if (listen_fd_ >= 0) {
        close(listen_fd_);
        // After the switch to [daemon] user, a folder root owns (one that
        // existed before the start) keeps the file; the next start finds no
        // daemon behind it and replaces it.
        if (unlink(path_.c_str()) < 0 && errno != ENOENT)
            spdlog::info("control socket {} left in place: {} (the next start replaces it)", path_,
                         std::strerror(errno));
    }
    if (stop_fd_ >= 0) close(stop_fd_);
}

void ControlServer::handle(const std::string& command, Handler handler, ControlAccess access) {
    commands_[command] = Command{std::move(handler), nullptr, access};
}

void ControlServer::handle_async(const std::string& command, AsyncHandler handler,
                                 ControlAccess access) {
    commands_[command] = Command{nullptr, std::move(handler), access};
}

void ControlServer::post(std::function<void()> task) {
    inbox_->post(std::move(task));
}

void ControlServer::serve_http(UniqueFd listener, HttpHandler handler) {
    http_fd_ = std::move(listener);
    http_handler_ = std::move(handler);
}

void ControlServer::start() {
    {
        std::lock_guard lock(inbox_->mutex);
        inbox_->open = true;
    }
    thread_ = std::thread([this] { run(); });
}

std::function<void(std::function<void()>)> ControlServer::poster() const {
    return [inbox = inbox_](std::function<void()> task) { inbox->post(std::move(task)); };
}

void ControlServer::stop() {
    std::vector<std::function<void()>> dropped;
    {
        std::lock_guard lock(inbox_->mutex);
        inbox_->open = false;
        dropped.swap(inbox_->tasks);
    }
    dropped.clear();  // outside the lock: a dropped PendingReply posts (to nowhere)
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    thread_.join();
}

std::string ControlServer::refusal(const ControlPeer& peer, const std::string& command,
                                   ControlAccess access) const {
    // Root only, not the daemon's own account: scanner processes run as that
    // account too when nfqscand is not root, and a compromised scanner must
    // not reach reload or scan (or the status of the flows).
    const bool admin = peer.uid == 0;
    if (admin) return "";
    if (access == ControlAccess::Query && permissions_.query_group) {
        const gid_t group = *permissions_.query_group;
        if (peer.gid == group) return "";
        for (gid_t g : peer.groups)
            if (g == group) return "";
    }
    std::string why =
        "permission denied: uid " + std::to_string(peer.uid) + " may not run \"" + command + "\" (";
    if (access == ControlAccess::Admin)
        why += "only root may";
    else if (permissions_.query_group)
        why += "only root and members of group " + permissions_.query_group_name + " may";
    else
        why += "only root may; [daemon] control_group lets a group query";
    return why + ")";
}

std::string ControlServer::dispatch(const std::string& line, const ControlPeer& peer) {
    try {
        const nlohmann::json request = parse_request(line);
        const std::string command = request["command"];
        auto it = commands_.find(command);
        if (it == commands_.end() || !it->second.sync)
            throw std::runtime_error("unknown command: " + command);
        if (std::string why = refusal(peer, command, it->second.access); !why.empty())
            throw std::runtime_error(why);
        return reply_line({{"ok", true}, {"result", it->second.sync(request)}});
    } catch (const std::exception& e) {
        return error_line(e.what());
    }
}

// Answers now, or holds the connection for an asynchronous handler.
void ControlServer::serve(uint64_t id, Connection& c, const std::string& line) {
    ControlRequest request;
    const Command* command = nullptr;
    try {
        request.body = parse_request(line);
        auto it = commands_.find(request.body["command"].get<std::string>());
        if (it != commands_.end() && it->second.async) command = &it->second;
    } catch (const std::exception&) {
        // dispatch() answers with the error
    }
    if (command == nullptr) {
        c.files.clear();  // only asynchronous commands take files
        c.reply(dispatch(line, c.peer));
        return;
    }
    const std::string name = request.body["command"];
    if (std::string why = refusal(c.peer, name, command->access); !why.empty()) {
        c.files.clear();
        c.reply(error_line(why));
        return;
    }
    if (held_ >= kMaxHeld) {
        c.files.clear();
        c.reply(error_line("too many control requests in progress"));
        return;
    }
    request.files = std::move(c.files);
    request.peer = c.peer;
    c.state = Connection::State::Held;
    ++held_;
    auto state = std::make_shared<PendingReply::State>(inbox_, this, id);
    try {
        command->async(request, PendingReply(state));
    } catch (const std::exception& e) {
        PendingReply(state).fail(e.what());
    }
}

void ControlServer::answer(uint64_t id, const std::string& reply_line) {
    auto it = connections_.find(id);
    if (it == connections_.end() || it->second->state != Connection::State::Held) return;
    --held_;
    it->second->reply(reply_line);
}

void ControlServer::accept_clients() {
    for (;;) {
        UniqueFd client(accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client) return;  // EAGAIN: no more waiting, or a transient error
        if (connections_.size() >= kMaxConnections) {
            // Said without waiting; a client that does not read it loses it.
            const std::string line = error_line("too many control connections");
            (void)!send(client.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            continue;
        }
        auto c = std::make_unique<Connection>();
        c->peer = peer_of(client.get());
        c->fd = std::move(client);
        c->deadline = std::chrono::steady_clock::now() + kClientTimeout;
        connections_.emplace(next_id_++, std::move(c));
    }
}

void ControlServer::accept_http_clients() {
    for (;;) {
        UniqueFd client(accept4(http_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client) return;
        size_t open = 0;
        auto oldest_reading = connections_.end();
        for (auto it = connections_.begin(); it != connections_.end(); ++it) {
            if (!it->second->http) continue;
            ++open;
            if (oldest_reading == connections_.end() &&
                it->second->state == Connection::State::Reading)
                oldest_reading = it;
        }
        if (open >= kMaxHttpConnections) {
            // Idle connections must not lock a scraper out: the one that has
            // waited longest without a whole request goes. All answering: the
            // new one goes.
            if (oldest_reading == connections_.end()) continue;
            connections_.erase(oldest_reading);
        }
        auto c = std::make_unique<Connection>();
        c->peer.uid = c->peer.gid = static_cast<uid_t>(-1);  // no one's: never a control peer
        c->http = true;
        c->fd = std::move(client);
        c->deadline = std::chrono::steady_clock::now() + kClientTimeout;
        connections_.emplace(next_id_++, std::move(c));
    }
}

void ControlServer::read_from(uint64_t id, Connection& c) {
    char buffer[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxFiles * sizeof(int))];
    for (;;) {
        iovec iov{buffer, sizeof buffer};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = recvmsg(c.fd.get(), &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        // Descriptors are owned as soon as they arrive, so every path closes them.
        for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
            const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
                c.files.emplace_back(fd);
            }
        }
        if (n <= 0) {
            // The client closed (or failed) before a whole request.
            connections_.erase(id);
            return;
        }
        if ((msg.msg_flags & MSG_CTRUNC) != 0 || c.files.size() > kMaxFiles) {
            c.files.clear();
            c.reply(error_line("too many files in one request (at most " +
                               std::to_string(kMaxFiles) + ")"));
            return;
        }
        c.input.append(buffer, static_cast<size_t>(n));
        if (c.http) {
            // One request: its header ends at a blank line.
            const bool whole = c.input.find("\r\n\r\n") != std::string::npos ||
                               c.input.find("\n\n") != std::string::npos;
            if (whole || c.input.size() > kMaxHttpRequest) {
                std::string answer;
                try {
                    answer = http_handler_(std::exchange(c.input, {}));
                } catch (const std::exception& e) {
                    spdlog::error("metrics: {}", e.what());
                    connections_.erase(id);
                    return;
                }
                c.reply(std::move(answer));
                return;
            }
            continue;
        }
        const auto newline = c.input.find('\n');
        if (newline != std::string::npos) {
            const std::string line = c.input.substr(0, newline);
            c.input.clear();
            serve(id, c, line);
            return;
        }
        if (c.input.size() > kMaxRequest) {
            c.files.clear();
            c.reply(error_line("request too large"));
            return;
        }
    }
}

void ControlServer::run() {
    pthread_setname_np(pthread_self(), "nfq-control");
    std::vector<pollfd> fds;
    std::vector<uint64_t> ids;
    for (;;) {
        // Connections past their deadline are closed; the nearest one left
        // bounds the wait.
        const auto now = std::chrono::steady_clock::now();
        int timeout_ms = -1;
        for (auto it = connections_.begin(); it != connections_.end();) {
            Connection& c = *it->second;
            if (c.state != Connection::State::Held && c.deadline <= now) {
                if (c.state == Connection::State::Reading && c.http)
                    spdlog::debug("metrics: a client sent no whole request in time; closed");
                else if (c.state == Connection::State::Reading)
                    spdlog::debug("control: client pid {} sent no request in time; closed",
                                  c.peer.pid);
                it = connections_.erase(it);
                continue;
            }
            if (c.state != Connection::State::Held) {
                const auto left =
                    std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now);
                const int ms = static_cast<int>(left.count()) + 1;
                timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
            }
            ++it;
        }
        // poll() skips a negative descriptor: no serve_http(), no listener.
        fds.assign({{listen_fd_, POLLIN, 0},
                    {stop_fd_, POLLIN, 0},
                    {inbox_->wake_fd, POLLIN, 0},
                    {http_fd_ ? http_fd_.get() : -1, POLLIN, 0}});
        constexpr size_t kFixed = 4;
        ids.clear();
        for (const auto& [id, c] : connections_) {
            if (c->state == Connection::State::Held) continue;
            fds.push_back(
                {c->fd.get(), short(c->state == Connection::State::Reading ? POLLIN : POLLOUT), 0});
            ids.push_back(id);
        }
        if (poll(fds.data(), fds.size(), timeout_ms) < 0) {
            if (errno == EINTR) continue;
            spdlog::error("control socket: poll: {}", strerror(errno));
            break;
        }
        if (fds[1].revents) break;
        if (fds[2].revents) {
            for (std::function<void()>& task : inbox_->take()) {
                try {
                    task();
                } catch (const std::exception& e) {
                    spdlog::error("control: {}", e.what());
                }
            }
        }
        for (size_t i = 0; i < ids.size(); ++i) {
            if (fds[kFixed + i].revents == 0) continue;
            auto it = connections_.find(ids[i]);
            if (it == connections_.end()) continue;
            Connection& c = *it->second;
            if (c.state == Connection::State::Reading) {
                read_from(ids[i], c);
            } else if (c.state == Connection::State::Writing) {
                const ssize_t n = send(c.fd.get(), c.output.data() + c.written,
                                       c.output.size() - c.written, MSG_NOSIGNAL);
                if (n > 0) c.written += static_cast<size_t>(n);
                if ((n < 0 && errno != EAGAIN && errno != EINTR) || c.written == c.output.size())
                    connections_.erase(it);
            }
        }
        if (fds[0].revents) accept_clients();
        if (fds[3].revents) accept_http_clients();
    }
    connections_.clear();
    held_ = 0;
}

nlohmann::json control_request(const std::string& path, const nlohmann::json& request,
                               std::chrono::milliseconds timeout, const std::vector<int>& files) {
    sockaddr_un addr = address_of(path);
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket");
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw std::runtime_error("cannot reach nfqscand at " + path + ": " + strerror(errno));
    if (!send_all(fd.get(), request.dump() + "\n", files,
                  static_cast<int>(ControlServer::kClientTimeout.count())))
        throw std::runtime_error("cannot send to nfqscand: " + std::string(strerror(errno)));
    std::optional<std::string> line =
        read_reply(fd.get(), 256u << 20, static_cast<int>(timeout.count()));
    if (!line) throw std::runtime_error("no reply from nfqscand at " + path);
    nlohmann::json reply = nlohmann::json::parse(*line);
    if (!reply.value("ok", false)) throw std::runtime_error(reply.value("error", "failed"));
    return reply["result"];
}

}  // namespace nfqscan
