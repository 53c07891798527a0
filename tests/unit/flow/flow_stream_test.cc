#include <gtest/gtest.h>

#include "../packet_builder.h"
#include "nfqscan/flow_stream.h"
#include "nfqscan/test_rewrite.h"

namespace nfqscan {
namespace {

// Client 198.51.100.2:40000 -> server 203.0.113.2:80.
struct Wire {
    explicit Wire(StreamTransform* server_to_client = nullptr, StreamLimits limits = {})
        : stream({nullptr, server_to_client}, limits) {}
    FlowStream stream;
    std::vector<std::vector<uint8_t>> storage;
    uint32_t next_id = 1;

    std::vector<PacketVerdict> send(bool from_client, uint8_t flags, uint32_t seq, uint32_t ack,
                                    const std::string& payload = "", bool gso = false,
                                    std::optional<uint32_t> tsval = std::nullopt) {
        storage.push_back(test::flow_segment(from_client, flags, seq, ack, payload, tsval));
        DecodedPacket p;
        EXPECT_EQ(decode_packet(storage.back(), p), DecodeStatus::Ok);
        std::vector<PacketVerdict> out;
        stream.on_packet(next_id++,
                         from_client ? Direction::ClientToServer : Direction::ServerToClient, p,
                         gso, 0, out);
        return out;
    }
};

// The test inspector's growing token, and a flow through it past its
// handshake: client data starts at 1000, server data at 5000, no MSS option
// (segments of at most 1220 bytes).
const TokenReplacer::Replacements kGrow = {{"GROW", "GROWN-LONGER-TOKEN"}};

struct GrowWire {
    TokenReplacer grow{kGrow};
    Wire w{&grow};
    GrowWire() {
        w.send(true, 0x02, 999, 0);
        w.send(false, 0x12, 4999, 1000);
        w.send(true, 0x10, 1000, 5000);
    }
};

// "GROW GROW ..." of at least `size` bytes.
std::string grow_words(size_t size) {
    std::string words;
    while (words.size() < size)
        words += "GROW ";
    return words;
}

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

// The SACK blocks of an ACK nfqscand sent.
std::vector<std::pair<uint32_t, uint32_t>> sack_blocks_of(const PacketVerdict& v) {
    DecodedPacket p;
    EXPECT_EQ(decode_packet(v.packet, p), DecodeStatus::Ok);
    std::vector<std::pair<uint32_t, uint32_t>> blocks;
    const uint8_t* o = p.packet.data() + p.l3_header_length + 20;
    size_t length = p.l4_header_length - 20u;
    auto load = [](const uint8_t* b) {
        return uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
    };
    for (size_t i = 0; i < length;) {
        if (o[i] == 0) break;
        if (o[i] == 1) {
            ++i;
            continue;
        }
        if (o[i] == 5)
            for (size_t e = i + 2; e + 8 <= i + o[i + 1]; e += 8)
                blocks.emplace_back(load(o + e), load(o + e + 4));
        i += o[i + 1];
    }
    return blocks;
}

std::optional<uint32_t> tsval_of(const PacketVerdict& v) {
    DecodedPacket p;
    EXPECT_EQ(decode_packet(v.packet, p), DecodeStatus::Ok);
    SegmentHeaders h = SegmentHeaders::of(p);
    return h.ts_value();
}

TEST(FlowStream, ReleasedHeldSegmentsCarryTheSendersNewestTimestamp) {
    // The gap is filled by a retransmission, sent after the segments held
    // behind it: the receiver takes it in order and remembers its TSval.
    // Held segments released after it with their own, older TSvals would be
    // dropped by the receiver (PAWS), while the sender, told by a SACK that
    // they arrived, would not send them again for long.
    Wire w;
    w.send(true, 0x02, 999, 0, "", false, 10);
    w.send(false, 0x12, 4999, 1000, "", false, 500);
    w.send(true, 0x10, 1000, 5000, "", false, 11);
    w.send(false, 0x18, 5000, 1000, std::string(100, 'a'), false, 501);
    auto held = w.send(false, 0x18, 5200, 1000, std::string(100, 'c'), false, 502);
    ASSERT_EQ(held[0].kind, PacketVerdict::Kind::Hold);
    ASSERT_EQ(held[1].kind, PacketVerdict::Kind::Inject);  // the SACK to the server
    EXPECT_EQ(tsval_of(held[1]), 11u);

    auto fill = w.send(false, 0x18, 5100, 1000, std::string(100, 'b'), false, 540);
    ASSERT_EQ(fill.size(), 2u);
    EXPECT_EQ(fill[0].kind, PacketVerdict::Kind::Accept);  // newest already: unchanged
    ASSERT_EQ(fill[1].kind, PacketVerdict::Kind::Replace);
    EXPECT_EQ(fill[1].id, held[0].id);
    EXPECT_EQ(tsval_of(fill[1]), 540u);

    // A late duplicate of an old segment goes out with the newest TSval too;
    // a segment with a newer one keeps its own.
    auto late = w.send(false, 0x18, 5000, 1000, std::string(100, 'a'), false, 501);
    ASSERT_EQ(late.size(), 1u);
    ASSERT_EQ(late[0].kind, PacketVerdict::Kind::Replace);
    EXPECT_EQ(tsval_of(late[0]), 540u);
    auto next = w.send(false, 0x18, 5300, 1000, std::string(100, 'd'), false, 541);
    ASSERT_EQ(next.size(), 1u);
    EXPECT_EQ(next[0].kind, PacketVerdict::Kind::Accept);
}

std::string payload_of(const PacketVerdict& v, uint32_t* seq = nullptr) {
    DecodedPacket p;
    EXPECT_EQ(decode_packet(v.packet, p), DecodeStatus::Ok);
    if (seq) *seq = p.seq;
    return {p.payload.begin(), p.payload.end()};
}

TEST(FlowStream, APacketCutByTheCopyRangeIsReplacedByWhatWasRead) {
    // Accepted, the kernel would pass the whole packet: its tail was neither
    // inspected nor translated. Replaced by what was read, the tail is lost
    // and sent again by the sender.
    Wire w;
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x10, 1000, 5000);
    auto whole = test::flow_segment(false, 0x18, 5000, 1000, std::string(600, 'a'));
    std::vector<uint8_t> scratch;
    DecodedPacket p;
    ASSERT_EQ(decode_cut_packet(std::span(whole).first(whole.size() - 100), scratch, p),
              DecodeStatus::Ok);
    std::vector<PacketVerdict> out;
    w.stream.on_packet(w.next_id++, Direction::ServerToClient, p, false, 0, out);
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].kind, PacketVerdict::Kind::Replace);
    EXPECT_EQ(payload_of(out[0]), std::string(500, 'a'));
    // The sender's next segment starts where the cut tail did: a gap.
    auto next = w.send(false, 0x18, 5600, 1000, "b");
    EXPECT_EQ(next[0].kind, PacketVerdict::Kind::Hold);
}

