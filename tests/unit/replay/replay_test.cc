// nfqscand --replay: the link-layer parser, the capture reader on generated
// pcap files, and whole replays through the worker's packet handling with
// the shipped signatures.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "../packet_builder.h"
#include "../proto/wire.h"
#include "../scan/scan_test_support.h"
#include "nfqscan/capture.h"
#include "nfqscan/config.h"
#include "nfqscan/replay.h"

namespace nfqscan {
namespace {

using test::flow_segment;

constexpr int kLinkEthernet = 1, kLinkRaw = 101, kLinkSll = 113, kLinkSll2 = 276;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kFin = 0x01, kPsh = 0x08;

void le32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i)
        out.push_back(char(v >> (8 * i)));
}
void le16(std::string& out, uint16_t v) {
    out.push_back(char(v));
    out.push_back(char(v >> 8));
}

// A classic pcap file (little endian, microseconds), written as tcpdump does.
class PcapWriter {
  public:
    explicit PcapWriter(uint32_t linktype) {
        le32(bytes_, 0xa1b2c3d4);
        le16(bytes_, 2);
        le16(bytes_, 4);
        le32(bytes_, 0);
        le32(bytes_, 0);
        le32(bytes_, 262144);
        le32(bytes_, linktype);
    }
    void add(uint64_t time_us, const std::vector<uint8_t>& frame, uint32_t wire_length = 0) {
        le32(bytes_, uint32_t(time_us / 1'000'000));
        le32(bytes_, uint32_t(time_us % 1'000'000));
        le32(bytes_, uint32_t(frame.size()));
        le32(bytes_, wire_length ? wire_length : uint32_t(frame.size()));
        bytes_.append(frame.begin(), frame.end());
    }
    const std::string& bytes() const { return bytes_; }
    std::string save(const test::TempDir& dir, const std::string& name) const {
        std::string path = dir.file(name);
        test::write_file(path, bytes_);
        return path;
    }

  private:
    std::string bytes_;
};

std::vector<uint8_t> with_header(std::vector<uint8_t> header, const std::vector<uint8_t>& ip) {
    header.insert(header.end(), ip.begin(), ip.end());
    return header;
}

std::vector<uint8_t> ethernet(const std::vector<uint8_t>& ip, bool vlan = false) {
    std::vector<uint8_t> h(12, 0x02);
    if (vlan) h.insert(h.end(), {0x81, 0x00, 0x00, 0x07});
    h.insert(h.end(), {0x08, 0x00});
    return with_header(h, ip);
}

std::vector<uint8_t> sll(const std::vector<uint8_t>& ip, uint16_t pkttype, uint16_t hatype = 1) {
    std::vector<uint8_t> h = {
        uint8_t(pkttype >> 8), uint8_t(pkttype), uint8_t(hatype >> 8), uint8_t(hatype), 0, 6};
    h.resize(14, 0);
    h.insert(h.end(), {0x08, 0x00});
    return with_header(h, ip);
}

std::vector<uint8_t> sll2(const std::vector<uint8_t>& ip, uint8_t pkttype, uint16_t hatype = 1) {
    std::vector<uint8_t> h = {
        0x08, 0x00, 0, 0, 0, 0, 0, 3, uint8_t(hatype >> 8), uint8_t(hatype), pkttype, 6};
    h.resize(20, 0);
    return with_header(h, ip);
}

TEST(CaptureFrame, EthernetWithAndWithoutVlanTag) {
    std::vector<uint8_t> ip = flow_segment(true, kSyn, 1000, 0);
    for (bool vlan : {false, true}) {
        std::vector<uint8_t> frame = ethernet(ip, vlan);
        CaptureFrame f;
        ASSERT_EQ(parse_frame(kLinkEthernet, frame, f), FrameStatus::Ok);
        EXPECT_EQ(f.ethertype, 0x0800);
        EXPECT_EQ(f.link_header_length, vlan ? 18u : 14u);
        EXPECT_TRUE(std::equal(f.ip.begin(), f.ip.end(), ip.begin(), ip.end()));
    }
}

