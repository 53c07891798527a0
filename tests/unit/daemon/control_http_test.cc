// ControlServer::serve_http: the metrics listener on the control thread's
// loop. One request per connection, bounded in size; idle and oversized
// clients cost a slot for a while, never the answer to a scraper.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "nfqscan/control.h"
#include "nfqscan/metrics.h"

namespace nfqscan {
namespace {

using namespace std::chrono_literals;

std::string socket_path() {
    return "/tmp/nfqscan-control-http-test-" + std::to_string(getpid()) + ".sock";
}

// A server with serve_http on 127.0.0.1 and an ephemeral port.
struct HttpServer {
    ControlServer server{socket_path()};
    sockaddr_in address{};
    std::vector<std::string> requests;  // as the handler got them (control thread)

    HttpServer() {
        ListenAddress any;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::memcpy(&any.address, &a, sizeof a);
        any.length = sizeof a;
        any.text = "127.0.0.1:0";
        UniqueFd fd = listen_socket(any);
        socklen_t len = sizeof address;
        getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &len);
        server.handle("echo", [](const nlohmann::json& r) { return r["value"]; });
        server.serve_http(std::move(fd), [this](std::string_view request) {
            requests.emplace_back(request);
            return metrics_http_response(request, [] { return std::string("nfqscan_up 1\n"); });
        });
        server.start();
    }

    UniqueFd connect_raw() const {
        UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        EXPECT_EQ(connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address),
                  0);
        return fd;
    }
};

void send_text(const UniqueFd& fd, const std::string& text) {
    ASSERT_EQ(send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL), ssize_t(text.size()));
}

// Everything until the server closes, or "" after `timeout`.
std::string read_all(const UniqueFd& fd, std::chrono::milliseconds timeout = 4s) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd.get(), POLLIN, 0};
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
        char buffer[4096];
        const ssize_t n = recv(fd.get(), buffer, sizeof buffer, 0);
        if (n <= 0) return out;
        out.append(buffer, static_cast<size_t>(n));
    }
}

// One request on a new connection; the answer until the server closes.
std::string exchange(const HttpServer& s, const std::string& request) {
    UniqueFd c = s.connect_raw();
    send_text(c, request);
    return read_all(c);
}

TEST(ControlHttp, AnswersAScrapeAndCloses) {
    HttpServer s;
    const std::string r = exchange(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(r.starts_with("HTTP/1.0 200 OK\r\n")) << r;
    EXPECT_TRUE(r.ends_with("\r\n\r\nnfqscan_up 1\n")) << r;
    // The control socket goes on answering beside it.
    EXPECT_EQ(control_request(socket_path(), {{"command", "echo"}, {"value", 7}}), 7);
}

TEST(ControlHttp, ARequestSentInPiecesIsServedWhenWhole) {
    HttpServer s;
    UniqueFd c = s.connect_raw();
    send_text(c, "GET /met");
    std::this_thread::sleep_for(50ms);
    send_text(c, "rics HTTP/1.0\r\n");
    std::this_thread::sleep_for(50ms);
    send_text(c, "\r\n");
    EXPECT_TRUE(read_all(c).starts_with("HTTP/1.0 200 OK\r\n"));
}

TEST(ControlHttp, AHugeRequestIsCutAtTheBoundAndRefused) {
    HttpServer s;
    UniqueFd c = s.connect_raw();
    const std::string huge = "GET /metrics HTTP/1.1\r\nX: " + std::string(64 * 1024, 'a');
    // The server answers and closes once it has its bound; the rest of the
    // send may fail, which is fine.
    (void)!send(c.get(), huge.data(), huge.size(), MSG_NOSIGNAL);
    const std::string r = read_all(c);
    EXPECT_TRUE(r.starts_with("HTTP/1.0 431 ")) << r.substr(0, 100);
    ASSERT_EQ(s.requests.size(), 1u);
    EXPECT_LE(s.requests[0].size(), ControlServer::kMaxHttpRequest + 4096);
}

TEST(ControlHttp, IdleClientsDoNotLockAScraperOut) {
    HttpServer s;
    // More silent connections than there are slots, and one that sends its
    // request a byte at a time and never finishes (slowloris): the scrape
    // after them is answered.
    std::vector<UniqueFd> idle;
    for (size_t i = 0; i < ControlServer::kMaxHttpConnections + 4; ++i)
        idle.push_back(s.connect_raw());
    UniqueFd slow = s.connect_raw();
    send_text(slow, "G");
    std::this_thread::sleep_for(100ms);  // all accepted before the scraper comes
    // Without room made for it, the scraper's connection would be closed
    // unanswered.
    UniqueFd scraper = s.connect_raw();
    send_text(scraper, "GET /metrics HTTP/1.1\r\n\r\n");
    const std::string r = read_all(scraper, 20s);
    EXPECT_TRUE(r.starts_with("HTTP/1.0 200 OK\r\n")) << r;
    // The oldest idle connections were closed to make room.
    EXPECT_EQ(read_all(idle[0], 1s), "");
    char byte;
    EXPECT_EQ(recv(idle[0].get(), &byte, 1, MSG_DONTWAIT), 0);
}

TEST(ControlHttp, AControlCommandOverHttpIsJustABadRequest) {
    HttpServer s;
    const std::string r = exchange(s, "{\"command\":\"echo\",\"value\":1}\n\n");
    EXPECT_TRUE(r.starts_with("HTTP/1.0 400 ")) << r;
}

}  // namespace
}  // namespace nfqscan