TEST(FlowStream, InputKeptBeforeAGapIsAcknowledgedSoTheSenderSendsTheLostSegment) {
    // "GR" may start a token: the inspector keeps it. The segment after it is
    // lost, later ones wait behind the gap. The receiver acknowledges up to
    // "abc", so after a timeout the sender retransmits only "GR" and waits
    // for its acknowledgement before the lost segment (a SACK block starting
    // at its cumulative acknowledgement does not count): nfqscand
    // acknowledges "GR" itself, and owes the receiver its output.
    GrowWire g;
    Wire& w = g.w;
    auto first = w.send(false, 0x18, 5000, 1000, "abcGR");
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(payload_of(first[0]), "abc");

    auto held = w.send(false, 0x18, 5105, 1000, std::string(100, 'z'));
    ASSERT_EQ(held.size(), 2u);
    ASSERT_EQ(held[0].kind, PacketVerdict::Kind::Hold);
    using Blocks = std::vector<std::pair<uint32_t, uint32_t>>;
    EXPECT_EQ(sack_blocks_of(held[1]), (Blocks{{5105, 5205}}));

    auto receiver_ack = w.send(true, 0x10, 1000, 5003);            // the receiver has "abc"
    EXPECT_EQ(receiver_ack[0].kind, PacketVerdict::Kind::Accept);  // unchanged: 5003
    DecodedPacket ack;
    auto again = w.send(false, 0x18, 5003, 1000, "GR");
    ASSERT_EQ(again.size(), 2u);
    ASSERT_EQ(again[1].kind, PacketVerdict::Kind::Inject);
    ASSERT_EQ(decode_packet(again[1].packet, ack), DecodeStatus::Ok);
    EXPECT_EQ(ack.ack, 5005u);
    EXPECT_EQ(sack_blocks_of(again[1]), (Blocks{{5105, 5205}}));
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).counters().tails_acknowledged, 1u);
    // The receiver's own acknowledgements say so from now on, too.
    auto later_ack = w.send(true, 0x10, 1000, 5003);
    ASSERT_EQ(later_ack[0].kind, PacketVerdict::Kind::Replace);
    ASSERT_EQ(decode_packet(later_ack[0].packet, ack), DecodeStatus::Ok);
    EXPECT_EQ(ack.ack, 5005u);

    // The lost segment comes: everything goes out, the token rewritten.
    auto fill = w.send(false, 0x18, 5005, 1000, "OW" + std::string(98, 'y'));
    ASSERT_EQ(fill.size(), 2u);
    std::string rewritten = "GROWN-LONGER-TOKEN" + std::string(98, 'y');
    EXPECT_EQ(payload_of(fill[0]), rewritten);
    EXPECT_EQ(payload_of(fill[1]), std::string(100, 'z'));

    // That output is lost on its way; the sender, which never sends "GR"
    // again, retransmits the segment after it: the answer starts with all
    // the receiver lacks.
    auto resent = w.send(false, 0x18, 5005, 1000, "OW" + std::string(98, 'y'));
    ASSERT_EQ(resent.size(), 1u);
    uint32_t seq = 0;
    EXPECT_EQ(payload_of(resent[0], &seq), rewritten);
    EXPECT_EQ(seq, 5003u);
}

TEST(FlowStream, OutputAGrownPacketCannotCarryWaitsForTheNextOne) {
    GrowWire g;
    Wire& w = g.w;
    std::string words = grow_words(1200);  // 1200 bytes grow to 4560
    std::string expected = TokenReplacer::apply(kGrow, words);

    auto first = w.send(false, 0x18, 5000, 1000, words);
    ASSERT_EQ(first.size(), 1u);  // no new segment: the rest waits
    ASSERT_EQ(first[0].kind, PacketVerdict::Kind::Replace);
    EXPECT_EQ(payload_of(first[0]), expected.substr(0, 1220));
    EXPECT_TRUE(w.stream.has_deferred());

    // The next packet carries what waited, in front of its own bytes, as far
    // as it can; what is left still waits.
    auto second = w.send(false, 0x18, 6200, 1000, "abc");
    ASSERT_EQ(second.size(), 1u);
    uint32_t seq = 0;
    EXPECT_EQ(payload_of(second[0], &seq), expected.substr(1220, 1220));
    EXPECT_EQ(seq, 5000u + 1220);
    EXPECT_TRUE(w.stream.has_deferred());

    // The end of the batch: the rest goes out as new segments, in order.
    std::vector<PacketVerdict> flushed;
    w.stream.flush_deferred(flushed);
    EXPECT_FALSE(w.stream.has_deferred());
    std::string rest = expected.substr(2440) + "abc";
    std::string got;
    uint32_t next = 5000 + 2440;
    for (const PacketVerdict& v : flushed) {
        ASSERT_EQ(v.kind, PacketVerdict::Kind::Inject);
        got += payload_of(v, &seq);
        EXPECT_EQ(seq, next);
        next = seq + uint32_t(payload_of(v).size());
        EXPECT_LE(payload_of(v).size(), 1220u);
    }
    EXPECT_EQ(got, rest);
    std::vector<PacketVerdict> again;
    w.stream.flush_deferred(again);
    EXPECT_TRUE(again.empty());

    // A FIN never waits: it must follow the last byte.
    auto fin = w.send(false, 0x19, 6203, 1000, words);
    EXPECT_FALSE(w.stream.has_deferred());
    ASSERT_GE(fin.size(), 2u);
    EXPECT_EQ(fin.back().kind, PacketVerdict::Kind::Inject);
}

