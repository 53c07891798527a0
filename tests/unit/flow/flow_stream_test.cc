#include <gtest/gtest.h>

#include "../packet_builder.h"
#include "nfqscan/flow_stream.h"

namespace nfqscan {
namespace {

// Client 198.51.100.2:40000 -> server 203.0.113.2:80.
struct Wire {
    FlowStream stream{{nullptr, nullptr}, StreamLimits{}};
    std::vector<std::vector<uint8_t>> storage;
    uint32_t next_id = 1;

    std::vector<PacketVerdict> send(bool from_client, uint8_t flags, uint32_t seq, uint32_t ack,
                                    const std::string& payload = "") {
        storage.push_back(test::flow_segment(from_client, flags, seq, ack, payload));
        DecodedPacket p;
        EXPECT_EQ(decode_packet(storage.back(), p), DecodeStatus::Ok);
        std::vector<PacketVerdict> out;
        stream.on_packet(next_id++,
                         from_client ? Direction::ClientToServer : Direction::ServerToClient, p,
                         false, 0, out);
        return out;
    }
};

TEST(FlowStream, HeldDataIsSackedToTheSender) {
    Wire w;
    w.send(true, 0x02, 999, 0);       // SYN: client data starts at 1000
    w.send(false, 0x12, 4999, 1000);  // SYN-ACK: server data starts at 5000
    w.send(true, 0x10, 1000, 5000);   // ACK: the template for ACKs to the server
    auto in_order = w.send(false, 0x18, 5000, 1000, std::string(100, 'a'));
    ASSERT_EQ(in_order.size(), 1u);
    EXPECT_EQ(in_order[0].kind, PacketVerdict::Kind::Accept);

    // 5100..5200 is lost before nfqscand; 5200..5300 arrives and is held.
    auto held = w.send(false, 0x18, 5200, 1000, std::string(100, 'c'));
    ASSERT_EQ(held.size(), 2u);
    EXPECT_EQ(held[0].kind, PacketVerdict::Kind::Hold);
    ASSERT_EQ(held[1].kind, PacketVerdict::Kind::Inject);

    DecodedPacket ack;
    ASSERT_EQ(decode_packet(held[1].packet, ack), DecodeStatus::Ok);
    EXPECT_EQ(ack.src.to_string(), "198.51.100.2");  // as the client would send it
    EXPECT_EQ(ack.dst_port, 80);
    EXPECT_EQ(ack.tcp_flags, 0x10);
    EXPECT_EQ(ack.ack, 5000u);  // nothing acknowledged beyond what the client did
    EXPECT_TRUE(ack.payload.empty());
    // Options: NOP NOP SACK(10) with one block 5200..5300.
    ASSERT_EQ(ack.l4_header_length, 32);
    const uint8_t* o = ack.packet.data() + ack.l3_header_length + 20;
    EXPECT_EQ(o[2], 5);
    EXPECT_EQ(o[3], 10);
    auto load = [](const uint8_t* p) {
        return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
    };
    EXPECT_EQ(load(o + 4), 5200u);
    EXPECT_EQ(load(o + 8), 5300u);
    EXPECT_EQ(w.stream.counters().sack_acks, 1u);

    // The gap fills: the held packet is answered, written out in full.
    auto fill = w.send(false, 0x18, 5100, 1000, std::string(100, 'b'));
    ASSERT_EQ(fill.size(), 2u);
    EXPECT_EQ(fill[0].kind, PacketVerdict::Kind::Accept);
    EXPECT_EQ(fill[1].kind, PacketVerdict::Kind::Replace);
    EXPECT_EQ(fill[1].id, held[0].id);
    EXPECT_TRUE(w.stream.held_ids().empty());
}

}  // namespace
}  // namespace nfqscan
