#include "nfqscan/injector.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace nfqscan {

namespace {

bool would_block(int error) {
    return error == EAGAIN || error == EWOULDBLOCK || error == ENOBUFS;
}

int open_raw(int family, uint32_t mark, int send_buffer) {
    // IPPROTO_RAW: the packet carries its own IP header (IPv4 and IPv6).
    // Non-blocking: the worker thread answers the queue; with the send
    // buffer full it must not wait for the device. A packet that does not
    // fit is lost like one dropped on the wire (the relay retransmits, a
    // challenge or SACK ACK is sent again on the next trigger).
    int fd = socket(family, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_RAW);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "raw socket");
    // Room for a relay's burst (hundreds of segments per wakeup); FORCE needs
    // CAP_NET_ADMIN, which nfqscand has; otherwise the default stays.
    int size = send_buffer;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
        int saved = errno;
        close(fd);
        throw std::system_error(saved, std::generic_category(), "SO_MARK on the raw socket");
    }
    return fd;
}

}  // namespace

RawInjector::RawInjector(uint32_t mark, int send_buffer) {
    v4_ = open_raw(AF_INET, mark, send_buffer);
    try {
        v6_ = open_raw(AF_INET6, mark, send_buffer);
    } catch (...) {
        close(v4_);
        throw;
    }
}

RawInjector::~RawInjector() {
    if (v4_ >= 0) close(v4_);
    if (v6_ >= 0) close(v6_);
}

void RawInjector::send_all(std::span<const std::vector<uint8_t>> packets) {
    constexpr size_t kBatch = 64;
    mmsghdr messages[kBatch];
    iovec iov[kBatch];
    sockaddr_storage to[kBatch];
    size_t i = 0;
    while (i < packets.size()) {
        // A run of one family, at most kBatch packets.
        const std::vector<uint8_t>& first = packets[i];
        int version = first.empty() ? 0 : first[0] >> 4;
        if ((version != 4 || first.size() < 20) && (version != 6 || first.size() < 40)) {
            send(first);  // counted as failed there
            ++i;
            continue;
        }
        size_t n = 0;
        for (; n < kBatch && i + n < packets.size(); ++n) {
            const std::vector<uint8_t>& p = packets[i + n];
            size_t min = version == 4 ? 20 : 40;
            if (p.size() < min || (p[0] >> 4) != version) break;
            std::memset(&to[n], 0, sizeof to[n]);
            socklen_t length;
            if (version == 4) {
                auto* a = reinterpret_cast<sockaddr_in*>(&to[n]);
                a->sin_family = AF_INET;
                std::memcpy(&a->sin_addr, p.data() + 16, 4);
                length = sizeof(sockaddr_in);
            } else {
                auto* a = reinterpret_cast<sockaddr_in6*>(&to[n]);
                a->sin6_family = AF_INET6;
                std::memcpy(&a->sin6_addr, p.data() + 24, 16);
                length = sizeof(sockaddr_in6);
            }
            iov[n] = {const_cast<uint8_t*>(p.data()), p.size()};
            messages[n] = {};
            messages[n].msg_hdr.msg_name = &to[n];
            messages[n].msg_hdr.msg_namelen = length;
            messages[n].msg_hdr.msg_iov = &iov[n];
            messages[n].msg_hdr.msg_iovlen = 1;
        }
        int fd = version == 4 ? v4_ : v6_;
        size_t done = 0;
        while (done < n) {
            int sent = sendmmsg(fd, messages + done, unsigned(n - done), 0);
            if (sent < 0 && would_block(errno)) {
                // The send buffer is full: the rest of the run would wait.
                if (counters_.busy == 0)
                    spdlog::warn(
                        "injecting packets: the raw socket's send buffer is full; "
                        "packets are dropped until it drains");
                counters_.busy += n - done;
                break;
            }
            if (sent <= 0) {
                // The first message failed: count it and go on with the rest.
                if (++counters_.failed <= 10)
                    spdlog::warn("injecting a packet: {}", strerror(errno));
                ++done;
                continue;
            }
            counters_.sent += uint64_t(sent);
            done += size_t(sent);
        }
        i += n;
    }
}

bool RawInjector::send(std::span<const uint8_t> packet) {
    ssize_t n;
    if (!packet.empty() && (packet[0] >> 4) == 4 && packet.size() >= 20) {
        sockaddr_in to{};
        to.sin_family = AF_INET;
        std::memcpy(&to.sin_addr, packet.data() + 16, 4);
        n = sendto(v4_, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&to),
                   sizeof to);
    } else if (!packet.empty() && (packet[0] >> 4) == 6 && packet.size() >= 40) {
        sockaddr_in6 to{};
        to.sin6_family = AF_INET6;
        std::memcpy(&to.sin6_addr, packet.data() + 24, 16);
        n = sendto(v6_, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&to),
                   sizeof to);
    } else {
        n = -1;
        errno = EINVAL;
    }
    if (n < 0 && would_block(errno)) {
        ++counters_.busy;
        return false;
    }
    if (n < 0) {
        if (++counters_.failed <= 10) spdlog::warn("injecting a packet: {}", strerror(errno));
        return false;
    }
    ++counters_.sent;
    return true;
}

}  // namespace nfqscan