TEST(FlowStream, DeferredOutputTheReceiverAcknowledgedMeanwhileIsNotSentAgain) {
    // A retransmission that also brings new bytes is answered from its first
    // byte, so what waits for the end of the batch may start before output
    // the receiver already has. An ACK for it in the same batch must not
    // shift what goes out: every byte is sent at its own sequence number.
    GrowWire g;
    Wire& w = g.w;
    std::string words = grow_words(1200);
    std::string expected = TokenReplacer::apply(kGrow, words) + "abc";

    w.send(false, 0x18, 5000, 1000, words);
    std::vector<PacketVerdict> flushed;
    w.stream.flush_deferred(flushed);  // all 4560 bytes went out

    // The sender retransmits its segment with three new bytes; the receiver
    // meanwhile acknowledges 3000 bytes of what it got.
    auto again = w.send(false, 0x18, 5000, 1000, words + "abc");
    ASSERT_EQ(again.size(), 1u);
    EXPECT_TRUE(w.stream.has_deferred());
    w.send(true, 0x10, 1000, 5000 + 3000);
    std::vector<PacketVerdict> rest;
    w.stream.flush_deferred(rest);
    ASSERT_FALSE(rest.empty());
    for (const PacketVerdict& v : rest) {
        uint32_t seq = 0;
        std::string bytes = payload_of(v, &seq);
        ASSERT_GE(seq, 5000u + 3000);
        EXPECT_EQ(bytes, expected.substr(seq - 5000, bytes.size())) << "at " << seq;
    }
    uint32_t last_seq = 0;
    std::string last = payload_of(rest.back(), &last_seq);
    EXPECT_EQ(last_seq + last.size(), 5000u + expected.size());
}

TEST(FlowStream, ARelayedSenderSeesTheStoresWindowNotTheReceivers) {
    // nfqscand speaks for the receiver while it relays: an ACK of the
    // receiver that reaches the sender carries the room left in the store
    // (the receiver's own, larger window would let the sender overrun it).
    TokenReplacer store(kGrow, true);
    StreamLimits limits;
    limits.max_relay = 20'000;
    Wire w(&store, limits);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x10, 1000, 5000);
    auto absorbed = w.send(false, 0x18, 5000, 1000, std::string(4000, 'a'));
    ASSERT_EQ(absorbed[0].kind, PacketVerdict::Kind::Drop);
    ASSERT_EQ(absorbed.back().kind, PacketVerdict::Kind::Inject);
    DecodedPacket ack;
    ASSERT_EQ(decode_packet(absorbed.back().packet, ack), DecodeStatus::Ok);
    EXPECT_EQ(ack.ack, 9000u);
    EXPECT_EQ(ack.window, 16'000);

    // The receiver's ACK (window 65535) with news for the sender: a
    // segment of the client's own.
    auto from_client = w.send(true, 0x18, 1000, 5000, "hello");
    ASSERT_EQ(from_client[0].kind, PacketVerdict::Kind::Replace);
    ASSERT_EQ(decode_packet(from_client[0].packet, ack), DecodeStatus::Ok);
    EXPECT_EQ(ack.ack, 9000u);
    EXPECT_EQ(ack.window, 16'000);
}

TEST(FlowStream, NewSegmentsFitTheMssEvenBehindAGsoPacket) {
    // A GSO packet may carry up to 64 KiB (the kernel cuts it); what does
    // not fit goes out through a raw socket, which cannot: MSS-sized pieces.
    GrowWire g;
    Wire& w = g.w;
    std::string words = grow_words(60000);
    auto out = w.send(false, 0x19, 5000, 1000, words, true);  // with FIN: nothing waits
    ASSERT_GE(out.size(), 2u);
    EXPECT_EQ(out[0].kind, PacketVerdict::Kind::Replace);
    EXPECT_GT(payload_of(out[0]).size(), 60000u);
    size_t total = payload_of(out[0]).size();
    for (size_t i = 1; i < out.size(); ++i) {
        ASSERT_EQ(out[i].kind, PacketVerdict::Kind::Inject);
        EXPECT_LE(payload_of(out[i]).size(), 1220u);
        total += payload_of(out[i]).size();
    }
    EXPECT_EQ(total, words.size() / 5 * 19);
}

// Relays and maps nothing until its verdict is in: an inspector holding an
// object for its scan.
struct AwaitingVerdict : StreamTransform {
    bool verdict = false;
    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
        sink.relay(!verdict);
        if (verdict) sink.pass(pending.size());
    }
};

std::vector<DecodedPacket> decoded_injections(const std::vector<PacketVerdict>& out) {
    std::vector<DecodedPacket> packets;
    for (const PacketVerdict& v : out) {
        if (v.kind != PacketVerdict::Kind::Inject) continue;
        packets.emplace_back();
        EXPECT_EQ(decode_packet(v.packet, packets.back()), DecodeStatus::Ok);
    }
    return packets;
}

