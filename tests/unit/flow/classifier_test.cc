#include <gtest/gtest.h>

#include "../packet_builder.h"
#include "nfqscan/classifier.h"

namespace nfqscan {
namespace {

using test::build_packet;
using test::PacketSpec;

// Drives a TCP conversation through a FlowTable and the classifier (with the
// real nDPI), as the worker does.
class Conversation {
  public:
    // `ordered`: as for a flow in the stream engine, packets only feed nDPI
    // and bytes() hands the probes what the engine ordered. `handshake`:
    // false picks the flow up mid-stream.
    Conversation(FlowClassifier& classifier, uint16_t server_port, const Config& config,
                 bool ordered = false, bool handshake = true)
        : classifier_(classifier), config_(config), server_port_(server_port), ordered_(ordered) {
        if (!handshake) return;
        send(true, 0x02, "");
        send(false, 0x12, "");
        send(true, 0x10, "");
    }
    // The stream engine's ordered bytes of one direction.
    bool bytes(bool from_client, const std::string& data) {
        auto span = std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size());
        return classifier_.observe_bytes(
            *flow_, from_client ? Direction::ClientToServer : Direction::ServerToClient, span);
    }

    // Returns true when this packet decided the flow.
    bool send(bool from_client, uint8_t flags, const std::string& payload) {
        PacketSpec s;
        if (!from_client) {
            s.src = "203.0.113.2";
            s.dst = "198.51.100.2";
        }
        s.sport = from_client ? 40000 : server_port_;
        s.dport = from_client ? server_port_ : 40000;
        s.flags = flags;
        s.payload = payload;
        s.seq = from_client ? client_seq_ : server_seq_;
        (from_client ? client_seq_ : server_seq_) +=
            uint32_t(payload.size()) + (flags & 0x02 ? 1 : 0);
        std::vector<uint8_t> bytes = build_packet(s);
        DecodedPacket p;
        EXPECT_EQ(decode_packet(bytes, p), DecodeStatus::Ok);
        auto l = table_.track(p, ++now_, config_.ports);
        flow_ = l.flow;
        if (l.created) classifier_.on_new_flow(*flow_, p, now_);
        return classifier_.observe(*flow_, l.direction, p, now_, ordered_);
    }
    bool client(const std::string& data) { return send(true, 0x18, data); }
    bool server(const std::string& data) { return send(false, 0x18, data); }
    const Flow& flow() const { return *flow_; }
    std::string label() const {
        return classifier_.dpi().name({flow_->dpi_master, flow_->dpi_app});
    }

