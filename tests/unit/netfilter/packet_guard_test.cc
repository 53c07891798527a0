#include <gtest/gtest.h>

#include <set>
#include <stdexcept>

#include "../packet_builder.h"
#include "nfqscan/flow_stream.h"
#include "nfqscan/nfqueue.h"

namespace nfqscan {
namespace {

// What the queue was told.
struct Ledger : VerdictLedger {
    std::set<uint32_t> answered_ids, dropped;
    bool answered(uint32_t id) const override { return answered_ids.count(id) > 0; }
    void drop(uint32_t id) override {
        dropped.insert(id);
        answered_ids.insert(id);
    }
};

// An inspector with a bug: it throws on the bytes it is shown.
struct ThrowingTransform : StreamTransform {
    void on_bytes(uint64_t, std::span<const uint8_t>, Push, StreamSink&) override {
        throw std::out_of_range("inspector bug");
    }
};

// The worker's part, in small: each packet through a flow's stream engine,
// its verdicts written to the ledger.
struct EngineSink : PacketSink {
    ThrowingTransform bug;
    FlowStream stream{{nullptr, &bug}, {}};
    Ledger& ledger;
    explicit EngineSink(Ledger& l) : ledger(l) {}
    void on_packet(const QueuedPacket& qp) override {
        DecodedPacket p;
        ASSERT_EQ(decode_packet(qp.data, p), DecodeStatus::Ok);
        std::vector<PacketVerdict> out;
        Direction d = p.src_port == 80 ? Direction::ServerToClient : Direction::ClientToServer;
        stream.on_packet(qp.id, d, p, false, 0, out);
        for (const PacketVerdict& v : out)
            if (v.kind != PacketVerdict::Kind::Inject) ledger.answered_ids.insert(v.id);
    }
};

QueuedPacket queued(uint32_t id, const std::vector<uint8_t>& bytes) {
    QueuedPacket qp;
    qp.id = id;
    qp.data = bytes;
    qp.original_length = uint32_t(bytes.size());
    return qp;
}

TEST(PacketGuard, APacketWhoseInspectorThrowsIsDroppedNotLeftOrAccepted) {
    Ledger ledger;
    EngineSink engine(ledger);
    PacketGuard guard(engine, ledger, 0);
    std::vector<std::vector<uint8_t>> packets = {
        test::flow_segment(true, 0x02, 999, 0), test::flow_segment(false, 0x12, 4999, 1000),
        test::flow_segment(true, 0x10, 1000, 5000),
        test::flow_segment(false, 0x18, 5000, 1000, "response bytes")};
    for (uint32_t id = 1; id <= 3; ++id)
        guard.on_packet(queued(id, packets[id - 1]));
    EXPECT_EQ(guard.errors(), 0u);
    EXPECT_TRUE(ledger.dropped.empty());

    guard.on_packet(queued(4, packets[3]));  // the inspector throws on its bytes

    EXPECT_EQ(guard.errors(), 1u);
    EXPECT_EQ(guard.dropped(), 1u);
    EXPECT_EQ(ledger.dropped, std::set<uint32_t>{4});
}

struct AnswersThenThrows : PacketSink {
    Ledger& ledger;
    explicit AnswersThenThrows(Ledger& l) : ledger(l) {}
    void on_packet(const QueuedPacket& qp) override {
        ledger.answered_ids.insert(qp.id);
        throw std::runtime_error("after the verdict");
    }
};

TEST(PacketGuard, APacketAnsweredBeforeTheThrowKeepsItsVerdict) {
    Ledger ledger;
    AnswersThenThrows sink(ledger);
    PacketGuard guard(sink, ledger, 0);
    std::vector<uint8_t> bytes = test::flow_segment(true, 0x10, 1000, 5000);
    guard.on_packet(queued(7, bytes));
    EXPECT_EQ(guard.errors(), 1u);
    EXPECT_EQ(guard.dropped(), 0u);
    EXPECT_TRUE(ledger.dropped.empty());
}

TEST(AnsweredIds, TheNewestAnsweredIdCoversThoseUpToItAcrossTheWrap) {
    AnsweredIds ids;
    EXPECT_FALSE(ids.covers(0));
    ids.note(5);
    EXPECT_TRUE(ids.covers(5));
    EXPECT_TRUE(ids.covers(4));
    EXPECT_FALSE(ids.covers(6));
    ids.note(3);  // an older packet released late: the newest stays
    EXPECT_FALSE(ids.covers(6));
    ids.note(0xfffffffeu);  // (far behind 5: ignored)
    EXPECT_FALSE(ids.covers(6));

    AnsweredIds wrapping;
    wrapping.note(0xfffffffeu);
    EXPECT_FALSE(wrapping.covers(0xffffffffu));
    wrapping.note(1);  // the kernel's ids wrapped
    EXPECT_TRUE(wrapping.covers(0xffffffffu));
    EXPECT_TRUE(wrapping.covers(0));
    EXPECT_TRUE(wrapping.covers(1));
    EXPECT_FALSE(wrapping.covers(2));
}

}  // namespace
}  // namespace nfqscan