TEST(FlowStream, AVerdictAfterTheSendersFinIsDeliveredByRedrive) {
    AwaitingVerdict object;
    Wire w(&object);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x10, 1000, 5000);
    // The whole object and the FIN arrive; nothing reaches the client yet.
    auto stored = w.send(false, 0x19, 5000, 1000, std::string(300, 'x'));
    ASSERT_EQ(stored[0].kind, PacketVerdict::Kind::Drop);
    for (const DecodedPacket& p : decoded_injections(stored))
        EXPECT_NE(p.dst.to_string(), "198.51.100.2") << "the client got something early";
    EXPECT_FALSE(w.stream.direction(Direction::ServerToClient).output_finished());

    // The verdict: nothing arrives from either peer, the engine sends it.
    object.verdict = true;
    std::vector<PacketVerdict> out;
    w.stream.redrive(10, out);
    std::string delivered;
    bool fin = false;
    for (const DecodedPacket& p : decoded_injections(out)) {
        ASSERT_EQ(p.dst.to_string(), "198.51.100.2");
        EXPECT_EQ(p.seq, 5000u + delivered.size());
        delivered.append(p.payload.begin(), p.payload.end());
        fin |= p.has(tcp_flag::kFin);
    }
    EXPECT_EQ(delivered, std::string(300, 'x'));
    EXPECT_TRUE(fin);
}

TEST(FlowStream, AClientRelayedRightAfterTheHandshakeIsAcknowledgedFromTheSynAck) {
    // An FTP data connection in active mode: its client (the FTP server)
    // sends the file at once, its server sent nothing but the SYN-ACK. The
    // relay acknowledges the client with that as the server's template.
    AwaitingVerdict object;
    FlowStream stream({&object, nullptr}, StreamLimits{});
    std::vector<std::vector<uint8_t>> storage;
    auto send = [&](bool from_client, uint8_t flags, uint32_t seq, uint32_t ack,
                    const std::string& payload = "") {
        storage.push_back(test::flow_segment(from_client, flags, seq, ack, payload));
        DecodedPacket p;
        EXPECT_EQ(decode_packet(storage.back(), p), DecodeStatus::Ok);
        std::vector<PacketVerdict> out;
        stream.on_packet(uint32_t(storage.size()),
                         from_client ? Direction::ClientToServer : Direction::ServerToClient, p,
                         false, 0, out);
        return out;
    };
    send(true, 0x02, 999, 0);
    send(false, 0x12, 4999, 1000);
    send(true, 0x10, 1000, 5000);
    auto absorbed = send(true, 0x18, 1000, 5000, std::string(1000, 'f'));
    ASSERT_EQ(absorbed[0].kind, PacketVerdict::Kind::Drop);
    std::vector<DecodedPacket> acks = decoded_injections(absorbed);
    ASSERT_EQ(acks.size(), 1u) << "the client is acknowledged";
    EXPECT_EQ(acks[0].dst.to_string(), "198.51.100.2");
    EXPECT_EQ(acks[0].tcp_flags, tcp_flag::kAck) << "no SYN from the template";
    EXPECT_EQ(acks[0].seq, 5000u) << "after the SYN-ACK's own number";
    EXPECT_EQ(acks[0].ack, 2000u);
}

TEST(FlowStream, CloseWithSendsTheMessageThenAFinAndResetsTheSender) {
    AwaitingVerdict object;
    Wire w(&object);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x18, 1000, 5000, "GET / HTTP/1.1\r\n\r\n");
    w.send(false, 0x18, 5000, 1018, std::string(500, 'v'));  // stored, awaiting its verdict

    std::vector<PacketVerdict> out;
    w.stream.close_with(Direction::ServerToClient, test::bytes_of("BLOCKED"), 10, out);
    bool server_reset = false;
    std::string to_client;
    bool fin = false;
    for (const DecodedPacket& p : decoded_injections(out)) {
        if (p.dst.to_string() == "203.0.113.2") {
            EXPECT_TRUE(p.has(tcp_flag::kRst));
            server_reset |= p.has(tcp_flag::kRst) && p.seq == 1018u;
        } else {
            EXPECT_EQ(p.seq, 5000u + to_client.size());
            to_client.append(p.payload.begin(), p.payload.end());
            fin |= p.has(tcp_flag::kFin);
        }
    }
    EXPECT_TRUE(server_reset);
    EXPECT_EQ(to_client, "BLOCKED");
    EXPECT_TRUE(fin);
    EXPECT_TRUE(w.stream.needs_engine());

    // The server's late data and the client's next request reach nobody.
    auto late = w.send(false, 0x18, 5500, 1018, "more");
    ASSERT_EQ(late[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_TRUE(decoded_injections(late).empty());
    auto next = w.send(true, 0x18, 1018, 5000, "GET /2 HTTP/1.1\r\n\r\n");
    ASSERT_EQ(next[0].kind, PacketVerdict::Kind::Drop);

    // The client acknowledges the page and the FIN, then closes: it gets a
    // RST where it expects the server's next byte.
    auto acked = w.send(true, 0x10, 1018, 5008);
    ASSERT_EQ(acked[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_TRUE(w.stream.direction(Direction::ServerToClient).fin_acknowledged());
    auto closing = w.send(true, 0x11, 1018, 5008);
    ASSERT_EQ(closing[0].kind, PacketVerdict::Kind::Drop);
    auto resets = decoded_injections(closing);
    ASSERT_EQ(resets.size(), 1u);
    EXPECT_EQ(resets[0].dst.to_string(), "198.51.100.2");
    EXPECT_TRUE(resets[0].has(tcp_flag::kRst));
    EXPECT_EQ(resets[0].seq, 5008u);
    EXPECT_FALSE(w.stream.needs_engine());
}

TEST(FlowStream, CloseWithAfterTheSendersFinStillDeliversTheMessage) {
    // The server sent its whole response and its FIN; the verdict blocks it:
    // the FIN waited behind the unmapped object, so the message goes first.
    AwaitingVerdict object;
    Wire w(&object);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x18, 1000, 5000, "GET / HTTP/1.0\r\n\r\n");
    w.send(false, 0x19, 5000, 1018, std::string(500, 'v'));

    std::vector<PacketVerdict> out;
    w.stream.close_with(Direction::ServerToClient, test::bytes_of("BLOCKED"), 10, out);
    std::string to_client;
    bool fin = false;
    for (const DecodedPacket& p : decoded_injections(out)) {
        if (p.dst.to_string() != "198.51.100.2") continue;
        to_client.append(p.payload.begin(), p.payload.end());
        fin |= p.has(tcp_flag::kFin);
    }
    EXPECT_EQ(to_client, "BLOCKED");
    EXPECT_TRUE(fin);
}

// -- Hostile peers (issue 13) ------------------------------------------------

// A flow past its handshake without an inspector: client data starts at
// 1000, server data at 5000; every window 65535 bytes (no scaling).
struct PlainWire {
    Wire w;
    PlainWire() {
        w.send(true, 0x02, 999, 0);
        w.send(false, 0x12, 4999, 1000);
        w.send(true, 0x10, 1000, 5000);
    }
};

TEST(FlowStreamPeers, AnAckOfOutputNeverSentIsDroppedAndLossRepairStillWorks) {
    // A third party that knows the addresses acknowledges far more than the
    // server sent. Counted as acknowledged, the server's next retransmission
    // of a lost segment would be answered with a repeat of the "last
    // acknowledged byte" instead of its bytes: the client never gets them.
    PlainWire g;
    Wire& w = g.w;
    auto data = w.send(false, 0x18, 5000, 1000, std::string(100, 'a'));
    ASSERT_EQ(data[0].kind, PacketVerdict::Kind::Accept);  // lost on its way to the client

    auto spoofed = w.send(true, 0x10, 1000, 5000 + 100'000);
    ASSERT_FALSE(spoofed.empty());
    EXPECT_EQ(spoofed[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).output_acked(), 0u);
    EXPECT_EQ(w.stream.counters().peer_checks.acks_ahead, 1u);
    // A challenge ACK goes to the host the ACK claims to come from: a real
    // client that is out of step learns where the server stands.
    auto challenge = decoded_injections(spoofed);
    ASSERT_EQ(challenge.size(), 1u);
    EXPECT_EQ(challenge[0].dst.to_string(), "198.51.100.2");
    EXPECT_EQ(challenge[0].ack, 1000u);
    EXPECT_EQ(challenge[0].seq, 5100u);  // the server's next byte
    EXPECT_EQ(w.stream.counters().peer_checks.challenge_acks, 1u);

    // Just past what was sent is ahead too (the 100 bytes end at 5100).
    EXPECT_EQ(w.send(true, 0x10, 1000, 5101)[0].kind, PacketVerdict::Kind::Drop);

    // The server retransmits: the segment goes out with its bytes.
    auto again = w.send(false, 0x18, 5000, 1000, std::string(100, 'a'));
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].kind, PacketVerdict::Kind::Accept);

    // The client's real ACK counts.
    auto real = w.send(true, 0x10, 1000, 5100);
    EXPECT_EQ(real[0].kind, PacketVerdict::Kind::Accept);
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).output_acked(), 100u);
}

