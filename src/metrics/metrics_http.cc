// [daemon] metrics_listen: its address, its socket, and the answer to one
// HTTP request. One request per connection, answered and closed (HTTP/1.0),
// which is all a Prometheus scrape needs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "nfqscan/host_port.h"
#include "nfqscan/metrics.h"

namespace nfqscan {

namespace {

std::string response(std::string_view status, std::string_view content_type,
                     const std::string& body, bool with_body, std::string_view extra = {}) {
    std::string out = "HTTP/1.0 ";
    out += status;
    out += "\r\nContent-Type: ";
    out += content_type;
    out += "\r\nContent-Length: " + std::to_string(body.size());
    out += "\r\nConnection: close\r\n";
    out += extra;
    out += "\r\n";
    if (with_body) out += body;
    return out;
}

std::string text_response(std::string_view status, const std::string& body, bool with_body = true,
                          std::string_view extra = {}) {
    return response(status, "text/plain; charset=utf-8", body, with_body, extra);
}

}  // namespace

ListenAddress ListenAddress::parse(std::string_view text) {
    ListenAddress out;
    out.text = std::string(text);
    const HostPort split =
        split_host_port(text,
                        "must be \"address:port\" (\"[address]:port\" for IPv6), e.g. "
                        "\"127.0.0.1:9464\", or \"\" for none");
    const std::string h(split.host);
    if (split.bracketed) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(split.port);
        if (inet_pton(AF_INET6, h.c_str(), &a.sin6_addr) != 1)
            throw std::invalid_argument("\"" + h + "\" is not an IPv6 address");
        std::memcpy(&out.address, &a, sizeof a);
        out.length = sizeof a;
    } else {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(split.port);
        if (inet_pton(AF_INET, h.c_str(), &a.sin_addr) != 1)
            throw std::invalid_argument("\"" + h +
                                        "\" is not an IPv4 address (names are not resolved)");
        std::memcpy(&out.address, &a, sizeof a);
        out.length = sizeof a;
    }
    return out;
}

UniqueFd listen_socket(const ListenAddress& address) {
    const int family = address.address.ss_family;
    UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw std::system_error(errno, std::generic_category(), "socket");
    const int one = 1;
    // A restart must not wait for the old connections' TIME_WAIT.
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&address.address), address.length) != 0 ||
        listen(fd.get(), 16) != 0)
        throw std::system_error(errno, std::generic_category(), address.text);
    return fd;
}

std::string ExpositionCache::get(const std::function<std::string()>& produce) {
    const auto now = std::chrono::steady_clock::now();
    if (!valid_ || now - taken_ >= max_age_) {
        valid_ = false;
        text_ = produce();  // may throw: nothing kept
        taken_ = now;
        valid_ = true;
    }
    return text_;
}

std::string metrics_http_response(std::string_view request,
                                  const std::function<std::string()>& exposition) {
    const bool whole = request.find("\r\n\r\n") != std::string_view::npos ||
                       request.find("\n\n") != std::string_view::npos;
    if (!whole) return text_response("431 Request Header Fields Too Large", "request too large\n");
    const std::string_view line = request.substr(0, request.find_first_of("\r\n"));
    const size_t s1 = line.find(' ');
    const size_t s2 = s1 == std::string_view::npos ? s1 : line.find(' ', s1 + 1);
    if (s2 == std::string_view::npos || line.find(' ', s2 + 1) != std::string_view::npos ||
        !line.substr(s2 + 1).starts_with("HTTP/1."))
        return text_response("400 Bad Request", "bad request\n");
    const std::string_view method = line.substr(0, s1);
    std::string_view target = line.substr(s1 + 1, s2 - s1 - 1);
    target = target.substr(0, target.find('?'));
    const bool head = method == "HEAD";
    if (method != "GET" && !head)
        return text_response("405 Method Not Allowed", "only GET and HEAD\n", true,
                             "Allow: GET, HEAD\r\n");
    if (target != "/metrics")
        return text_response("404 Not Found", "metrics are at /metrics\n", !head);
    std::string body;
    try {
        body = exposition();
    } catch (const std::exception& e) {
        return text_response("503 Service Unavailable", std::string(e.what()) + "\n", !head);
    }
    return response("200 OK", kMetricsContentType, body, !head);
}

}  // namespace nfqscan
