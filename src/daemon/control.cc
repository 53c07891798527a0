#include "nfqscan/control.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

namespace nfqscan {

namespace {

// Requests are small; a bound keeps a hostile client from growing memory.
constexpr size_t kMaxRequest = 64 * 1024;
constexpr int kClientTimeoutMs = 5000;

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

class FileDescriptor {
  public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) close(fd_);
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

bool write_all(int fd, const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                pollfd p{fd, POLLOUT, 0};
                if (poll(&p, 1, kClientTimeoutMs) <= 0) return false;
                continue;
            }
            return false;
        }
        done += size_t(n);
    }
    return true;
}

// Reads one line (without the newline), bounded in size and time.
std::optional<std::string> read_line(int fd, size_t limit, int timeout_ms) {
    std::string data;
    char buffer[4096];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        auto pos = data.find('\n');
        if (pos != std::string::npos) return data.substr(0, pos);
        if (data.size() > limit) return std::nullopt;
        int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(
                           deadline - std::chrono::steady_clock::now())
                           .count());
        pollfd p{fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) <= 0) return std::nullopt;
        ssize_t n = recv(fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return data.empty() ? std::nullopt : std::optional(data);
        data.append(buffer, size_t(n));
    }
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

}  // namespace

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

ControlServer::ControlServer(std::string path)
    : path_(std::move(path)), inbox_(std::make_shared<Inbox>()) {
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
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
        listen(listen_fd_, 16) < 0) {
        int saved = errno;
        close(listen_fd_);
        errno = saved;
        throw_errno("control socket " + path_);
    }
    chmod(path_.c_str(), 0660);
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

ControlServer::~ControlServer() {
    stop();
    if (listen_fd_ >= 0) {
        close(listen_fd_);
        unlink(path_.c_str());
    }
    if (stop_fd_ >= 0) close(stop_fd_);
}

void ControlServer::handle(const std::string& command, Handler handler) {
    handlers_[command] = std::move(handler);
}

void ControlServer::handle_async(const std::string& command, AsyncHandler handler) {
    async_handlers_[command] = std::move(handler);
}

void ControlServer::post(std::function<void()> task) {
    inbox_->post(std::move(task));
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

std::string ControlServer::dispatch(const std::string& line) {
    try {
        const nlohmann::json request = parse_request(line);
        const std::string command = request["command"];
        auto it = handlers_.find(command);
        if (it == handlers_.end()) throw std::runtime_error("unknown command: " + command);
        return reply_line({{"ok", true}, {"result", it->second(request)}});
    } catch (const std::exception& e) {
        return error_line(e.what());
    }
}

// Answers now, or holds the connection for an asynchronous handler.
void ControlServer::serve(int client, const std::string& line) {
    nlohmann::json request;
    AsyncHandler* async = nullptr;
    try {
        request = parse_request(line);
        auto it = async_handlers_.find(request["command"].get<std::string>());
        if (it != async_handlers_.end()) async = &it->second;
    } catch (const std::exception&) {
        // dispatch() answers with the error
    }
    if (async == nullptr) {
        write_all(client, dispatch(line));
        close(client);
        return;
    }
    if (held_.size() >= kMaxHeld) {
        write_all(client, error_line("too many control requests in progress"));
        close(client);
        return;
    }
    const uint64_t id = next_id_++;
    held_[id] = client;
    auto state = std::make_shared<PendingReply::State>(inbox_, this, id);
    try {
        (*async)(request, PendingReply(state));
    } catch (const std::exception& e) {
        PendingReply(state).fail(e.what());
    }
}

void ControlServer::answer(uint64_t id, const std::string& reply_line) {
    auto it = held_.find(id);
    if (it == held_.end()) return;
    write_all(it->second, reply_line);
    close(it->second);
    held_.erase(it);
}

void ControlServer::run() {
    pthread_setname_np(pthread_self(), "nfq-control");
    for (;;) {
        pollfd fds[3] = {
            {listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}, {inbox_->wake_fd, POLLIN, 0}};
        if (poll(fds, 3, -1) < 0) {
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
        if (!fds[0].revents) continue;
        int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        std::optional<std::string> line = read_line(client, kMaxRequest, kClientTimeoutMs);
        if (!line) {
            write_all(client, error_line("request too large or incomplete"));
            close(client);
            continue;
        }
        serve(client, *line);
    }
    for (const auto& [id, fd] : held_)
        close(fd);
    held_.clear();
}

nlohmann::json control_request(const std::string& path, const nlohmann::json& request,
                               std::chrono::milliseconds timeout) {
    sockaddr_un addr = address_of(path);
    FileDescriptor fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw_errno("socket");
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw std::runtime_error("cannot reach nfqscand at " + path + ": " + strerror(errno));
    if (!write_all(fd.get(), request.dump() + "\n"))
        throw std::runtime_error("cannot send to nfqscand: " + std::string(strerror(errno)));
    std::optional<std::string> line =
        read_line(fd.get(), 256u << 20, static_cast<int>(timeout.count()));
    if (!line) throw std::runtime_error("no reply from nfqscand at " + path);
    nlohmann::json reply = nlohmann::json::parse(*line);
    if (!reply.value("ok", false)) throw std::runtime_error(reply.value("error", "failed"));
    return reply["result"];
}

}  // namespace nfqscan