TEST(CaptureFrame, CookedCapturesSkipWhatTheHostSent) {
    std::vector<uint8_t> ip = flow_segment(true, kSyn, 1000, 0);
    CaptureFrame f;
    EXPECT_EQ(parse_frame(kLinkSll, sll(ip, 0), f), FrameStatus::Ok);
    EXPECT_EQ(f.ip.size(), ip.size());
    EXPECT_EQ(parse_frame(kLinkSll, sll(ip, 4), f), FrameStatus::Outgoing);
    EXPECT_EQ(parse_frame(kLinkSll2, sll2(ip, 0), f), FrameStatus::Ok);
    EXPECT_EQ(f.ip.size(), ip.size());
    EXPECT_EQ(parse_frame(kLinkSll2, sll2(ip, 4), f), FrameStatus::Outgoing);
    // In on a TUN device (ARPHRD_NONE), such as nfqscand's relay device.
    EXPECT_FALSE(f.tunnel);
    ASSERT_EQ(parse_frame(kLinkSll, sll(ip, 0, 0xfffe), f), FrameStatus::Ok);
    EXPECT_TRUE(f.tunnel);
    ASSERT_EQ(parse_frame(kLinkSll2, sll2(ip, 0, 0xfffe), f), FrameStatus::Ok);
    EXPECT_TRUE(f.tunnel);
}

TEST(CaptureFrame, RefusesWhatItCannotRead) {
    CaptureFrame f;
    std::vector<uint8_t> arp(12, 0);
    arp.insert(arp.end(), {0x08, 0x06, 0, 1});
    EXPECT_EQ(parse_frame(kLinkEthernet, arp, f), FrameStatus::NotIp);
    EXPECT_EQ(parse_frame(kLinkEthernet, std::vector<uint8_t>(13, 0), f), FrameStatus::Truncated);
    // A header and nothing after it.
    EXPECT_EQ(parse_frame(kLinkEthernet, ethernet({}), f), FrameStatus::Truncated);
    EXPECT_EQ(parse_frame(kLinkSll2, std::vector<uint8_t>(19, 0), f), FrameStatus::Truncated);
    EXPECT_EQ(parse_frame(12, std::vector<uint8_t>{0x17, 0}, f), FrameStatus::NotIp);
    EXPECT_EQ(parse_frame(147, std::vector<uint8_t>(40, 0x45), f), FrameStatus::UnsupportedLink);
    EXPECT_FALSE(supported_link_type(147));
}

TEST(CaptureFrame, RandomBytesNeverReadPastTheFrame) {
    uint32_t state = 12345;
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> frame(state % 64);
        for (uint8_t& b : frame)
            b = uint8_t((state = state * 1103515245 + 12345) >> 16);
        for (int dlt : {0, 1, 12, 108, 113, 228, 229, 276}) {
            CaptureFrame f;
            if (parse_frame(dlt, frame, f) != FrameStatus::Ok) continue;
            ASSERT_GE(f.ip.data(), frame.data());
            ASSERT_LE(f.ip.data() + f.ip.size(), frame.data() + frame.size());
            ASSERT_FALSE(f.ip.empty());
        }
    }
}