TEST(FlowStreamPeers, AnAckFarBehindIsDroppedOneWithinTheWindowPasses) {
    PlainWire g;
    Wire& w = g.w;
    for (uint32_t at = 0; at < 100'000; at += 1000)
        w.send(false, 0x18, 5000 + at, 1000, std::string(1000, 'a'));
    EXPECT_EQ(w.send(true, 0x10, 1000, 5000 + 100'000)[0].kind, PacketVerdict::Kind::Accept);
    // 70,000 bytes behind: more than the largest window (65,535) the client
    // ever offered, so no ACK of the client's can be that old.
    auto old = w.send(true, 0x10, 1000, 5000 + 30'000);
    EXPECT_EQ(old[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.counters().peer_checks.acks_behind, 1u);
    // A late ACK within the window passes.
    EXPECT_NE(w.send(true, 0x10, 1000, 5000 + 90'000)[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).output_acked(), 100'000u);
}

TEST(FlowStreamPeers, ASpoofedAckDoesNotEndARelaysDelivery) {
    // Relayed: the engine delivers the stored bytes itself. An ACK claiming
    // all of them would end the relay's retransmissions.
    AwaitingVerdict object;
    Wire w(&object);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x10, 1000, 5000);
    w.send(false, 0x18, 5000, 1000, std::string(300, 'x'));
    object.verdict = true;
    std::vector<PacketVerdict> out;
    w.stream.redrive(10, out);
    ASSERT_EQ(w.stream.direction(Direction::ServerToClient).output_sent(), 300u);
    auto spoofed = w.send(true, 0x10, 1000, 5000 + 4000);
    EXPECT_EQ(spoofed[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).output_acked(), 0u);
    ASSERT_NE(w.stream.relay(Direction::ServerToClient), nullptr);
    // The relay still retransmits on its timer.
    out.clear();
    w.stream.on_timer(5000, out);
    bool resent = false;
    for (const DecodedPacket& p : decoded_injections(out))
        resent |= p.dst.to_string() == "198.51.100.2" && p.seq == 5000 && !p.payload.empty();
    EXPECT_TRUE(resent);
}

TEST(FlowStreamPeers, ARstAwayFromTheExpectedNumberDoesNotEndARelay) {
    // Today's black hole: any RST ended the relay, whose stored bytes the
    // server was told had arrived. Only one at the exact number counts.
    AwaitingVerdict object;
    Wire w(&object);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x18, 1000, 5000, "GET / HTTP/1.1\r\n\r\n");  // the client's next is 1018
    w.send(false, 0x18, 5000, 1018, std::string(300, 'x'));    // stored, awaiting its verdict
    ASSERT_TRUE(w.stream.relay_active());

    // Far outside any window: dropped silently.
    auto far = w.send(true, 0x04, 1018 + 5'000'000, 0);
    EXPECT_EQ(far[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_TRUE(decoded_injections(far).empty());
    EXPECT_EQ(w.stream.counters().peer_checks.rsts_out_of_window, 1u);
    EXPECT_TRUE(w.stream.relay_active());

    // In the window, not exact: dropped, and the claimed sender gets a
    // challenge ACK (a real client that did reset answers it with a RST at
    // the number it carries).
    auto near = w.send(true, 0x04, 1018 + 1000, 0);
    EXPECT_EQ(near[0].kind, PacketVerdict::Kind::Drop);
    auto challenge = decoded_injections(near);
    ASSERT_EQ(challenge.size(), 1u);
    EXPECT_EQ(challenge[0].dst.to_string(), "198.51.100.2");
    EXPECT_EQ(challenge[0].tcp_flags, tcp_flag::kAck);
    EXPECT_EQ(challenge[0].ack, 1018u);
    EXPECT_EQ(w.stream.counters().peer_checks.rsts_challenged, 1u);
    EXPECT_TRUE(w.stream.relay_active());

    // The verdict comes: the relay delivers.
    object.verdict = true;
    std::vector<PacketVerdict> out;
    w.stream.redrive(10, out);
    std::string delivered;
    for (const DecodedPacket& p : decoded_injections(out))
        if (p.dst.to_string() == "198.51.100.2")
            delivered.append(p.payload.begin(), p.payload.end());
    EXPECT_EQ(delivered, std::string(300, 'x'));
}

TEST(FlowStreamPeers, ARstAtTheExpectedNumberEndsTheFlowAndResetsTheOtherPeer) {
    AwaitingVerdict object;
    Wire w(&object);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x18, 1000, 5000, "GET / HTTP/1.1\r\n\r\n");
    w.send(false, 0x18, 5000, 1018, std::string(300, 'x'));  // stored, acknowledged by nfqscand
    ASSERT_TRUE(w.stream.relay_active());
    // The server resets at its next number: the client must not wait for
    // the 300 bytes the relay will never deliver now.
    auto rst = w.send(false, 0x04, 5300, 0);
    EXPECT_NE(rst[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_FALSE(w.stream.relay_active());
    bool client_reset = false;
    for (const DecodedPacket& p : decoded_injections(rst))
        client_reset |=
            p.dst.to_string() == "198.51.100.2" && p.has(tcp_flag::kRst) && p.seq == 5000;
    EXPECT_TRUE(client_reset);
}

TEST(FlowStreamPeers, AClientRstAtTheExpectedNumberPassesInPassMode) {
    PlainWire g;
    Wire& w = g.w;
    w.send(true, 0x18, 1000, 5000, "hello");
    auto rst = w.send(true, 0x14, 1005, 5000);
    ASSERT_EQ(rst.size(), 1u);
    EXPECT_EQ(rst[0].kind, PacketVerdict::Kind::Accept);
    EXPECT_EQ(w.stream.counters().peer_checks.rsts_challenged, 0u);
}

TEST(FlowStreamPeers, DataOutsideTheReceiversWindowIsDroppedNotInspected) {
    // Inspected and held, bytes far past the window would cost memory
    // without bound and show the inspector what the receiver never takes.
    struct Seen : StreamTransform {
        std::string bytes;
        void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
            bytes.append(pending.begin(), pending.end());
            sink.pass(pending.size());
        }
    } seen;
    Wire w(&seen);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x10, 1000, 5000);  // window 65535, unscaled

    auto ahead = w.send(false, 0x18, 5000 + 200'000, 1000, "far");
    EXPECT_EQ(ahead[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.held_count(), 0u);
    EXPECT_EQ(w.stream.counters().peer_checks.data_out_of_window, 1u);
    // Just within the window plus slack: held for the gap before it.
    EXPECT_EQ(w.send(false, 0x18, 5000 + 100'000, 1000, "near")[0].kind, PacketVerdict::Kind::Hold);
    // Far behind (wrapped): dropped too, never shown to the inspector.
    auto behind = w.send(false, 0x18, 5000 - 300'000, 1000, "old");
    EXPECT_EQ(behind[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.counters().peer_checks.data_out_of_window, 2u);
    EXPECT_EQ(seen.bytes, "");
    // In order, in the window: inspected and passed.
    EXPECT_EQ(w.send(false, 0x18, 5000, 1000, "ok")[0].kind, PacketVerdict::Kind::Accept);
    EXPECT_EQ(seen.bytes, "ok");
}

// Sees the bytes the engine takes from the server.
struct SeenBytes : StreamTransform {
    std::string bytes;
    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
        bytes.append(pending.begin(), pending.end());
        sink.pass(pending.size());
    }
};

// A handshake where both sides offer timestamps: the client's TSvals start
// at 10, the server's at 500.
void timestamped_handshake(Wire& w) {
    w.send(true, 0x02, 999, 0, "", false, 10);
    w.send(false, 0x12, 4999, 1000, "", false, 500);
    w.send(true, 0x10, 1000, 5000, "", false, 11);
}

TEST(FlowStreamPeers, DataWithAnOldTimestampIsDroppedNotInspected) {
    // PAWS (RFC 7323 5): the client took the server's TSval 500 (SYN-ACK)
    // and discards a segment whose TSval is older. At the exact next number
    // with other bytes, taken by the engine, it would be what the inspector
    // sees instead of what the client gets.
    SeenBytes seen;
    Wire w(&seen);
    timestamped_handshake(w);

    auto old = w.send(false, 0x18, 5000, 1000, "junk", false, 400);
    EXPECT_EQ(old[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.counters().peer_checks.paws, 1u);
    // Wrapped far back (serial arithmetic): older too.
    auto wrapped = w.send(false, 0x18, 5000, 1000, "junk", false, 500u + (1u << 31) + 1);
    EXPECT_EQ(wrapped[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.counters().peer_checks.paws, 2u);
    EXPECT_EQ(seen.bytes, "");
    EXPECT_EQ(w.stream.held_count(), 0u);

    // The real segment, with a newer TSval, is taken; one tick older than
    // the recent TSval still passes, as in Linux.
    EXPECT_EQ(w.send(false, 0x18, 5000, 1000, "real", false, 501)[0].kind,
              PacketVerdict::Kind::Accept);
    // (Passed with the newest TSval written in, see newer_ts().)
    EXPECT_NE(w.send(false, 0x18, 5004, 1000, "tick", false, 500)[0].kind,
              PacketVerdict::Kind::Drop);
    EXPECT_EQ(seen.bytes, "realtick");
    EXPECT_EQ(w.stream.counters().peer_checks.paws, 2u);
}

TEST(FlowStreamPeers, PawsOnlyWhereBothSidesNegotiatedTimestampsAndNeverForRsts) {
    SeenBytes seen;
    Wire w(&seen);
    w.send(true, 0x02, 999, 0);  // the client offers no timestamps
    w.send(false, 0x12, 4999, 1000, "", false, 500);
    w.send(true, 0x10, 1000, 5000);
    EXPECT_EQ(w.send(false, 0x18, 5000, 1000, "a", false, 400)[0].kind,
              PacketVerdict::Kind::Accept);
    EXPECT_EQ(seen.bytes, "a");

    Wire t;
    timestamped_handshake(t);
    auto rst = t.send(false, 0x04, 5000, 0, "", false, 400);
    EXPECT_NE(rst[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(t.stream.counters().peer_checks.paws, 0u);
}

TEST(FlowStreamPeers, PawsKeepsTheTimestampOfTheAcknowledgedEdgeNotOfLaterSegments) {
    // A segment ahead of the edge (held for a gap) does not move the recent
    // TSval: the segment that fills the gap was sent earlier, with an older
    // TSval, and the client takes it.
    Wire w;
    timestamped_handshake(w);
    EXPECT_EQ(w.send(false, 0x18, 5100, 1000, std::string(100, 'b'), false, 600)[0].kind,
              PacketVerdict::Kind::Hold);
    auto fill = w.send(false, 0x18, 5000, 1000, std::string(100, 'a'), false, 520);
    EXPECT_NE(fill[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.held_count(), 0u);  // the held segment went out behind it
    EXPECT_EQ(w.stream.counters().peer_checks.paws, 0u);
}

TEST(FlowStreamPeers, TheWindowMovesWithTheReceiversAcks) {
    PlainWire g;
    Wire& w = g.w;
    std::string block(10'000, 'a');
    for (uint32_t at = 0; at < 120'000; at += 10'000) {
        auto v = w.send(false, 0x18, 5000 + at, 1000, block);
        ASSERT_NE(v[0].kind, PacketVerdict::Kind::Drop) << "at " << at;
        w.send(true, 0x10, 1000, 5000 + at + 10'000);
    }
    EXPECT_EQ(w.stream.counters().peer_checks.data_out_of_window, 0u);
}

TEST(FlowStreamPeers, ASenderIgnoringTheWindowCannotMakeTheEngineKeepItAll) {
    // 1 MiB in order, never acknowledged: what the receiver's window does
    // not cover is dropped, so the retained output stays near one window.
    PlainWire g;
    Wire& w = g.w;
    std::string block(8000, 'a');
    for (uint32_t at = 0; at < (1u << 20); at += 8000)
        w.send(false, 0x18, 5000 + at, 1000, block);
    const StreamDirection& s2c = w.stream.direction(Direction::ServerToClient);
    EXPECT_LE(s2c.output_end(), 65535u + (64u << 10));
    EXPECT_LT(w.stream.memory_bytes(), 400u << 10);
    EXPECT_GT(w.stream.counters().peer_checks.data_out_of_window, 100u);
}

TEST(FlowStreamPeers, AtTheMemoryCapNewInputIsDroppedUntilThereIsRoom) {
    int64_t room = 500;
    StreamLimits limits;
    limits.memory_room = &room;
    Wire w(nullptr, limits);
    w.send(true, 0x02, 999, 0);
    w.send(false, 0x12, 4999, 1000);
    w.send(true, 0x10, 1000, 5000);
    auto refused = w.send(false, 0x18, 5000, 1000, std::string(600, 'a'));
    EXPECT_EQ(refused[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).counters().memory_refused, 1u);
    EXPECT_EQ(w.stream.direction(Direction::ServerToClient).input_next(), 0u);
    // Out of order: not held either.
    EXPECT_EQ(w.send(false, 0x18, 6000, 1000, std::string(600, 'b'))[0].kind,
              PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.held_count(), 0u);
    room = 10'000;  // acknowledgements elsewhere freed memory
    EXPECT_EQ(w.send(false, 0x18, 5000, 1000, std::string(600, 'a'))[0].kind,
              PacketVerdict::Kind::Accept);
}

// `out` drops the held packet `held_id` and resets both peers (and
// injects nothing but RSTs).
void expect_reset_and_held_dropped(const std::vector<PacketVerdict>& out, uint32_t held_id) {
    bool held_dropped = false, client_reset = false, server_reset = false;
    for (const PacketVerdict& v : out)
        if (v.id == held_id) held_dropped = v.kind == PacketVerdict::Kind::Drop;
    for (const DecodedPacket& p : decoded_injections(out)) {
        EXPECT_TRUE(p.has(tcp_flag::kRst));
        (p.dst.to_string() == "198.51.100.2" ? client_reset : server_reset) = true;
    }
    EXPECT_TRUE(held_dropped);
    EXPECT_TRUE(client_reset);
    EXPECT_TRUE(server_reset);
}

TEST(FlowStreamPeers, AShedFlowResetsItsPeersFreesItsMemoryAndPassesNothing) {
    PlainWire g;
    Wire& w = g.w;
    w.send(false, 0x18, 5000, 1000, std::string(20'000, 'a'));
    auto held = w.send(false, 0x18, 5000 + 30'000, 1000, std::string(20'000, 'c'));
    ASSERT_EQ(held[0].kind, PacketVerdict::Kind::Hold);
    size_t before = w.stream.memory_bytes();
    std::vector<PacketVerdict> out;
    w.stream.shed(out);
    expect_reset_and_held_dropped(out, held[0].id);
    EXPECT_TRUE(w.stream.held_ids().empty());
    EXPECT_LT(w.stream.memory_bytes() + 30'000, before);
    EXPECT_EQ(w.send(false, 0x18, 5000 + 20'000, 1000, "late")[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.send(true, 0x10, 1000, 5000 + 20'000)[0].kind, PacketVerdict::Kind::Drop);
}

TEST(FlowStreamPeers, AnAbandonedRewrittenFlowResetsBothPeersAndDropsWhatItHeld) {
    // Evicted or expired: its next packet would start a new engine at no
    // shift, and the client would take the server's raw bytes at numbers
    // that no longer match what it got.
    GrowWire g;
    Wire& w = g.w;
    w.send(false, 0x18, 5000, 1000, grow_words(100));
    auto held = w.send(false, 0x18, 5000 + 200, 1000, "GROW ");
    ASSERT_EQ(held[0].kind, PacketVerdict::Kind::Hold);
    ASSERT_TRUE(w.stream.needs_engine());
    std::vector<PacketVerdict> out;
    w.stream.abandon(out);
    expect_reset_and_held_dropped(out, held[0].id);
    EXPECT_TRUE(w.stream.held_ids().empty());
}

TEST(FlowStreamPeers, AnAbandonedFlowAtNoShiftIsNotReset) {
    // Its peers go on without the engine: nothing to protect, nothing reset.
    PlainWire g;
    Wire& w = g.w;
    w.send(false, 0x18, 5000, 1000, std::string(100, 'a'));
    auto held = w.send(false, 0x18, 5000 + 200, 1000, std::string(100, 'c'));
    ASSERT_EQ(held[0].kind, PacketVerdict::Kind::Hold);
    ASSERT_FALSE(w.stream.needs_engine());
    std::vector<PacketVerdict> out;
    w.stream.abandon(out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].id, held[0].id);
    EXPECT_EQ(out[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.counters().resets, 0u);
}

TEST(FlowStreamPeers, ASynsDataIsCutAndComesAgainInOrderAfterTheHandshake) {
    // Accepted, the server would get "early" uninspected and the engine,
    // whose input starts after the SYN, would hold every later segment
    // behind a gap that never fills.
    Wire w;
    auto syn = w.send(true, 0x02, 999, 0, "early");
    ASSERT_EQ(syn.size(), 1u);
    ASSERT_EQ(syn[0].kind, PacketVerdict::Kind::Replace);
    DecodedPacket p;
    ASSERT_EQ(decode_packet(syn[0].packet, p), DecodeStatus::Ok);
    EXPECT_TRUE(p.payload.empty());
    EXPECT_EQ(p.tcp_flags, tcp_flag::kSyn);
    EXPECT_EQ(p.seq, 999u);
    EXPECT_EQ(w.stream.counters().peer_checks.syn_data_dropped, 1u);
    // The server acknowledges only the SYN; the client sends its data again.
    auto synack = w.send(false, 0x12, 4999, 1000, "hi");
    ASSERT_EQ(synack[0].kind, PacketVerdict::Kind::Replace);
    ASSERT_EQ(decode_packet(synack[0].packet, p), DecodeStatus::Ok);
    EXPECT_TRUE(p.payload.empty());
    auto again = w.send(true, 0x18, 1000, 5000, "early");
    EXPECT_EQ(again[0].kind, PacketVerdict::Kind::Accept);
    EXPECT_EQ(w.stream.held_count(), 0u);
}

TEST(FlowStreamPeers, UrgentDataIsDeliveredInline) {
    PlainWire g;
    Wire& w = g.w;
    auto storage = test::flow_segment(false, 0x38, 5000, 1000, "abc!");  // URG PSH ACK
    test::put16(storage, 20 + 18, 4);                                    // the urgent pointer: '!'
    DecodedPacket in;
    ASSERT_EQ(decode_packet(storage, in), DecodeStatus::Ok);
    std::vector<PacketVerdict> out;
    w.stream.on_packet(w.next_id++, Direction::ServerToClient, in, false, 0, out);
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].kind, PacketVerdict::Kind::Replace);
    DecodedPacket p;
    ASSERT_EQ(decode_packet(out[0].packet, p), DecodeStatus::Ok);
    EXPECT_EQ(p.tcp_flags, 0x18);
    EXPECT_EQ(p.packet[p.l3_header_length + 18], 0);
    EXPECT_EQ(p.packet[p.l3_header_length + 19], 0);
    EXPECT_EQ(std::string(p.payload.begin(), p.payload.end()), "abc!");
    EXPECT_EQ(w.stream.counters().peer_checks.urgent_cleared, 1u);
}

TEST(FlowStreamPeers, ASynAtAnotherNumberOnAnEstablishedFlowIsRefusedWithAChallengeAck) {
    // Taken, it would move the numbers the engine checks and translates;
    // the client gets the ACK its server would send (RFC 5961 4).
    PlainWire g;
    Wire& w = g.w;
    w.send(false, 0x18, 5000, 1000, "hello");  // the server's headers: the challenge's template
    auto syn = w.send(true, 0x02, 424242, 0);
    ASSERT_FALSE(syn.empty());
    EXPECT_EQ(syn[0].kind, PacketVerdict::Kind::Drop);
    EXPECT_EQ(w.stream.counters().peer_checks.syns_refused, 1u);
    auto challenge = decoded_injections(syn);
    ASSERT_EQ(challenge.size(), 1u);
    EXPECT_EQ(challenge[0].dst.to_string(), "198.51.100.2");
    EXPECT_EQ(challenge[0].ack, 1000u);
    EXPECT_EQ(challenge[0].seq, 5005u);
    // The flow goes on at its own numbers; a retransmitted SYN at the old
    // number is still the handshake's.
    EXPECT_EQ(w.send(true, 0x18, 1000, 5005, "data")[0].kind, PacketVerdict::Kind::Accept);
    EXPECT_NE(w.send(true, 0x02, 999, 0)[0].kind, PacketVerdict::Kind::Drop);
}

}  // namespace
}  // namespace nfqscan
