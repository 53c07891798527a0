#include <gtest/gtest.h>

#include "nfqscan/probe.h"

namespace nfqscan {
namespace {

std::span<const uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Probe, HttpMethodsAndPrefixes) {
    EXPECT_EQ(probe_client_request(bytes("GET / HTTP/1.1")).verdict, ProbeVerdict::Match);
    EXPECT_EQ(probe_client_request(bytes("PROPFIND /x")).service, Service::Http);
    EXPECT_EQ(probe_client_request(bytes("PO")).verdict, ProbeVerdict::NeedMore);
    EXPECT_EQ(probe_client_request(bytes("")).verdict, ProbeVerdict::NeedMore);
    EXPECT_EQ(probe_client_request(bytes("GETX")).verdict, ProbeVerdict::NoMatch);
    EXPECT_EQ(probe_client_request(bytes("SSH-2.0-x")).verdict, ProbeVerdict::NoMatch);
    EXPECT_EQ(probe_client_request(bytes("get / http/1.1")).verdict, ProbeVerdict::NoMatch);
}

TEST(Probe, Greetings) {
    auto g = [](std::string_view greeting, std::string_view reply = "") {
        return probe_server_greeting(bytes(greeting), bytes(reply));
    };
    EXPECT_EQ(g("+OK ready").service, Service::Pop3);
    EXPECT_EQ(g("* OK IMAP4rev1").service, Service::Imap);
    EXPECT_EQ(g("* PREAUTH hi").service, Service::Imap);
    EXPECT_EQ(g("HTTP/1.1 200 OK").service, Service::Http);
    EXPECT_EQ(g("220 x ESMTP").service, Service::Smtp);
    EXPECT_EQ(g("220-multi line FTP banner\r\n220 more").service, Service::Ftp);
    EXPECT_EQ(g("22").verdict, ProbeVerdict::NeedMore);
    EXPECT_EQ(g("220 plain\r\n").verdict, ProbeVerdict::NeedMore);
    EXPECT_EQ(g("220 plain\r\n", "HELO x\r\n").service, Service::Smtp);
    EXPECT_EQ(g("220 plain\r\n", "AUTH TLS\r\n").service, Service::Ftp);
    EXPECT_EQ(g("SSH-2.0-OpenSSH").verdict, ProbeVerdict::NoMatch);
    EXPECT_EQ(g("200 news").verdict, ProbeVerdict::NoMatch);
}

TEST(ServiceProbe, FirstSpeakerDecidesWhichProbesApply) {
    ServiceProbe client_first;
    client_first.feed(false, bytes("+OK this is a client"));
    EXPECT_EQ(client_first.result().verdict, ProbeVerdict::NoMatch);

    ServiceProbe server_first;
    server_first.feed(true, bytes("GET / HTTP/1.1\r\n"));  // a server does not send requests
    EXPECT_EQ(server_first.result().verdict, ProbeVerdict::NoMatch);
}

TEST(ServiceProbe, BoundedBufferEndsInADecision) {
    ServiceProbe p;
    for (int i = 0; i < 1000; ++i)
        p.feed(false, bytes("P"));
    EXPECT_EQ(p.result().verdict, ProbeVerdict::NoMatch);
    ServiceProbe ambiguous;
    ambiguous.feed(true, bytes("220 hello\r\n"));
    EXPECT_EQ(ambiguous.result().verdict, ProbeVerdict::NeedMore);
    EXPECT_EQ(ambiguous.final_result().service, Service::Smtp);
}

}  // namespace
}  // namespace nfqscan
