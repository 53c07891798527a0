// [daemon] metrics_listen addresses and the HTTP answers to scrapes and to
// everything else a client may send.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <stdexcept>

#include "nfqscan/metrics.h"

namespace nfqscan {
namespace {

std::string body() {
    return "nfqscan_up 1\n";
}

std::string status_line(const std::string& response) {
    return response.substr(0, response.find("\r\n"));
}

TEST(ListenAddress, ParsesIpv4AndBracketedIpv6) {
    ListenAddress a = ListenAddress::parse("127.0.0.1:9464");
    ASSERT_EQ(a.address.ss_family, AF_INET);
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a.address);
    EXPECT_EQ(ntohs(v4->sin_port), 9464);
    EXPECT_EQ(ntohl(v4->sin_addr.s_addr), 0x7f000001u);
    EXPECT_EQ(a.length, sizeof(sockaddr_in));
    ListenAddress b = ListenAddress::parse("[::1]:80");
    ASSERT_EQ(b.address.ss_family, AF_INET6);
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&b.address);
    EXPECT_EQ(ntohs(v6->sin6_port), 80);
    EXPECT_TRUE(IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
    EXPECT_EQ(ListenAddress::parse("0.0.0.0:1").text, "0.0.0.0:1");
}

TEST(ListenAddress, RefusesWhatIsNotAnAddressAndPort) {
    for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                            "127.0.0.1:9x", "localhost:9464", "::1:9464", "[::1]9464",
                            "[::1]:", "[127.0.0.1]:80", "1.2.3:80", ":9464", "[]:1"})
        EXPECT_THROW(ListenAddress::parse(bad), std::invalid_argument) << bad;
}

TEST(MetricsHttp, GetMetricsGetsTheExpositionWithItsContentType) {
    const std::string r = metrics_http_response("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
    EXPECT_EQ(status_line(r), "HTTP/1.0 200 OK");
    EXPECT_NE(r.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
              std::string::npos);
    EXPECT_NE(r.find("\r\nContent-Length: 13\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos);
    EXPECT_TRUE(r.ends_with("\r\n\r\nnfqscan_up 1\n")) << r;
    // A query string (Prometheus' params) and bare LF line ends are fine.
    EXPECT_EQ(status_line(metrics_http_response("GET /metrics?x=1 HTTP/1.0\n\n", body)),
              "HTTP/1.0 200 OK");
}

TEST(MetricsHttp, HeadGetsTheHeadersOnly) {
    const std::string r = metrics_http_response("HEAD /metrics HTTP/1.0\r\n\r\n", body);
    EXPECT_EQ(status_line(r), "HTTP/1.0 200 OK");
    EXPECT_NE(r.find("Content-Length: 13\r\n"), std::string::npos);
    EXPECT_TRUE(r.ends_with("\r\n\r\n")) << r;
}

TEST(MetricsHttp, EverythingElseGetsAnErrorAndNoMetrics) {
    bool asked = false;
    auto exposition = [&] {
        asked = true;
        return body();
    };
    EXPECT_EQ(status_line(metrics_http_response("GET / HTTP/1.1\r\n\r\n", exposition)),
              "HTTP/1.0 404 Not Found");
    EXPECT_EQ(status_line(metrics_http_response("GET /metricsx HTTP/1.1\r\n\r\n", exposition)),
              "HTTP/1.0 404 Not Found");
    const std::string post = metrics_http_response("POST /metrics HTTP/1.1\r\n\r\n", exposition);
    EXPECT_EQ(status_line(post), "HTTP/1.0 405 Method Not Allowed");
    EXPECT_NE(post.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos);
    for (const char* bad :
         {"GET /metrics\r\n\r\n", "GET\r\n\r\n", "\r\n\r\n", "GET /metrics HTTP/2\r\n\r\n",
          "GET  /metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1 x\r\n\r\n"})
        EXPECT_EQ(status_line(metrics_http_response(bad, exposition)), "HTTP/1.0 400 Bad Request")
            << bad;
    EXPECT_EQ(status_line(metrics_http_response(std::string(9000, 'a'), exposition)),
              "HTTP/1.0 431 Request Header Fields Too Large");
    EXPECT_FALSE(asked);
}

TEST(MetricsHttp, AFailedSnapshotIs503WithTheReason) {
    const std::string r = metrics_http_response(
        "GET /metrics HTTP/1.1\r\n\r\n",
        []() -> std::string { throw std::runtime_error("queue 1 did not answer"); });
    EXPECT_EQ(status_line(r), "HTTP/1.0 503 Service Unavailable");
    EXPECT_TRUE(r.ends_with("queue 1 did not answer\n")) << r;
}

TEST(ExpositionCache, ScrapesWithinMaxAgeShareOneSnapshot) {
    int produced = 0;
    auto produce = [&] { return "n " + std::to_string(++produced) + "\n"; };
    ExpositionCache cache(std::chrono::seconds(60));
    EXPECT_EQ(cache.get(produce), "n 1\n");
    EXPECT_EQ(cache.get(produce), "n 1\n");
    EXPECT_EQ(produced, 1);
    ExpositionCache fresh(std::chrono::milliseconds(0));
    EXPECT_EQ(fresh.get(produce), "n 2\n");
    EXPECT_EQ(fresh.get(produce), "n 3\n");
}

TEST(ExpositionCache, AFailureIsNotKept) {
    ExpositionCache cache(std::chrono::seconds(60));
    EXPECT_THROW(cache.get([]() -> std::string { throw std::runtime_error("no answer"); }),
                 std::runtime_error);
    EXPECT_EQ(cache.get([] { return std::string("ok\n"); }), "ok\n");
}

}  // namespace
}  // namespace nfqscan
