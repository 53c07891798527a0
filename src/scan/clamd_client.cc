#include "clamd_client.h"
#include "nfqscan/unique_fd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace nfqscan {
namespace {

using Clock = std::chrono::steady_clock;

// clamd's default StreamMaxLength is 25 MiB and it reads chunks of any size;
// 64 KiB keeps the number of writes low without large stack buffers.
constexpr size_t kChunk = 64 * 1024;
constexpr size_t kMaxReply = 4096;

int remaining_ms(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until fd is ready for `events`; false on timeout or error.
bool wait_for(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, remaining_ms(deadline));
        if (n > 0) return true;
        if (n == 0) return false;
        if (errno != EINTR) return false;
    }
}

enum class Io { Ok, Timeout, Failed };

Io send_all(int fd, const uint8_t* data, size_t size, Clock::time_point deadline) {
    while (size > 0) {
        const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            size -= static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_for(fd, POLLOUT, deadline)) return Io::Timeout;
            continue;
        }
        return Io::Failed;
    }
    return Io::Ok;
}

// Reads up to the terminating NUL (z-prefixed commands) or EOF.
Io read_reply(int fd, std::string& reply, Clock::time_point deadline) {
    char buf[512];
    while (reply.size() < kMaxReply) {
        if (!wait_for(fd, POLLIN, deadline)) return Io::Timeout;
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return Io::Failed;
        if (n == 0) break;
        reply.append(buf, static_cast<size_t>(n));
        const size_t nul = reply.find('\0');
        if (nul != std::string::npos) {
            reply.resize(nul);
            break;
        }
    }
    while (!reply.empty() && (reply.back() == '\n' || reply.back() == '\r'))
        reply.pop_back();
    return Io::Ok;
}

int finish_connect(int fd, Clock::time_point deadline) {
    if (!wait_for(fd, POLLOUT, deadline)) return -1;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return -1;
    return 0;
}

ClamdReply parse_scan_reply(const std::string& reply) {
    // "stream: OK", "stream: Eicar-Signature FOUND", "INSTREAM size limit exceeded. ERROR"
    std::string_view r = reply;
    if (r.starts_with("stream: ")) r.remove_prefix(8);
    if (r == "OK") return {ClamdReply::Status::Clean, {}};
    if (r.ends_with(" FOUND"))
        return {ClamdReply::Status::Found, std::string(r.substr(0, r.size() - 6))};
    if (r.find("size limit exceeded") != std::string_view::npos)
        return {ClamdReply::Status::SizeLimit, reply};
    return {ClamdReply::Status::Error, reply.empty() ? std::string("empty answer") : reply};
}

}  // namespace

ClamdClient::ClamdClient(std::string address, std::chrono::milliseconds connect_timeout)
    : address_(std::move(address)), connect_timeout_(connect_timeout) {}

int ClamdClient::connect_with_deadline(Clock::time_point deadline) const {
    if (address_.starts_with('/')) {
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        if (address_.size() >= sizeof sun.sun_path) return -1;
        std::memcpy(sun.sun_path, address_.c_str(), address_.size() + 1);
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (fd.get() < 0) return -1;
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 &&
            (errno != EINPROGRESS || finish_connect(fd.get(), deadline) != 0))
            return -1;
        return fd.release();
    }

    std::string host, port;
    if (address_.starts_with('[')) {
        const size_t close = address_.find("]:");
        if (close == std::string::npos) return -1;
        host = address_.substr(1, close - 1);
        port = address_.substr(close + 2);
    } else {
        const size_t colon = address_.rfind(':');
        if (colon == std::string::npos) return -1;
        host = address_.substr(0, colon);
        port = address_.substr(colon + 1);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return -1;
    int result = -1;
    for (addrinfo* ai = found; ai != nullptr && result < 0; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                             ai->ai_protocol));
        if (fd.get() < 0) continue;
        if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 ||
            (errno == EINPROGRESS && finish_connect(fd.get(), deadline) == 0))
            result = fd.release();
    }
    ::freeaddrinfo(found);
    return result;
}

ClamdReply ClamdClient::scan(std::span<const uint8_t> bytes,
                             std::chrono::milliseconds timeout) const {
    const UniqueFd fd(connect_with_deadline(Clock::now() + connect_timeout_));
    if (fd.get() < 0)
        return {ClamdReply::Status::Unreachable, address_ + ": " + std::strerror(errno)};
    const auto deadline = Clock::now() + timeout;

    static constexpr char kCommand[] = "zINSTREAM";  // sent with its NUL
    Io io =
        send_all(fd.get(), reinterpret_cast<const uint8_t*>(kCommand), sizeof kCommand, deadline);
    for (size_t at = 0; io == Io::Ok && at < bytes.size(); at += kChunk) {
        const size_t n = std::min(kChunk, bytes.size() - at);
        const uint32_t len = htonl(static_cast<uint32_t>(n));
        io = send_all(fd.get(), reinterpret_cast<const uint8_t*>(&len), sizeof len, deadline);
        if (io == Io::Ok) io = send_all(fd.get(), bytes.data() + at, n, deadline);
    }
    if (io == Io::Ok) {
        const uint32_t end = 0;
        io = send_all(fd.get(), reinterpret_cast<const uint8_t*>(&end), sizeof end, deadline);
    }
    if (io == Io::Timeout)
        return {ClamdReply::Status::Timeout, "clamd did not take the data in time"};
    // A failed send usually means clamd gave up early (size limit) and said
    // why before closing: read the answer either way.
    std::string reply;
    const Io read = read_reply(fd.get(), reply, deadline);
    if (read == Io::Timeout) return {ClamdReply::Status::Timeout, "clamd did not answer in time"};
    if (reply.empty() && (read == Io::Failed || io == Io::Failed))
        return {ClamdReply::Status::Error,
                std::string("clamd connection lost: ") + std::strerror(errno)};
    return parse_scan_reply(reply);
}

std::optional<std::string> ClamdClient::version(std::chrono::milliseconds timeout) const {
    const UniqueFd fd(connect_with_deadline(Clock::now() + connect_timeout_));
    if (fd.get() < 0) return std::nullopt;
    const auto deadline = Clock::now() + timeout;
    static constexpr char kCommand[] = "zVERSION";
    if (send_all(fd.get(), reinterpret_cast<const uint8_t*>(kCommand), sizeof kCommand, deadline) !=
        Io::Ok)
        return std::nullopt;
    std::string reply;
    if (read_reply(fd.get(), reply, deadline) != Io::Ok || reply.empty()) return std::nullopt;
    return reply;
}

}  // namespace nfqscan
