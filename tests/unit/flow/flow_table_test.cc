#include <gtest/gtest.h>

#include "../packet_builder.h"
#include "nfqscan/flow.h"

namespace nfqscan {
namespace {

using test::build_packet;
using test::PacketSpec;

constexpr uint8_t kSyn = 0x02, kAck = 0x10, kFin = 0x01, kRst = 0x04;

struct Fixture {
    PortMap ports;
    std::vector<std::vector<uint8_t>> storage;

    DecodedPacket packet(PacketSpec s) {
        storage.push_back(build_packet(s));
        DecodedPacket p;
        EXPECT_EQ(decode_packet(storage.back(), p), DecodeStatus::Ok);
        return p;
    }
    PacketSpec c2s(uint8_t flags, uint16_t sport = 40000) {
        PacketSpec s;
        s.flags = flags;
        s.sport = sport;
        return s;
    }
    PacketSpec s2c(uint8_t flags, uint16_t dport = 40000) {
        PacketSpec s;
        s.src = "203.0.113.2";
        s.dst = "198.51.100.2";
        s.sport = 80;
        s.dport = dport;
        s.flags = flags;
        return s;
    }
};

TEST(FlowTable, BothDirectionsMapToOneFlowWithClientFromSyn) {
    Fixture fx;
    FlowTable table(100, {});
    auto syn = table.track(fx.packet(fx.c2s(kSyn)), 0, fx.ports);
    EXPECT_TRUE(syn.created);
    EXPECT_EQ(syn.direction, Direction::ClientToServer);
    auto synack = table.track(fx.packet(fx.s2c(kSyn | kAck)), 1, fx.ports);
    EXPECT_FALSE(synack.created);
    EXPECT_EQ(synack.flow, syn.flow);
    EXPECT_EQ(synack.direction, Direction::ServerToClient);
    EXPECT_EQ(syn.flow->state, FlowState::Handshake);
    table.track(fx.packet(fx.c2s(kAck)), 2, fx.ports);
    EXPECT_EQ(syn.flow->state, FlowState::Established);
    EXPECT_EQ(syn.flow->client().to_string(), "198.51.100.2");
    EXPECT_EQ(syn.flow->server_port(), 80);
    EXPECT_EQ(table.size(), 1u);
}

TEST(FlowTable, ClientIsKnownWhenTheSynAckIsSeenFirst) {
    Fixture fx;
    FlowTable table(100, {});
    auto l = table.track(fx.packet(fx.s2c(kSyn | kAck)), 0, fx.ports);
    EXPECT_EQ(l.direction, Direction::ServerToClient);
    EXPECT_EQ(l.flow->client_port(), 40000);
}

TEST(FlowTable, MidstreamFlowGuessesTheServerByServicePort) {
    Fixture fx;
    fx.ports.assign(80, Service::Http);
    FlowTable table(100, {});
    auto l = table.track(fx.packet(fx.s2c(kAck)), 0, fx.ports);
    EXPECT_TRUE(l.flow->midstream);
    EXPECT_EQ(l.flow->state, FlowState::Established);
    EXPECT_EQ(l.direction, Direction::ServerToClient);
    EXPECT_EQ(l.flow->server_port(), 80);
}

TEST(FlowTable, CountsPacketsAndPayloadBytesPerDirection) {
    Fixture fx;
    FlowTable table(100, {});
    auto s = fx.c2s(kAck);
    s.payload = "12345";
    s.seq = 1001;  // data starts after the SYN's sequence number
    table.track(fx.packet(fx.c2s(kSyn)), 0, fx.ports);
    table.track(fx.packet(s), 1, fx.ports);
    auto r = fx.s2c(kAck);
    r.payload = std::string(1000, 'x');
    auto l = table.track(fx.packet(r), 2, fx.ports);
    EXPECT_EQ(l.flow->packets[0], 2u);
    EXPECT_EQ(l.flow->packets[1], 1u);
    EXPECT_EQ(l.flow->bytes[0], 5u);
    EXPECT_EQ(l.flow->bytes[1], 1000u);
}

TEST(FlowTable, RetransmittedAndReorderedBytesAreCountedOnce) {
    Fixture fx;
    FlowTable table(100, {});
    auto syn = fx.c2s(kSyn);
    syn.seq = 999;
    table.track(fx.packet(syn), 0, fx.ports);
    auto seg = [&](uint32_t seq, size_t len) {
        auto s = fx.c2s(kAck);
        s.seq = seq;
        s.payload = std::string(len, 'x');
        return fx.packet(s);
    };
    table.track(seg(1000, 100), 1, fx.ports);
    table.track(seg(1200, 100), 2, fx.ports);  // ahead of a gap
    table.track(seg(1100, 100), 3, fx.ports);  // the gap
    table.track(seg(1000, 300), 4, fx.ports);  // a retransmission of it all
    auto l = table.track(seg(1300, 50), 5, fx.ports);
    EXPECT_EQ(l.flow->bytes[0], 350u);
    EXPECT_EQ(l.flow->packets[0], 6u);
}

TEST(FlowTable, FinFromBothSidesClosesRstClosesAtOnce) {
    Fixture fx;
    FlowTable table(100, {});
    table.track(fx.packet(fx.c2s(kSyn)), 0, fx.ports);
    auto l = table.track(fx.packet(fx.c2s(kAck)), 0, fx.ports);
    table.track(fx.packet(fx.c2s(kFin | kAck)), 0, fx.ports);
    EXPECT_EQ(l.flow->state, FlowState::Closing);
    table.track(fx.packet(fx.s2c(kFin | kAck)), 0, fx.ports);
    EXPECT_EQ(l.flow->state, FlowState::Closed);

    auto other = table.track(fx.packet(fx.c2s(kSyn, 40001)), 0, fx.ports);
    table.track(fx.packet(fx.s2c(kRst, 40001)), 0, fx.ports);
    EXPECT_EQ(other.flow->state, FlowState::Closed);
}

TEST(FlowTable, IdleFlowsExpirePerStateTimeout) {
    Fixture fx;
    FlowTimeouts t;
    t.handshake_ms = 100;
    t.established_ms = 10'000;
    t.closing_ms = 500;
    FlowTable table(100, t);
    table.track(fx.packet(fx.c2s(kSyn, 1)), 0, fx.ports);  // handshake
    table.track(fx.packet(fx.c2s(kSyn, 2)), 0, fx.ports);
    table.track(fx.packet(fx.c2s(kAck, 2)), 0, fx.ports);  // established
    table.track(fx.packet(fx.c2s(kSyn, 3)), 0, fx.ports);
    table.track(fx.packet(fx.c2s(kRst, 3)), 0, fx.ports);  // closed
    EXPECT_EQ(table.size(), 3u);
    EXPECT_EQ(table.expire(99), 0u);
    EXPECT_EQ(table.expire(100), 1u);  // the handshake
    EXPECT_EQ(table.expire(499), 0u);
    EXPECT_EQ(table.expire(500), 1u);  // the closed one
    EXPECT_EQ(table.expire(9'999), 0u);
    EXPECT_EQ(table.expire(10'000), 1u);
    EXPECT_EQ(table.size(), 0u);
    EXPECT_EQ(table.counters().expired, 3u);
}

TEST(FlowTable, ActivityKeepsAFlowAlive) {
    Fixture fx;
    FlowTimeouts t;
    t.established_ms = 1000;
    FlowTable table(100, t);
    table.track(fx.packet(fx.c2s(kSyn)), 0, fx.ports);
    table.track(fx.packet(fx.c2s(kAck)), 0, fx.ports);
    table.track(fx.packet(fx.s2c(kAck)), 900, fx.ports);
    EXPECT_EQ(table.expire(1500), 0u);
    EXPECT_EQ(table.expire(1900), 1u);
}

TEST(FlowTable, CapHoldsAndEvictsHandshakesBeforeEstablishedFlows) {
    Fixture fx;
    FlowTable table(10, {});
    std::vector<const Flow*> removed;
    int evictions = 0;
    table.set_on_remove([&](const Flow&, bool evicted) { evictions += evicted; });
    // Two established flows.
    for (uint16_t port : {1000, 1001}) {
        table.track(fx.packet(fx.c2s(kSyn, port)), 0, fx.ports);
        table.track(fx.packet(fx.c2s(kAck, port)), 0, fx.ports);
    }
    // A SYN flood far beyond the cap.
    for (uint16_t port = 20000; port < 21000; ++port)
        table.track(fx.packet(fx.c2s(kSyn, port)), 1, fx.ports);
    EXPECT_EQ(table.size(), 10u);
    EXPECT_EQ(table.counters().evicted, 992u);
    EXPECT_EQ(evictions, 992);
    // The established flows survived: their next packet finds them.
    for (uint16_t port : {1000, 1001}) {
        auto l = table.track(fx.packet(fx.c2s(kAck, port)), 2, fx.ports);
        EXPECT_FALSE(l.created) << port;
        EXPECT_EQ(l.flow->state, FlowState::Established);
    }
}

TEST(FlowTable, AnAckFloodEvictsOnlyStrayFlows) {
    Fixture fx;
    FlowTable table(10, {});
    // Two established flows and a handshake.
    for (uint16_t port : {1000, 1001}) {
        table.track(fx.packet(fx.c2s(kSyn, port)), 0, fx.ports);
        table.track(fx.packet(fx.c2s(kAck, port)), 0, fx.ports);
    }
    table.track(fx.packet(fx.c2s(kSyn, 1002)), 0, fx.ports);
    // ACKs on tuples nobody opened (forged, or stray), far beyond the cap:
    // each starts a mid-stream flow whose other side never answers.
    for (uint16_t port = 20000; port < 21000; ++port)
        EXPECT_TRUE(table.track(fx.packet(fx.c2s(kAck, port)), 1, fx.ports).created);
    EXPECT_EQ(table.size(), 10u);
    for (uint16_t port : {1000, 1001, 1002})
        EXPECT_FALSE(table.track(fx.packet(fx.c2s(kAck, port)), 2, fx.ports).created) << port;
}

TEST(FlowTable, AMidstreamFlowIsStrayUntilItsOtherSideIsHeard) {
    Fixture fx;
    FlowTimeouts t;
    t.handshake_ms = 100;
    t.established_ms = 10'000;
    FlowTable table(100, t);
    table.track(fx.packet(fx.c2s(kAck, 1)), 0, fx.ports);  // never answered
    table.track(fx.packet(fx.c2s(kAck, 2)), 0, fx.ports);
    table.track(fx.packet(fx.s2c(kAck, 2)), 0, fx.ports);  // answered: a real connection
    EXPECT_EQ(table.expire(99), 0u);
    EXPECT_EQ(table.expire(100), 1u);  // the stray one, at the handshake timeout
    EXPECT_FALSE(table.track(fx.packet(fx.c2s(kAck, 2)), 100, fx.ports).created);
    EXPECT_EQ(table.expire(10'099), 0u);
    EXPECT_EQ(table.expire(10'100), 1u);
    // A stray flow is evicted before a handshake.
    FlowTable small(2, t);
    small.track(fx.packet(fx.c2s(kSyn, 3)), 0, fx.ports);
    small.track(fx.packet(fx.c2s(kAck, 4)), 1, fx.ports);
    small.track(fx.packet(fx.c2s(kSyn, 5)), 2, fx.ports);
    EXPECT_FALSE(small.track(fx.packet(fx.c2s(kSyn, 3)), 3, fx.ports).created);
    EXPECT_TRUE(small.track(fx.packet(fx.c2s(kAck, 4)), 3, fx.ports).created);
}

TEST(FlowTable, WithOnlyEstablishedFlowsTheLeastRecentIsEvicted) {
    Fixture fx;
    FlowTable table(3, {});
    for (uint16_t port : {1, 2, 3}) {
        table.track(fx.packet(fx.c2s(kSyn, port)), port, fx.ports);
        table.track(fx.packet(fx.c2s(kAck, port)), port, fx.ports);
    }
    table.track(fx.packet(fx.c2s(kAck, 1)), 10, fx.ports);  // 1 is now the most recent
    table.track(fx.packet(fx.c2s(kSyn, 4)), 11, fx.ports);
    table.track(fx.packet(fx.c2s(kAck, 4)), 11, fx.ports);
    EXPECT_EQ(table.size(), 3u);
    EXPECT_FALSE(table.track(fx.packet(fx.c2s(kAck, 1)), 12, fx.ports).created);
    EXPECT_TRUE(table.track(fx.packet(fx.c2s(kAck, 2)), 12, fx.ports).created);  // 2 was evicted
}

TEST(FlowTable, ReleasedFlowsUseTheirOwnShortTimeout) {
    Fixture fx;
    FlowTimeouts t;
    t.established_ms = 100'000;
    t.released_ms = 50;
    FlowTable table(10, t);
    table.track(fx.packet(fx.c2s(kSyn)), 0, fx.ports);
    auto l = table.track(fx.packet(fx.c2s(kAck)), 0, fx.ports);
    l.flow->disposition = Disposition::Released;
    table.on_disposition_changed(*l.flow);
    EXPECT_EQ(table.expire(50), 1u);
}

TEST(FlowTable, MemoryIsAccountedAndSmallPerFlow) {
    Fixture fx;
    FlowTable table(100000, {});
    size_t empty = table.memory_bytes();
    for (uint32_t i = 0; i < 50000; ++i) {
        PacketSpec s = fx.c2s(kSyn, uint16_t(1024 + i % 60000));
        s.src = "198.51." + std::to_string(100 + i / 60000) + ".2";
        fx.storage.clear();
        table.track(fx.packet(s), 0, fx.ports);
    }
    EXPECT_EQ(table.size(), 50000u);
    size_t per_flow = (table.memory_bytes() - empty) / table.size();
    EXPECT_LT(per_flow, 512u);
    EXPECT_GT(per_flow, sizeof(Flow));
}

TEST(FlowTable, ANewSynOnAnEndedOrReleasedTupleStartsANewFlow) {
    // Kept, the old entry would hand the new connection its state: released
    // (never inspected), or an engine's numbers from another connection.
    Fixture fx;
    FlowTable table(100, {});
    std::vector<const Flow*> removed;
    table.set_on_remove([&](const Flow& f, bool) { removed.push_back(&f); });
    auto syn = fx.c2s(kSyn);
    syn.seq = 999;
    auto first = table.track(fx.packet(syn), 0, fx.ports);
    table.track(fx.packet(fx.s2c(kSyn | kAck)), 1, fx.ports);
    table.track(fx.packet(fx.c2s(kAck)), 2, fx.ports);
    table.track(fx.packet(fx.c2s(kRst)), 3, fx.ports);
    ASSERT_EQ(first.flow->state, FlowState::Closed);

    syn.seq = 77777;
    auto again = table.track(fx.packet(syn), 4, fx.ports);
    EXPECT_TRUE(again.created);
    EXPECT_EQ(removed.size(), 1u);
    EXPECT_EQ(again.flow->state, FlowState::Handshake);
    EXPECT_EQ(again.flow->first_seen_ms, 4u);
    EXPECT_EQ(table.size(), 1u);
    EXPECT_EQ(table.counters().restarted, 1u);

    // Released while established: its end never reached the queue.
    table.track(fx.packet(fx.s2c(kSyn | kAck)), 5, fx.ports);
    table.track(fx.packet(fx.c2s(kAck)), 6, fx.ports);
    again.flow->disposition = Disposition::Released;
    table.on_disposition_changed(*again.flow);
    auto third = table.track(fx.packet(syn), 7, fx.ports);
    EXPECT_TRUE(third.created);
    EXPECT_EQ(third.flow->disposition, Disposition::Deciding);
    EXPECT_EQ(table.counters().restarted, 2u);
}

TEST(FlowTable, ARetransmittedSynKeepsTheFlowASynAtAnotherNumberDoesNot) {
    Fixture fx;
    FlowTable table(100, {});
    auto syn = fx.c2s(kSyn);
    syn.seq = 999;
    auto first = table.track(fx.packet(syn), 0, fx.ports);
    EXPECT_FALSE(table.track(fx.packet(syn), 1, fx.ports).created);
    syn.seq = 5;
    EXPECT_TRUE(table.track(fx.packet(syn), 2, fx.ports).created);

    // Established: the flow stays (the stream engine refuses the SYN), and
    // a SYN from the server's side never restarts a flow.
    table.track(fx.packet(fx.s2c(kSyn | kAck)), 3, fx.ports);
    table.track(fx.packet(fx.c2s(kAck)), 4, fx.ports);
    syn.seq = 123456;
    EXPECT_FALSE(table.track(fx.packet(syn), 5, fx.ports).created);
    EXPECT_FALSE(table.track(fx.packet(fx.s2c(kSyn)), 6, fx.ports).created);
    EXPECT_EQ(table.counters().restarted, 1u);
    (void)first;
}

}  // namespace
}  // namespace nfqscan