  private:
    FlowClassifier& classifier_;
    const Config& config_;
    uint16_t server_port_;
    bool ordered_;
    FlowTable table_{100, {}};
    Flow* flow_ = nullptr;
    uint64_t now_ = 0;
    uint32_t client_seq_ = 1000, server_seq_ = 5000;
};

class ClassifierTest : public ::testing::Test {
  protected:
    Config config = Config::defaults();
    FlowClassifier classifier{config};
};

TEST_F(ClassifierTest, AnFtpExpectationClaimsItsSynBeforeThePorts) {
    // A data connection predicted by an FTP control connection, to a port
    // that [protocols.http] lists: the expectation wins, once.
    FtpExpectations expectations;
    classifier.set_expectations(&expectations);
    auto session = std::make_shared<FtpSession>(nullptr, &expectations.counters());
    uint8_t client[4] = {198, 51, 100, 2}, server[4] = {203, 0, 113, 2};
    expectations.expect(IpAddress::from_v4(client), IpAddress::from_v4(server),
                        IpAddress::from_v4(server), 80, session, 1, 0);
    {
        Conversation c(classifier, 80, config);
        EXPECT_EQ(c.flow().disposition, Disposition::Claimed);
        EXPECT_EQ(c.flow().claimed_by, ClaimSource::Expectation);
        EXPECT_EQ(c.flow().service, Service::Ftp);
        EXPECT_EQ(c.flow().ftp_data, session);
    }
    Conversation again(classifier, 80, config);
    EXPECT_EQ(again.flow().claimed_by, ClaimSource::Port) << "an expectation is used once";
    EXPECT_EQ(again.flow().service, Service::Http);
    EXPECT_EQ(again.flow().ftp_data, nullptr);

    // FTP not scanned: expectations claim nothing.
    config.protocols[size_t(Service::Ftp)].policy.scan = false;
    expectations.expect(IpAddress::from_v4(client), IpAddress::from_v4(server),
                        IpAddress::from_v4(server), 80, session, 2, 0);
    Conversation off(classifier, 80, config);
    EXPECT_EQ(off.flow().claimed_by, ClaimSource::Port);
}

TEST_F(ClassifierTest, ConfiguredPortClaimsAtOnce) {
    Conversation c(classifier, 80, config);
    EXPECT_EQ(c.flow().disposition, Disposition::Claimed);
    EXPECT_EQ(c.flow().claimed_by, ClaimSource::Port);
    EXPECT_EQ(c.flow().service, Service::Http);
}

TEST_F(ClassifierTest, HttpOnAnOddPortIsClaimedByProbeAndLabelledByNdpi) {
    Conversation c(classifier, 8888, config);
    EXPECT_EQ(c.flow().disposition, Disposition::Deciding);
    EXPECT_TRUE(
        c.client("GET /file HTTP/1.1\r\nHost: example\r\nUser-Agent: curl/7.88\r\n"
                 "Accept: */*\r\n\r\n"));
    EXPECT_EQ(c.flow().disposition, Disposition::Claimed);
    EXPECT_EQ(c.flow().claimed_by, ClaimSource::Probe);
    EXPECT_EQ(c.flow().service, Service::Http);
    c.server("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello");
    EXPECT_EQ(c.label(), "HTTP");
}

TEST_F(ClassifierTest, RequestSplitIntoTinySegmentsWaitsThenClaims) {
    Conversation c(classifier, 9000, config);
    EXPECT_FALSE(c.client("G"));
    EXPECT_FALSE(c.client("E"));
    EXPECT_EQ(c.flow().disposition, Disposition::Deciding);
    EXPECT_TRUE(c.client("T / HTTP/1.0\r\n\r\n"));
    EXPECT_EQ(c.flow().service, Service::Http);
}

TEST_F(ClassifierTest, GreetingsClaimMailAndFtpOnAnyPort) {
    struct Case {
        const char* greeting;
        Service service;
    } cases[] = {{"+OK Dovecot ready.\r\n", Service::Pop3},
                 {"* OK [CAPABILITY IMAP4rev1 SASL-IR] Dovecot ready.\r\n", Service::Imap},
                 {"220 mail.example ESMTP Postfix (Debian/GNU)\r\n", Service::Smtp},
                 {"220 (vsFTPd 3.0.3)\r\n", Service::Ftp}};
    uint16_t port = 1110;
    for (const Case& k : cases) {
        Conversation c(classifier, port++, config);
        EXPECT_TRUE(c.server(k.greeting)) << k.greeting;
        EXPECT_EQ(c.flow().disposition, Disposition::Claimed) << k.greeting;
        EXPECT_EQ(c.flow().claimed_by, ClaimSource::Probe) << k.greeting;
        EXPECT_EQ(c.flow().service, k.service) << k.greeting;
    }
}

TEST_F(ClassifierTest, AmbiguousGreetingIsDecidedByTheClientsFirstCommand) {
    Conversation smtp(classifier, 2600, config);
    EXPECT_FALSE(smtp.server("220 host ready\r\n"));
    EXPECT_TRUE(smtp.client("EHLO client\r\n"));
    EXPECT_EQ(smtp.flow().service, Service::Smtp);
    Conversation ftp(classifier, 2601, config);
    EXPECT_FALSE(ftp.server("220 host ready\r\n"));
    EXPECT_TRUE(ftp.client("USER anonymous\r\n"));
    EXPECT_EQ(ftp.flow().service, Service::Ftp);
}

TEST_F(ClassifierTest, SshLikeFlowIsReleasedOnItsBanner) {
    Conversation c(classifier, 2222, config);
    EXPECT_TRUE(c.server("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"));
    EXPECT_EQ(c.flow().disposition, Disposition::Released);
    EXPECT_EQ(c.flow().service, Service::None);
    EXPECT_EQ(c.label(), "SSH");
    EXPECT_EQ(c.flow().classification, nullptr);  // state freed at once
}

TEST_F(ClassifierTest, UnknownBinaryIsReleasedAfterTheClientSpeaksFirst) {
    Conversation c(classifier, 4433, config);
    EXPECT_TRUE(c.client(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) +
                         std::string(100, '\x42')));
    EXPECT_EQ(c.flow().disposition, Disposition::Released);
}