TEST(CaptureReader, ReadsRecordsAndReportsACutFile) {
    PcapWriter w(kLinkRaw);
    w.add(1'700'000'000'123'456, flow_segment(true, kSyn, 1000, 0));
    w.add(1'700'000'001'000'000, flow_segment(false, kSyn | kAck, 5000, 1001), 1500);
    std::string cut = w.bytes().substr(0, w.bytes().size() - 5);
    {
        CaptureReader r(fmemopen(const_cast<char*>(w.bytes().data()), w.bytes().size(), "r"),
                        "whole");
        EXPECT_TRUE(supported_link_type(r.link_type()));
        CapturedPacket p;
        ASSERT_TRUE(r.next(p));
        EXPECT_EQ(p.time_us, 1'700'000'000'123'456u);
        ASSERT_TRUE(r.next(p));
        EXPECT_EQ(p.wire_length, 1500u);
        EXPECT_FALSE(r.next(p));
        EXPECT_EQ(r.error(), "");
    }
    CaptureReader r(fmemopen(cut.data(), cut.size(), "r"), "cut");
    CapturedPacket p;
    EXPECT_TRUE(r.next(p));
    EXPECT_FALSE(r.next(p));
    EXPECT_NE(r.error(), "");
}

TEST(CaptureReader, RefusesWhatIsNoCapture) {
    test::TempDir dir;
    test::write_file(dir.file("text.pcap"), "not a capture at all, just text\n");
    EXPECT_THROW(CaptureReader(dir.file("text.pcap")), CaptureError);
    EXPECT_THROW(CaptureReader(dir.file("missing.pcap")), CaptureError);
}

// Where each peer's packets of a download are addressed in a capture.
struct Addressing {
    bool v6 = false;                        // then the addresses below are not used
    std::string client_to = "203.0.113.2";  // the client's packets: to this address
    uint16_t client_to_port = 80;
    std::string server_to = "198.51.100.2";  // the server's packets
    uint16_t server_to_port = 40000;
};

// One HTTP download of `body` from 198.51.100.2:40000 to 203.0.113.2:80, as
// an Ethernet capture (a cooked one with `cooked`), starting at `t0` (us),
// one millisecond between packets.
PcapWriter http_download(const std::string& body, uint64_t t0 = 1'700'000'000'000'000,
                         const Addressing& a = {}, bool cooked = false) {
    PcapWriter w(cooked ? kLinkSll2 : kLinkEthernet);
    uint64_t t = t0;
    auto add = [&](bool client, uint8_t flags, uint32_t seq, uint32_t ack,
                   const std::string& payload = "") {
        test::PacketSpec p;
        p.v6 = a.v6;
        p.src = client ? "198.51.100.2" : "203.0.113.2";
        p.sport = client ? 40000 : 80;
        p.dst = client ? a.client_to : a.server_to;
        if (a.v6) {
            p.src = client ? "2001:db8:1::2" : "2001:db8:2::2";
            p.dst = client ? "2001:db8:2::2" : "2001:db8:1::2";
        }
        p.dport = client ? a.client_to_port : a.server_to_port;
        p.flags = flags;
        p.seq = seq;
        p.ack = ack;
        p.payload = payload;
        std::vector<uint8_t> ip = test::build_packet(p);
        w.add(t, cooked ? sll2(ip, 0) : ethernet(ip));
        t += 1000;
    };
    std::string request = "GET /file.bin HTTP/1.1\r\nHost: lab.test\r\n\r\n";
    std::string response =
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    uint32_t c = 1001, s = 5001;
    add(true, kSyn, 1000, 0);
    add(false, kSyn | kAck, 5000, c);
    add(true, kAck, c, s);
    add(true, kPsh | kAck, c, s, request);
    c += uint32_t(request.size());
    add(false, kAck, s, c);
    add(false, kPsh | kAck, s, c, response);
    s += uint32_t(response.size());
    add(true, kAck, c, s);
    add(false, kFin | kAck, s, c);
    add(true, kFin | kAck, c, s + 1);
    add(false, kAck, s + 1, c + 1);
    return w;
}

std::shared_ptr<const Config> shipped_config() {
    Config c = load_config(test::source_root() + "/rules/nfqscan.toml");
    c.scan = test::shipped_rules_config();
    return replay_config(c);
}

ReplayReport replay(const std::string& path) {
    ReplayOptions o;
    o.capture = path;
    o.config = shipped_config();
    o.scan = &test::shared_service();
    return replay_capture(o);
}

TEST(Replay, InfectedHttpDownloadGetsTheBlockPageAtTheCapturesTime) {
    test::TempDir dir;
    ReplayReport r = replay(http_download(wiretest::kEicar).save(dir, "eicar.pcap"));
    EXPECT_EQ(r.frames, 10u);
    EXPECT_EQ(r.ip_packets, 10u);
    EXPECT_EQ(r.read_error, "");
    ASSERT_EQ(r.events.size(), 1u) << format_replay_table(r);
    const ScanEvent& e = r.events[0];
    EXPECT_EQ(e.protocol, "http");
    EXPECT_EQ(e.direction, "download");
    EXPECT_TRUE(e.verdict.is_infected());
    EXPECT_EQ(e.verdict.detection.signature, "NfqScan_Test_EICAR");
    EXPECT_EQ(e.action, "block");
    EXPECT_EQ(e.flow, "198.51.100.2:40000 -> 203.0.113.2:80");
    // The event carries the capture's time (the response was packet 6).
    EXPECT_EQ(
        std::chrono::duration_cast<std::chrono::milliseconds>(e.time.time_since_epoch()).count(),
        1'700'000'000'005);
    EXPECT_EQ(r.worker.protocols[size_t(Service::Http)].infected, 1u);
    // The block page would have gone out; nothing here sent it.
    EXPECT_GT(r.verdicts.replaced + r.verdicts.injected, 0u);
    EXPECT_NE(format_replay_table(r).find("NfqScan_Test_EICAR"), std::string::npos);
}

TEST(Replay, NatIsUndoneAsTheRouterSawTheFlow) {
    // tcpdump -i any on a router: behind masquerade the server answers the
    // router's outside address and port; through a port forward the client
    // talks to the router's inside address. nfqscand saw neither.
    Addressing masquerade;
    masquerade.server_to = "203.0.113.1";
    masquerade.server_to_port = 51000;
    Addressing forward;
    forward.client_to = "198.51.100.1";
    forward.client_to_port = 8080;
    for (const Addressing& a : {masquerade, forward}) {
        test::TempDir dir;
        ReplayReport r = replay(
            http_download(wiretest::kEicar, 1'700'000'000'000'000, a, true).save(dir, "nat.pcap"));
        EXPECT_EQ(r.nat_flows, 1u);
        EXPECT_EQ(r.nat_packets, 5u);  // one peer's five packets
        ASSERT_EQ(r.events.size(), 1u) << format_replay_summary(r);
        EXPECT_EQ(r.events[0].flow, "198.51.100.2:40000 -> 203.0.113.2:80");
        EXPECT_EQ(r.events[0].action, "block");
        EXPECT_EQ(r.worker.flows_created, 1u);
    }
    // Without NAT nothing is paired or readdressed.
    test::TempDir dir;
    ReplayReport r = replay(http_download(wiretest::kEicar).save(dir, "plain.pcap"));
    EXPECT_EQ(r.nat_flows, 0u);
    EXPECT_EQ(r.nat_packets, 0u);
}

TEST(Replay, Ipv6DownloadInACookedCapture) {
    Addressing v6;
    v6.v6 = true;
    test::TempDir dir;
    ReplayReport r = replay(
        http_download(wiretest::kEicar, 1'700'000'000'000'000, v6, true).save(dir, "v6.pcap"));
    ASSERT_EQ(r.events.size(), 1u) << format_replay_summary(r);
    EXPECT_EQ(r.events[0].flow, "[2001:db8:1::2]:40000 -> [2001:db8:2::2]:80");
    EXPECT_EQ(r.events[0].action, "block");
}

// The same download as a pcapng file (section header, one interface,
// enhanced packet blocks), as Wireshark and dumpcap write it.
TEST(Replay, ReadsPcapng) {
    std::string pcap = http_download(wiretest::kEicar).bytes();
    std::string ng;
    auto block = [&](uint32_t type, std::string body) {
        body.append((4 - body.size() % 4) % 4, '\0');
        le32(ng, type);
        le32(ng, uint32_t(body.size() + 12));
        ng += body;
        le32(ng, uint32_t(body.size() + 12));
    };
    std::string shb;
    le32(shb, 0x1a2b3c4d);
    le16(shb, 1);
    le16(shb, 0);
    le32(shb, 0xffffffff);
    le32(shb, 0xffffffff);
    block(0x0a0d0d0a, shb);
    std::string idb;
    le16(idb, kLinkEthernet);
    le16(idb, 0);
    le32(idb, 262144);
    block(1, idb);
    // The classic file's records, re-wrapped (timestamps in microseconds).
    for (size_t at = 24; at + 16 <= pcap.size();) {
        auto rd = [&](size_t o) {
            uint32_t v;
            std::memcpy(&v, pcap.data() + o, 4);
            return v;
        };
        uint64_t us = uint64_t(rd(at)) * 1'000'000 + rd(at + 4);
        uint32_t len = rd(at + 8);
        std::string epb;
        le32(epb, 0);
        le32(epb, uint32_t(us >> 32));
        le32(epb, uint32_t(us));
        le32(epb, len);
        le32(epb, len);
        epb += pcap.substr(at + 16, len);
        block(6, epb);
        at += 16 + len;
    }
    test::TempDir dir;
    test::write_file(dir.file("eicar.pcapng"), ng);
    ReplayReport r = replay(dir.file("eicar.pcapng"));
    EXPECT_EQ(r.frames, 10u);
    ASSERT_EQ(r.events.size(), 1u) << format_replay_summary(r);
    EXPECT_EQ(r.events[0].action, "block");
    EXPECT_EQ(
        std::chrono::duration_cast<std::chrono::milliseconds>(r.events[0].time.time_since_epoch())
            .count(),
        1'700'000'000'005);
}

TEST(Replay, CleanDownloadHasNoEvents) {
    test::TempDir dir;
    ReplayReport r = replay(http_download("just some clean bytes\n").save(dir, "clean.pcap"));
    EXPECT_TRUE(r.events.empty()) << format_replay_table(r);
    EXPECT_EQ(r.worker.protocols[size_t(Service::Http)].clean, 1u);
    // The response went through the relay: its originals dropped, the
    // engine's own segments (counted, not sent) in their place.
    EXPECT_GT(r.verdicts.injected, 0u);
}

TEST(Replay, SameOutcomeOnEveryRun) {
    test::TempDir dir;
    std::string path = http_download(wiretest::kEicar).save(dir, "eicar.pcap");
    ReplayReport a = replay(path), b = replay(path);
    ASSERT_EQ(a.events.size(), b.events.size());
    EXPECT_EQ(a.verdicts.accepted, b.verdicts.accepted);
    EXPECT_EQ(a.verdicts.replaced, b.verdicts.replaced);
    EXPECT_EQ(a.verdicts.dropped, b.verdicts.dropped);
    EXPECT_EQ(a.verdicts.injected, b.verdicts.injected);
}

TEST(Replay, TimeoutsFollowTheCapturesClock) {
    // A handshake, then nothing for two hours of capture time, then a second
    // flow: the first one expired (established timeout: 1 h) although the
    // replay takes milliseconds.
    PcapWriter w(kLinkEthernet);
    uint64_t t = 1'700'000'000'000'000;
    w.add(t, ethernet(flow_segment(true, kSyn, 1000, 0)));
    w.add(t + 1000, ethernet(flow_segment(false, kSyn | kAck, 5000, 1001)));
    w.add(t + 2000, ethernet(flow_segment(true, kAck, 1001, 5001)));
    test::PacketSpec later;
    later.sport = 40001;
    later.flags = kSyn;
    w.add(t + 7'200'000'000, ethernet(test::build_packet(later)));
    test::TempDir dir;
    ReplayReport r = replay(w.save(dir, "idle.pcap"));
    EXPECT_EQ(r.worker.flows_created, 2u);
    EXPECT_EQ(r.worker.flows_expired, 1u);
    EXPECT_EQ(r.worker.flows_active, 1u);
}

TEST(Replay, TimestampsYearsApartCostNoTickPerSecond) {
    PcapWriter w(kLinkEthernet);
    w.add(1'000'000, ethernet(flow_segment(true, kSyn, 1000, 0)));
    w.add(4'000'000'000'000'000, ethernet(flow_segment(false, kSyn | kAck, 5000, 1001)));
    w.add(2'000'000, ethernet(flow_segment(true, kAck, 1001, 5001)));  // back in time
    test::TempDir dir;
    ReplayReport r = replay(w.save(dir, "years.pcap"));
    EXPECT_LT(r.elapsed_s, 30.0);
    EXPECT_EQ(r.time_went_back, 1u);
    EXPECT_EQ(r.worker.flows_expired, 1u);  // the SYN's flow, after ~127 years
}

TEST(Replay, CookedCaptureOfARouterCountsEachPacketOnce) {
    // tcpdump -i any on a router: each forwarded packet arrives (kept) and
    // leaves (skipped).
    PcapWriter w(kLinkSll2);
    uint64_t t = 1'700'000'000'000'000;
    for (auto [client, flags] : {std::pair{true, kSyn}, {false, uint8_t(kSyn | kAck)}}) {
        std::vector<uint8_t> ip = flow_segment(client, flags, client ? 1000 : 5000, 1001);
        w.add(t++, sll2(ip, 0));
        w.add(t++, sll2(ip, 4));
    }
    test::TempDir dir;
    ReplayReport r = replay(w.save(dir, "any.pcap"));
    EXPECT_EQ(r.frames, 4u);
    EXPECT_EQ(r.ip_packets, 2u);
    EXPECT_EQ(r.outgoing, 2u);
    EXPECT_EQ(r.worker.flows_created, 1u);
}

TEST(Replay, RelayDeviceFramesAreSkippedOnlyWithARelayDevice) {
    PcapWriter w(kLinkSll2);
    w.add(1'700'000'000'000'000, sll2(flow_segment(true, kSyn, 1000, 0), 0));
    w.add(1'700'000'000'001'000, sll2(flow_segment(false, kSyn | kAck, 5000, 1001), 0, 0xfffe));
    test::TempDir dir;
    std::string path = w.save(dir, "tun.pcap");
    ReplayReport with = replay(path);  // rules/nfqscan.toml: relay_device = "nfqscan0"
    EXPECT_EQ(with.tunnel, 1u);
    EXPECT_EQ(with.ip_packets, 1u);
    Config c = load_config(test::source_root() + "/rules/nfqscan.toml");
    c.scan = test::shipped_rules_config();
    c.stream.relay_device = "";
    ReplayOptions o;
    o.capture = path;
    o.config = replay_config(c);
    o.scan = &test::shared_service();
    ReplayReport without = replay_capture(o);
    EXPECT_EQ(without.tunnel, 0u);
    EXPECT_EQ(without.ip_packets, 2u);
}

TEST(Replay, UnsupportedLinkTypeIsRefused) {
    PcapWriter w(147);
    w.add(1, std::vector<uint8_t>(40, 0x45));
    test::TempDir dir;
    EXPECT_THROW(replay(w.save(dir, "user0.pcap")), CaptureError);
}

}  // namespace
}  // namespace nfqscan
