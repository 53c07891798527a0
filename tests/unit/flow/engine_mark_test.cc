#include "nfqscan/engine_mark.h"

#include <gtest/gtest.h>

#include "../packet_builder.h"
#include "nfqscan/flow_stream.h"
#include "nfqscan/test_rewrite.h"

namespace nfqscan {
namespace {

constexpr uint8_t kSyn = 0x02, kAck = 0x10, kPshAck = 0x18, kRst = 0x04;

IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    const uint8_t bytes[4] = {a, b, c, d};
    return IpAddress::from_v4(bytes);
}

// A flow of the stream tests (client 198.51.100.2:40000, server
// 203.0.113.2:80) whose server bytes go through the growing token, past its
// handshake: client data at 1000, server data at 5000.
struct MarkedFlow {
    TokenReplacer grow{TokenReplacer::Replacements{{"GROW", "GROWN-LONGER-TOKEN"}}};
    Flow flow;
    std::vector<std::vector<uint8_t>> storage;
    uint32_t next_id = 1;

    MarkedFlow() {
        flow.stream.reset(new FlowStream({nullptr, &grow}, {}));
        send(true, kSyn, 999, 0);
        send(false, kSyn | kAck, 4999, 1000);
        send(true, kAck, 1000, 5000);
    }
    DecodedPacket packet(bool from_client, uint8_t flags, uint32_t seq, uint32_t ack,
                         const std::string& payload = "") {
        storage.push_back(test::flow_segment(from_client, flags, seq, ack, payload));
        DecodedPacket p;
        EXPECT_EQ(decode_packet(storage.back(), p), DecodeStatus::Ok);
        return p;
    }
    // Through the engine, as the worker does with a packet it proceeds with.
    void send(bool from_client, uint8_t flags, uint32_t seq, uint32_t ack,
              const std::string& payload = "") {
        DecodedPacket p = packet(from_client, flags, seq, ack, payload);
        std::vector<PacketVerdict> out;
        flow.stream->on_packet(next_id++,
                               from_client ? Direction::ClientToServer : Direction::ServerToClient,
                               p, false, 0, out);
    }
};

TEST(EngineMark, AFlowIsMarkedOnceItsNumbersShiftNotBefore) {
    MarkedFlow f;
    f.send(false, kPshAck, 5000, 1000, "plain text ");
    EXPECT_EQ(engine_mark_step(f.flow, f.packet(true, kAck, 1000, 5011), false),
              EngineMarkStep::Proceed);
    f.send(false, kPshAck, 5011, 1000, "GROW ");  // the client's view now differs
    ASSERT_TRUE(f.flow.stream->needs_engine());

    // The next packet goes back to the ruleset to carry the mark, unprocessed.
    DecodedPacket next = f.packet(true, kAck, 1000, 5011);
    EXPECT_EQ(engine_mark_step(f.flow, next, false), EngineMarkStep::RequestMark);
    // Packets read before it returns are handled: one request per flow.
    EXPECT_EQ(engine_mark_step(f.flow, next, false), EngineMarkStep::Proceed);
    // It returns with the mark (the ruleset saved it); so do later packets.
    EXPECT_EQ(engine_mark_step(f.flow, next, true), EngineMarkStep::Proceed);
    EXPECT_TRUE(f.flow.engine_marked);
    EXPECT_EQ(engine_mark_step(f.flow, f.packet(false, kPshAck, 5016, 1000, "x"), true),
              EngineMarkStep::Proceed);
    // One without it: the ruleset did not save or copy the mark.
    EXPECT_EQ(engine_mark_step(f.flow, f.packet(false, kPshAck, 5017, 1000, "y"), false),
              EngineMarkStep::MarkMissing);
}

TEST(EngineMark, AMarkedPacketOfAFlowWithoutEngineStateIsAnOrphan) {
    // nfqscand restarted: the flow's conntrack mark says an engine shifted
    // it, and this nfqscand has no engine state for it.
    MarkedFlow f;
    Flow fresh;
    EXPECT_EQ(engine_mark_step(fresh, f.packet(false, kPshAck, 5000, 1000, "data"), true),
              EngineMarkStep::Orphan);
    EXPECT_EQ(engine_mark_step(fresh, f.packet(true, kAck, 1000, 5000), true),
              EngineMarkStep::Orphan);
    // Its packets are not handled by the engine, which would start at no
    // shift: the flow keeps no engine and never asks for the mark again.
    EXPECT_FALSE(fresh.engine_marked);
    // A client's SYN opens a new connection: never an orphan.
    Flow opening;
    EXPECT_EQ(engine_mark_step(opening, f.packet(true, kSyn, 999, 0), true),
              EngineMarkStep::Proceed);
    // Unmarked packets of a flow without an engine go on as before.
    Flow plain;
    EXPECT_EQ(engine_mark_step(plain, f.packet(true, kAck, 1000, 5000), false),
              EngineMarkStep::Proceed);
}

std::vector<DecodedPacket> decoded(const std::vector<std::vector<uint8_t>>& packets) {
    std::vector<DecodedPacket> out(packets.size());
    for (size_t i = 0; i < packets.size(); ++i)
        EXPECT_EQ(decode_packet(packets[i], out[i]), DecodeStatus::Ok);
    return out;
}

TEST(EngineMark, AnOrphansSenderIsResetAndItsReceiverProbedIntoAnswering) {
    MarkedFlow f;
    // From the client: the RST goes to the client, as from the server, at
    // the client's acknowledgement (what it expects next, in its own space).
    auto answers =
        orphan_answers(f.packet(true, kAck, 1000, 7777), Direction::ClientToServer, std::nullopt);
    std::vector<DecodedPacket> a = decoded(answers);
    ASSERT_EQ(a.size(), 2u);
    EXPECT_EQ(a[0].src.to_string(), "203.0.113.2");
    EXPECT_EQ(a[0].src_port, 80);
    EXPECT_EQ(a[0].dst.to_string(), "198.51.100.2");
    EXPECT_EQ(a[0].dst_port, 40000);
    EXPECT_EQ(a[0].tcp_flags, kRst);
    EXPECT_EQ(a[0].seq, 7777u);
    EXPECT_TRUE(a[0].payload.empty());
    // The server gets an ACK from the client far behind any window: it
    // answers with an ACK at its own next number, which comes back here.
    EXPECT_EQ(a[1].src.to_string(), "198.51.100.2");
    EXPECT_EQ(a[1].dst.to_string(), "203.0.113.2");
    EXPECT_EQ(a[1].dst_port, 80);
    EXPECT_EQ(a[1].tcp_flags, kAck);
    EXPECT_EQ(a[1].seq, 1000u - (3u << 29));
    EXPECT_TRUE(a[1].payload.empty());

    // Behind masquerade the server knows the connection by the router's
    // address and port: what goes toward it carries the original tuple,
    // what goes toward the client the reply tuple (NAT undoes it).
    ConnectionTuples nat;
    nat.orig_src = {v4(198, 51, 100, 2), 40000};
    nat.orig_dst = {v4(203, 0, 113, 2), 80};
    nat.reply_src = nat.orig_dst;
    nat.reply_dst = {v4(203, 0, 113, 1), 61000};
    a = decoded(orphan_answers(f.packet(false, kPshAck, 5000, 1234, "data"),
                               Direction::ServerToClient, nat));
    ASSERT_EQ(a.size(), 2u);
    EXPECT_EQ(a[0].tcp_flags, kRst);  // to the server
    EXPECT_EQ(a[0].src.to_string(), "198.51.100.2");
    EXPECT_EQ(a[0].dst.to_string(), "203.0.113.2");
    EXPECT_EQ(a[0].seq, 1234u);
    EXPECT_EQ(a[1].tcp_flags, kAck);  // to the client
    EXPECT_EQ(a[1].src.to_string(), "203.0.113.2");
    EXPECT_EQ(a[1].dst.to_string(), "203.0.113.1");
    EXPECT_EQ(a[1].dst_port, 61000);

    // A RST is not answered; a segment without ACK gets only the probe.
    EXPECT_TRUE(
        orphan_answers(f.packet(true, kRst, 1000, 0), Direction::ClientToServer, std::nullopt)
            .empty());
    a = decoded(
        orphan_answers(f.packet(true, 0, 1000, 0, "x"), Direction::ClientToServer, std::nullopt));
    ASSERT_EQ(a.size(), 1u);
    EXPECT_EQ(a[0].tcp_flags, kAck);
}

}  // namespace
}  // namespace nfqscan