TEST_F(ClassifierTest, UndecidedFlowIsReleasedAfterClassifyPackets) {
    config.flows.classify_packets = 3;
    Conversation c(classifier, 7000, config);
    // A client trickling bytes that keep looking like the start of a method.
    EXPECT_FALSE(c.client("P"));
    EXPECT_FALSE(c.client("R"));
    EXPECT_TRUE(c.client("O"));
    EXPECT_EQ(c.flow().disposition, Disposition::Released);
}

TEST_F(ClassifierTest, LabellingStopsAndStateIsFreedOnceDecided) {
    config.flows.classify_packets = 4;
    Conversation c(classifier, 80, config);
    for (int i = 0; i < 4; ++i)
        c.server(std::string(1000, 'x'));
    EXPECT_EQ(c.flow().classification, nullptr);
    EXPECT_EQ(c.flow().disposition, Disposition::Claimed);
}

TEST_F(ClassifierTest, OrderedFlowIsDecidedByItsOrderedBytesNotByARawSegment) {
    // Junk from the server's side that its receiver discards (the engine
    // never orders it): nDPI reads the packet, the probes never see it.
    Conversation c(classifier, 8888, config, true);
    EXPECT_FALSE(c.server("JUNK \x01\x02 nobody speaks this\r\n"));
    EXPECT_FALSE(c.server("SSH-2.0-junk\r\n"));
    EXPECT_EQ(c.flow().disposition, Disposition::Deciding);
    // The real request, then the engine's ordered bytes of it.
    std::string request = "GET /f HTTP/1.1\r\nHost: x\r\n\r\n";
    c.client(request);
    EXPECT_TRUE(c.flow().disposition != Disposition::Released);
    c.bytes(true, request);
    EXPECT_EQ(c.flow().disposition, Disposition::Claimed);
    EXPECT_EQ(c.flow().service, Service::Http);
}

TEST_F(ClassifierTest, OrderedBytesReleaseAndRunOutOfPatience) {
    config.flows.classify_packets = 3;
    Conversation ssh(classifier, 2222, config, true);
    EXPECT_FALSE(ssh.server("SSH-2.0-OpenSSH_9.2p1\r\n"));
    EXPECT_TRUE(ssh.bytes(false, "SSH-2.0-OpenSSH_9.2p1\r\n"));
    EXPECT_EQ(ssh.flow().disposition, Disposition::Released);

    Conversation slow(classifier, 7000, config, true);
    for (int i = 0; i < 5; ++i)
        slow.client("P");  // raw packets alone never run out of patience
    EXPECT_EQ(slow.flow().disposition, Disposition::Deciding);
    EXPECT_FALSE(slow.bytes(true, "P"));
    EXPECT_FALSE(slow.bytes(true, "R"));
    EXPECT_TRUE(slow.bytes(true, "O"));
    EXPECT_EQ(slow.flow().disposition, Disposition::Released);
}

TEST_F(ClassifierTest, MidstreamFlowIsNeverProbed) {
    // Picked up after a restart: a greeting-like line in the middle of some
    // other stream claims nothing; patience releases the flow.
    config.flows.classify_packets = 3;
    Conversation c(classifier, 9100, config, false, false);
    EXPECT_FALSE(c.server("+OK this is the middle of a file\r\n"));
    EXPECT_TRUE(c.flow().midstream);
    EXPECT_EQ(c.flow().disposition, Disposition::Deciding);
    EXPECT_FALSE(c.server("more of it\r\n"));
    EXPECT_TRUE(c.server("and more\r\n"));
    EXPECT_EQ(c.flow().disposition, Disposition::Released);
    EXPECT_EQ(c.flow().claimed_by, ClaimSource::None);
}

TEST_F(ClassifierTest, UdpIsReleasedAtOnce) {
    FlowTable table(10, {});
    PacketSpec s;
    s.protocol = IPPROTO_UDP;
    s.payload = "x";
    auto bytes = build_packet(s);
    DecodedPacket p;
    ASSERT_EQ(decode_packet(bytes, p), DecodeStatus::Ok);
    auto l = table.track(p, 0, config.ports);
    classifier.on_new_flow(*l.flow);
    EXPECT_EQ(l.flow->disposition, Disposition::Released);
}

}  // namespace
}  // namespace nfqscan
