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

int open_raw(int family, uint32_t mark) {
    // IPPROTO_RAW: the packet carries its own IP header (IPv4 and IPv6).
    int fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "raw socket");
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
        int saved = errno;
        close(fd);
        throw std::system_error(saved, std::generic_category(), "SO_MARK on the raw socket");
    }
    return fd;
}

}  // namespace

RawInjector::RawInjector(uint32_t mark) {
    v4_ = open_raw(AF_INET, mark);
    try {
        v6_ = open_raw(AF_INET6, mark);
    } catch (...) {
        close(v4_);
        throw;
    }
}

RawInjector::~RawInjector() {
    if (v4_ >= 0) close(v4_);
    if (v6_ >= 0) close(v6_);
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
    if (n < 0) {
        if (++counters_.failed <= 10) spdlog::warn("injecting a packet: {}", strerror(errno));
        return false;
    }
    ++counters_.sent;
    return true;
}

}  // namespace nfqscan
