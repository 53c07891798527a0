// Store and forward through FlowStream, on a simulated wire of real packets:
// a TCP sender (the server) and receiver (the client) with retransmission
// timers, loss, duplication and reordering on every hop, and inspectors that
// go in and out of relay mode at random, store, replace and insert bytes.
// The receiver must end up with exactly what the inspector produced; the
// sender must never be acknowledged more than it sent, and its FIN only once
// the receiver has everything and the FIN. With the relay device (GSO), the
// relay's output goes as frames the simulated kernel hands the receiver
// whole, as veth does: the receiver acknowledges a frame at a time.
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <random>

#include "../gso_frame.h"
#include "../packet_builder.h"
#include "memory_cap.h"
#include "nfqscan/flow_stream.h"
#include "nfqscan/test_rewrite.h"

namespace nfqscan {
namespace {

constexpr uint32_t kServerIsn = 4999;  // server data starts at 5000
constexpr uint32_t kClientIsn = 999;

// Records every byte it maps, so the receiver's stream can be compared with
// it; goes in and out of relay mode, stores, replaces and inserts at random.
class RandomRelay : public StreamTransform {
  public:
    explicit RandomRelay(uint32_t seed) : rng_(seed) {}

    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override {
        if (chance(0.05)) {
            relay_ = !relay_;
            sink.relay(relay_);
        }
        size_t n = pending.size();
        size_t done = 0;
        // While relaying, often store everything (more may come).
        if (relay_ && push == Push::More && chance(0.7)) return;
        size_t target = push == Push::More ? size_t(rng_() % (n + 1)) : n;
        while (done < target) {
            size_t k = std::min<size_t>(target - done, 1 + rng_() % 300);
            if (chance(0.1)) {
                std::string bytes(rng_() % (2 * k + 1), 'a' + char(rng_() % 26));
                sink.replace(k, test::bytes_of(bytes));
                expected += bytes;
            } else {
                sink.pass(k);
                expected.append(reinterpret_cast<const char*>(pending.data()) + done, k);
            }
            done += k;
        }
    }

    std::string expected;

  private:
    bool chance(double p) { return std::uniform_real_distribution<>(0, 1)(rng_) < p; }
    std::mt19937 rng_;
    bool relay_ = false;
};

struct WireOptions {
    double loss = 0.0;
    double duplicate = 0.0;
    double reorder = 0.0;
    bool gso = false;   // the relay sends GSO frames (the relay device)
    bool sack = false;  // the client's ACKs carry SACK blocks for what it holds past a gap
};

// What went out as frames through the relay device.
struct FrameLog {
    uint64_t frames = 0, multi_segment = 0, largest = 0;
    uint64_t fin_frames = 0;
};

// Client 198.51.100.2:40000 <-> nfqscand <-> server 203.0.113.2:80; the
// server sends `input` and a FIN.
class RelayedConnection {
  public:
    RelayedConnection(std::string input, StreamTransform& transform, WireOptions wire,
                      uint32_t seed, StreamLimits limits = {})
        : input_(std::move(input)),
          wire_(wire),
          rng_(seed),
          stream_({nullptr, &transform}, limits, wire.gso ? &gso_ : nullptr) {
        handshake();
    }

    // Runs until the server's FIN is acknowledged; false if it does not
    // converge.
    bool run(uint64_t max_ms = 2'000'000) {
        for (; now_ < max_ms; ++now_) {
            if (server_fin_acked_ && client_fin_) return true;
            step();
        }
        return false;
    }

    // Own bytes to the client, after the output produced so far; returns the
    // input offset they go in front of.
    uint64_t send_own(const std::string& bytes) {
        uint64_t at = stream_.direction(Direction::ServerToClient).input_next();
        std::vector<PacketVerdict> out;
        stream_.send_own(Direction::ServerToClient, test::bytes_of(bytes), now_, out);
        route(out, {});
        return at;
    }
    // Runs until the server has sent (and had acknowledged) `bytes` of its input.
    void run_until_acked(size_t bytes) {
        for (; now_ < 100000 && snd_una_ < bytes; ++now_)
            step();
    }

    void reset_now() {
        std::vector<PacketVerdict> out;
        stream_.reset_peers(out);
        route(out, {});
    }
    // Deliver everything in flight without loss (after reset_now()).
    void drain() {
        wire_ = {};
        for (int i = 0; i < 100000 && deliver_one();)
            ++i;
    }

    const std::string& received() const { return received_; }
    bool client_fin() const { return client_fin_; }
    bool client_reset() const { return client_reset_; }
    bool server_reset() const { return server_reset_; }
    size_t violations() const { return violations_; }
    const FlowStream& stream() const { return stream_; }
    const FrameLog& frames() const { return frames_; }
    void keep_open() { send_fin_ = false; }
    // The client acknowledges nothing from here on (its ACKs are lost).
    void stop_acknowledging() { acknowledging_ = false; }
    // Runs after each call into the stream (as the owner of many streams
    // settles their memory after each packet).
    std::function<void()> after_call;
    void expect(const std::string* e) { expected_ = e; }
    std::string progress() const {
        const StreamDirection& s2c = stream_.direction(Direction::ServerToClient);
        return std::string(s2c.relaying() ? "relaying" : "passing") + " out acked " +
               std::to_string(s2c.output_acked()) + " sent " + std::to_string(s2c.output_sent()) +
               " end " + std::to_string(s2c.output_end()) + " finished " +
               std::to_string(s2c.output_finished()) + " relay " +
               std::to_string(stream_.relay_active()) + " deadline " +
               std::to_string(stream_.deadline().value_or(0)) + " [" +
               (stream_.relay(Direction::ServerToClient)
                    ? stream_.relay(Direction::ServerToClient)->describe()
                    : std::string("no relay")) +
               "]; server una " + std::to_string(snd_una_) + "/" + std::to_string(input_.size()) +
               ", client received " + std::to_string(received_.size()) + " fin at " +
               std::to_string(fin_at_.value_or(0)) + ", relay segments " +
               std::to_string(stream_.counters().relay_segments) + ", timeouts " +
               std::to_string(stream_.counters().relay_timeouts) + ", t=" + std::to_string(now_);
    }

  private:
    using Packet = std::vector<uint8_t>;

    // One millisecond: the server sends what it may, a few packets move,
    // the relay's timers run.
    void step() {
        server_send();
        for (int i = 0; i < 4; ++i)
            deliver_one();
        if (auto d = stream_.deadline(); d && *d <= now_) {
            std::vector<PacketVerdict> out;
            stream_.on_timer(now_, out);
            route(out, {});
            if (after_call) after_call();
        }
    }

    static Packet make(bool from_client, uint8_t flags, uint32_t seq, uint32_t ack,
                       const std::string& payload = "") {
        return test::flow_segment(from_client, flags, seq, ack, payload);
    }

    void handshake() {
        std::vector<PacketVerdict> out;
        engine(make(true, 0x02, kClientIsn, 0), true);
        engine(make(false, 0x12, kServerIsn, kClientIsn + 1), false);
        engine(make(true, 0x10, kClientIsn + 1, kServerIsn + 1), true);
        e2c_.clear();
        e2s_.clear();
    }

    bool chance(double p) { return p > 0 && std::uniform_real_distribution<>(0, 1)(rng_) < p; }

    void push(std::deque<Packet>& q, Packet p) {
        if (chance(wire_.loss)) return;
        int copies = chance(wire_.duplicate) ? 2 : 1;
        for (int i = 0; i < copies; ++i) {
            if (!q.empty() && chance(wire_.reorder))
                q.insert(q.end() - 1, p);
            else
                q.push_back(p);
        }
    }

    // The engine's answers: verdicts for queued packets, new packets.
    void route(std::vector<PacketVerdict>& out, const std::map<uint32_t, Packet>& just_queued) {
        for (PacketVerdict& v : out) {
            Packet original;
            if (v.kind != PacketVerdict::Kind::Inject) {
                auto it = just_queued.find(v.id);
                if (it != just_queued.end()) {
                    original = it->second;
                } else if (auto h = held_.find(v.id); h != held_.end()) {
                    original = h->second;
                }
            }
            switch (v.kind) {
                case PacketVerdict::Kind::Hold:
                    held_[v.id] = original;
                    continue;
                case PacketVerdict::Kind::Drop:
                    held_.erase(v.id);
                    continue;
                case PacketVerdict::Kind::Accept:
                    held_.erase(v.id);
                    forward(original);
                    break;
                case PacketVerdict::Kind::Replace:
                    held_.erase(v.id);
                    forward(v.packet);
                    break;
                case PacketVerdict::Kind::Inject:
                    forward(v.packet);
                    break;
                case PacketVerdict::Kind::InjectFrame:
                    forward(receive_frame(v.packet));
                    break;
            }
        }
    }

    // The kernel's side of a frame: checked, forwarded whole to the client.
    Packet receive_frame(const Packet& frame) {
        test::ReceivedFrame f = test::receive_frame(frame);
        EXPECT_EQ(f.ttl_written, 65);  // the templates' TTL is 64
        DecodedPacket d;
        EXPECT_EQ(decode_packet(f.packet, d), DecodeStatus::Ok);
        EXPECT_EQ(d.src_port, 80);  // only the relayed direction
        ++frames_.frames;
        if (f.gso_type) ++frames_.multi_segment;
        frames_.largest = std::max<uint64_t>(frames_.largest, d.payload.size());
        if (d.has(tcp_flag::kFin)) {
            ++frames_.fin_frames;
            // The FIN rides only on the frame that ends the output.
            if (expected_) {
                EXPECT_EQ(uint32_t(d.seq + d.payload.size() - (kServerIsn + 1)),
                          uint32_t(expected_->size()));
            }
        }
        return f.packet;
    }

    void forward(const Packet& p) {
        DecodedPacket d;
        ASSERT_EQ(decode_packet(p, d), DecodeStatus::Ok);

        push(d.src_port == 80 ? e2c_ : e2s_, p);
    }

    void engine(const Packet& p, bool from_client) {
        DecodedPacket d;
        ASSERT_EQ(decode_packet(p, d), DecodeStatus::Ok);
        uint32_t id = next_id_++;
        std::vector<PacketVerdict> out;
        stream_.on_packet(id, from_client ? Direction::ClientToServer : Direction::ServerToClient,
                          d, false, now_, out);
        route(out, {{id, p}});
        if (after_call) after_call();
    }

    void server_send() {
        size_t window = 16 * kMss;
        size_t limit = std::min(snd_una_ + window, input_.size());
        while (snd_nxt_ < limit) {
            size_t len = std::min(kMss, limit - snd_nxt_);
            push(s2e_, make(false, 0x18, uint32_t(kServerIsn + 1 + snd_nxt_), kClientIsn + 1,
                            input_.substr(snd_nxt_, len)));
            snd_nxt_ += len;
            snd_max_ = std::max(snd_max_, snd_nxt_);
            last_progress_ = now_;
        }
        if (snd_nxt_ == input_.size() && !fin_sent_ && send_fin_) {
            push(s2e_, make(false, 0x11, uint32_t(kServerIsn + 1 + snd_nxt_), kClientIsn + 1));
            fin_sent_ = fin_ever_sent_ = true;
        }
        if (now_ - last_progress_ > rto_) {
            // Go back to the oldest unacknowledged byte.
            snd_nxt_ = std::min(snd_una_, input_.size());
            fin_sent_ = server_fin_acked_;
            last_progress_ = now_;
            rto_ = std::min<uint64_t>(rto_ * 2, 3000);
        }
    }

    void server_receive(const DecodedPacket& d) {
        if (d.has(tcp_flag::kRst)) {
            if (d.seq == kClientIsn + 1) server_reset_ = true;  // the exact next sequence
            return;
        }
        uint64_t acked = uint32_t(d.ack - (kServerIsn + 1));
        if (acked > snd_max_ + (fin_ever_sent_ ? 1 : 0)) {
            ++violations_;  // acknowledged more than was sent
            ADD_FAILURE() << "server acknowledged " << acked << " of " << snd_max_ << " sent";
            return;
        }
        if (acked == input_.size() + 1) {
            if (!client_fin_) {
                ++violations_;
                ADD_FAILURE() << "the server's FIN acknowledged before the client had it";
            }
            server_fin_acked_ = true;
            acked = input_.size();
        }
        if (acked > snd_una_) {
            snd_una_ = acked;
            snd_nxt_ = std::max(snd_nxt_, snd_una_);
            last_progress_ = now_;
            rto_ = 200;
        }
    }

    void client_receive(const DecodedPacket& d) {
        if (d.has(tcp_flag::kRst)) {
            if (d.seq == uint32_t(kServerIsn + 1 + received_.size())) client_reset_ = true;
            return;
        }
        uint64_t begin = uint32_t(d.seq - (kServerIsn + 1));
        std::string data(d.payload.begin(), d.payload.end());
        // Every byte ever offered at an offset must be the same.
        for (size_t i = 0; i < data.size(); ++i) {
            auto [it, fresh] = seen_.emplace(begin + i, data[i]);
            if (!fresh && it->second != data[i]) {
                ++violations_;
                ADD_FAILURE() << "two different bytes at output offset " << begin + i
                              << " (segment " << begin << "+" << data.size() << " flags "
                              << int(d.tcp_flags) << ", was '" << it->second << "' now '" << data[i]
                              << "', t=" << now_ << ", expected '"
                              << (expected_ && begin + i < expected_->size()
                                      ? (*expected_)[begin + i]
                                      : '?')
                              << "')";
                return;
            }
        }
        if (d.has(tcp_flag::kFin)) fin_at_ = begin + data.size();
        while (seen_.count(received_.size()))
            received_ += seen_[received_.size()];
        if (fin_at_ && *fin_at_ == received_.size()) client_fin_ = true;
        uint32_t ack = uint32_t(kServerIsn + 1 + received_.size() + (client_fin_ ? 1 : 0));
        test::PacketSpec s;
        s.seq = kClientIsn + 1;
        s.ack = ack;
        if (wire_.sack) s.sack = sack_blocks(begin);
        if (acknowledging_) push(c2e_, test::build_packet(s));
    }

    // What the client holds past its first gap, as SACK blocks (RFC 2018):
    // the block holding `latest` first, then the others from the top, 3 at most.
    std::vector<std::pair<uint32_t, uint32_t>> sack_blocks(uint64_t latest) const {
        std::vector<std::pair<uint64_t, uint64_t>> runs;
        for (auto it = seen_.upper_bound(received_.size()); it != seen_.end(); ++it) {
            if (!runs.empty() && runs.back().second == it->first)
                ++runs.back().second;
            else
                runs.push_back({it->first, it->first + 1});
        }
        std::vector<std::pair<uint32_t, uint32_t>> blocks;
        auto seq = [](uint64_t offset) { return uint32_t(kServerIsn + 1 + offset); };
        for (auto& r : runs)
            if (r.first <= latest && latest < r.second)
                blocks.push_back({seq(r.first), seq(r.second)});
        for (auto r = runs.rbegin(); r != runs.rend() && blocks.size() < 3; ++r)
            if (!(r->first <= latest && latest < r->second))
                blocks.push_back({seq(r->first), seq(r->second)});
        return blocks;
    }

    bool deliver_one() {
        std::deque<Packet>* queues[] = {&s2e_, &e2c_, &c2e_, &e2s_};
        std::vector<int> ready;
        for (int i = 0; i < 4; ++i)
            if (!queues[i]->empty()) ready.push_back(i);
        if (ready.empty()) return false;
        int which = ready[rng_() % ready.size()];
        Packet p = std::move(queues[which]->front());
        queues[which]->pop_front();
        DecodedPacket d;
        EXPECT_EQ(decode_packet(p, d), DecodeStatus::Ok);
        switch (which) {
            case 0:
                engine(p, false);
                break;
            case 1:
                client_receive(d);
                break;
            case 2:
                engine(p, true);
                break;
            case 3:
                server_receive(d);
                break;
        }
        return true;
    }

    static constexpr size_t kMss = 1000;
    std::string input_;
    WireOptions wire_;
    std::mt19937 rng_;
    GsoOutput gso_{true, true};
    FlowStream stream_;
    FrameLog frames_;
    uint64_t now_ = 1;
    uint32_t next_id_ = 1;
    std::map<uint32_t, Packet> held_;  // the kernel queue's held packets
    std::deque<Packet> s2e_, e2c_, c2e_, e2s_;

    size_t snd_una_ = 0, snd_nxt_ = 0, snd_max_ = 0;
    bool fin_sent_ = false, fin_ever_sent_ = false, server_fin_acked_ = false;
    bool send_fin_ = true;
    uint64_t last_progress_ = 0, rto_ = 200;

    std::map<uint64_t, char> seen_;
    std::string received_;
    std::optional<uint64_t> fin_at_;
    bool client_fin_ = false;
    bool client_reset_ = false, server_reset_ = false;
    bool acknowledging_ = true;
    size_t violations_ = 0;
    const std::string* expected_ = nullptr;
};

std::string random_text(std::mt19937& rng, size_t n) {
    std::string s(n, ' ');
    for (auto& c : s)
        c = char('A' + rng() % 26);
    return s;
}

const TokenReplacer::Replacements kTokens = {{"GROW", "GROWN-LONGER-TOKEN"}, {"SHRINKME", "S"}};

// At least `size` bytes of random text with a growing or shrinking token
// after every run of up to `gap` letters.
std::string token_text(std::mt19937& rng, size_t size, size_t gap) {
    std::string text;
    while (text.size() < size)
        text += random_text(rng, rng() % gap) + (rng() % 2 ? "GROW" : "SHRINKME");
    return text;
}

struct RelayCase {
    const char* name;
    WireOptions wire;
};

class RelayProperty : public ::testing::TestWithParam<RelayCase> {};

TEST_P(RelayProperty, ReceiverGetsExactlyTheInspectorsOutput) {
    uint64_t relays = 0, frames = 0;
    const char* env = getenv("NFQSCAN_RELAY_SEEDS");  // more for a soak run
    uint32_t seeds = env ? uint32_t(atoi(env)) : 20;
    const char* first = getenv("NFQSCAN_RELAY_FIRST_SEED");
    for (uint32_t seed = first ? uint32_t(atoi(first)) : 1; seed <= seeds; ++seed) {
        std::mt19937 rng(seed);
        std::string input = random_text(rng, 20'000 + rng() % 60'000);
        RandomRelay transform(seed * 7919);
        RelayedConnection c(input, transform, GetParam().wire, seed);
        c.expect(&transform.expected);
        ASSERT_TRUE(c.run()) << "seed " << seed << ": " << c.progress();
        if (GetParam().wire.gso) {
            frames += c.frames().multi_segment;
            EXPECT_EQ(c.frames().frames, c.stream().counters().relay_gso_frames +
                                             (c.frames().frames - c.frames().multi_segment));
            EXPECT_EQ(c.frames().multi_segment, c.stream().counters().relay_gso_frames);
        }
        EXPECT_EQ(c.violations(), 0u) << "seed " << seed;
        ASSERT_EQ(c.received().size(), transform.expected.size()) << "seed " << seed;
        EXPECT_TRUE(c.received() == transform.expected) << "seed " << seed;
        relays += c.stream().direction(Direction::ServerToClient).counters().relays;
    }
    EXPECT_GT(relays, 10u);
    if (GetParam().wire.gso) {
        EXPECT_GT(frames, 10u);
    }
}

INSTANTIATE_TEST_SUITE_P(
    Wires, RelayProperty,
    ::testing::Values(RelayCase{"clean", {}}, RelayCase{"loss", {0.05, 0, 0}},
                      RelayCase{"reorder", {0, 0, 0.2}}, RelayCase{"duplicates", {0, 0.1, 0}},
                      RelayCase{"everything", {0.05, 0.05, 0.1}},
                      RelayCase{"gso_clean", {0, 0, 0, true}},
                      RelayCase{"gso_loss", {0.05, 0, 0, true}},
                      RelayCase{"sack_loss", {0.05, 0, 0, false, true}},
                      RelayCase{"sack_everything", {0.05, 0.05, 0.1, true, true}},
                      RelayCase{"gso_everything", {0.05, 0.05, 0.1, true}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Relay, WholeStreamGoesOutAsGsoFrames) {
    std::mt19937 rng(42);
    std::string input = token_text(rng, 2'000'000, 200);
    const TokenReplacer::Replacements& tokens = kTokens;
    TokenReplacer replacer(tokens, true);
    std::string expected = TokenReplacer::apply(tokens, input);
    RelayedConnection c(input, replacer, {0, 0, 0, true}, 7);
    c.expect(&expected);
    ASSERT_TRUE(c.run()) << c.progress();
    EXPECT_EQ(c.violations(), 0u);
    EXPECT_TRUE(c.received() == expected);
    // Frames of many segments (the client's window is 64 KiB), never more
    // than an IP packet holds; far fewer frames than segments.
    const FrameLog& f = c.frames();
    EXPECT_GT(f.multi_segment, 0u);
    EXPECT_GE(f.largest, 30'000u);
    EXPECT_LE(f.largest, 65535u - 40);
    EXPECT_LT(f.frames * 10, c.stream().counters().relay_segments);
    EXPECT_EQ(f.fin_frames, 1u);
}

TEST(Relay, AFinishedRelayGivesItsMemoryBackWhenTheFinIsAcknowledged) {
    // A closed flow stays in the table for the closing timeout; its relay
    // store (the whole 2 MB response) must not count against the memory
    // cap all that time.
    std::mt19937 rng(42);
    std::string input = token_text(rng, 2'000'000, 200);
    TokenReplacer replacer(kTokens, true);
    RelayedConnection c(input, replacer, {0.01, 0.01, 0.02}, 7);
    ASSERT_TRUE(c.run()) << c.progress();
    EXPECT_TRUE(c.received() == TokenReplacer::apply(kTokens, input));
    const StreamDirection& s2c = c.stream().direction(Direction::ServerToClient);
    ASSERT_TRUE(s2c.fin_acknowledged());
    EXPECT_LT(c.stream().memory_bytes(), 64u << 10);
}

TEST(Relay, WholeStreamReplacedAtTheEnd) {
    std::mt19937 rng(42);
    std::string input = token_text(rng, 300'000, 200);
    const TokenReplacer::Replacements& tokens = kTokens;
    TokenReplacer replacer(tokens, true);
    RelayedConnection c(input, replacer, {0.02, 0.01, 0.05}, 7);
    ASSERT_TRUE(c.run()) << c.progress();
    EXPECT_EQ(c.violations(), 0u);
    EXPECT_TRUE(c.received() == TokenReplacer::apply(tokens, input));
    // Nothing reached the client before the server's FIN: one relay, from
    // the first byte to the end.
    EXPECT_EQ(c.stream().direction(Direction::ServerToClient).counters().relays, 1u);
}

TEST(Relay, BufferLimitStallsTheInspectorInsteadOfGrowing) {
    // A relay buffer smaller than the stream: the whole-stream replacer is
    // told to let bytes go when it is full; nothing is lost, and a token the
    // buffer's end cuts is still found whole (the replacer keeps its start).
    std::mt19937 rng(5);
    std::string input = token_text(rng, 200'000, 40);
    const TokenReplacer::Replacements& tokens = kTokens;
    TokenReplacer replacer(tokens, true);
    StreamLimits limits;
    limits.max_relay = 32 << 10;
    RelayedConnection c(input, replacer, {0.01, 0, 0}, 3, limits);
    ASSERT_TRUE(c.run()) << c.progress();
    EXPECT_TRUE(c.received() == TokenReplacer::apply(tokens, input));
    EXPECT_GT(c.stream().direction(Direction::ServerToClient).counters().stalls, 0u);
    EXPECT_LE(c.stream().memory_bytes(), 200u << 10);
}

// Relays every byte as soon as it comes (output delivered by the relay).
class RelayAll : public StreamTransform {
  public:
    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
        sink.relay(true);
        sink.pass(pending.size());
    }
};

TEST(RelayMemoryCap, AStoreThatCannotEndStaysUnderTheCapAndNothingLeaksRaw) {
    // The whole-stream replacer stores everything until the FIN, far more
    // than the cap: the store fills up to it, then new input is refused
    // (the owner resets such a flow once it no longer moves).
    std::mt19937 rng(11);
    std::string input = token_text(rng, 1'000'000, 200);
    TokenReplacer replacer(kTokens, true);
    test::MemoryCap cap(200'000);
    RelayedConnection c(input, replacer, {0.01, 0, 0.05}, 11, cap.limits());
    c.after_call = [&] { cap.settle(c.stream().memory_bytes()); };
    EXPECT_FALSE(c.run(20'000));
    EXPECT_TRUE(c.received().empty());
    const StreamDirection& s2c = c.stream().direction(Direction::ServerToClient);
    EXPECT_GT(s2c.counters().memory_refused, 0u);
    EXPECT_LT(s2c.input_next(), 200'000u);
    EXPECT_GT(cap.most, cap.share * 3 / 4);  // it did fill up
    EXPECT_LE(cap.most, cap.share);
}

TEST(RelayMemoryCap, OutputTheReceiverNeverAcknowledgesStaysUnderTheCap) {
    std::mt19937 rng(12);
    std::string input = random_text(rng, 1'000'000);
    RelayAll relay;
    test::MemoryCap cap(300'000);
    RelayedConnection c(input, relay, {}, 12, cap.limits());
    c.after_call = [&] { cap.settle(c.stream().memory_bytes()); };
    c.run_until_acked(50'000);
    c.stop_acknowledging();
    EXPECT_FALSE(c.run(20'000));
    const StreamDirection& s2c = c.stream().direction(Direction::ServerToClient);
    EXPECT_GT(s2c.counters().memory_refused, 0u);
    EXPECT_GT(cap.most, cap.share * 3 / 4);
    EXPECT_LE(cap.most, cap.share);
    EXPECT_EQ(input.compare(0, c.received().size(), c.received()), 0);
}

TEST(RelayMemoryCap, ARelayUnderTheCapCompletes) {
    for (uint32_t seed = 1; seed <= 5; ++seed) {
        std::mt19937 rng(seed);
        std::string input = random_text(rng, 1'000'000);
        RelayAll relay;
        test::MemoryCap cap(100'000);
        RelayedConnection c(input, relay, {0.02, 0.01, 0.05}, seed, cap.limits());
        c.after_call = [&] { cap.settle(c.stream().memory_bytes()); };
        ASSERT_TRUE(c.run()) << c.progress();
        EXPECT_TRUE(c.received() == input);
        EXPECT_LE(cap.most, cap.share) << "seed " << seed;
    }
}

TEST(Relay, AWindowOfferedIsNeverTakenBack) {
    // The sender was offered 6000 bytes beyond what it had sent; meanwhile
    // the store's room shrank (here: own bytes inserted; in general a
    // replacement that grew the output). What the sender sends within the
    // offer is taken: dropping it would look like loss and slow it down.
    // Beyond the offer and the room, segments are still dropped.
    TokenReplacer replacer(TokenReplacer::Replacements{{"GROW", "GROWN-LONGER-TOKEN"}}, true);
    StreamLimits limits;
    limits.max_relay = 10'000;
    StreamDirection d(replacer, limits);
    std::vector<SegmentVerdict> released;
    std::string bytes(4000, 'a');
    ASSERT_EQ(d.on_segment(1000, test::bytes_of(bytes), false, 1, released).kind,
              SegmentVerdict::Kind::Absorb);
    EXPECT_EQ(d.relay_room(), 6000u);
    d.note_window_offered(6000);
    d.insert(test::bytes_of(std::string(5000, 'x')));
    EXPECT_EQ(d.relay_room(), 1000u);

    EXPECT_EQ(d.on_segment(5000, test::bytes_of(std::string(5000, 'b')), false, 2, released).kind,
              SegmentVerdict::Kind::Absorb);
    EXPECT_EQ(d.counters().relay_full, 0u);
    // Offsets 9000..10100 end past the offer (10000) with the store full.
    EXPECT_EQ(d.on_segment(10000, test::bytes_of(std::string(1100, 'c')), false, 3, released).kind,
              SegmentVerdict::Kind::Drop);
    EXPECT_EQ(d.counters().relay_full, 1u);
}

// Passes everything as it comes.
class PassAll : public StreamTransform {
  public:
    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
        sink.pass(pending.size());
    }
};

TEST(Relay, OwnBytesReachTheReceiverInOrderAndShiftWhatFollows) {
    for (uint32_t seed = 1; seed <= 10; ++seed) {
        std::mt19937 rng(seed);
        std::string input = random_text(rng, 60'000);
        PassAll transform;
        RelayedConnection c(input, transform, {0.03, 0.02, 0.05}, seed);
        c.run_until_acked(20'000);
        const std::string reply = "550 Transfer refused by policy.\r\n";
        uint64_t at = c.send_own(reply);
        ASSERT_TRUE(c.run()) << "seed " << seed << ": " << c.progress();
        EXPECT_EQ(c.violations(), 0u) << "seed " << seed;
        std::string expected = input.substr(0, at) + reply + input.substr(at);
        EXPECT_TRUE(c.received() == expected) << "seed " << seed << ", inserted at " << at;
        EXPECT_EQ(c.stream().direction(Direction::ServerToClient).shift(), int64_t(reply.size()));
    }
}

// Relays everything, and holds the last part back until told.
class HoldTail : public StreamTransform {
  public:
    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override {
        sink.relay(true);
        if (push == Push::End) sink.pass(pending.size());
    }
};

TEST(Relay, ResetReachesBothPeersAtTheirNextSequence) {
    std::mt19937 rng(9);
    HoldTail transform;
    RelayedConnection c(random_text(rng, 50'000), transform, {}, 11);
    c.keep_open();
    EXPECT_FALSE(c.run(2000));  // the relay holds everything: no end in sight
    EXPECT_TRUE(c.stream().needs_engine());
    c.reset_now();
    c.drain();
    EXPECT_TRUE(c.client_reset());
    EXPECT_TRUE(c.server_reset());
    EXPECT_FALSE(c.client_fin());
    EXPECT_TRUE(c.received().empty());
    EXPECT_FALSE(c.stream().needs_engine());
}

TEST(RelayFrames, ContiguousSegmentsOfOneKindMergeUpToTheCap) {
    std::vector<RelaySegment> send;
    for (uint64_t at = 0; at < 10'000; at += 1000)
        send.push_back({at, at + 1000, false, false});
    // All ten: contiguous, full-sized, new.
    EXPECT_EQ(frame_run(send, 0, 0, 1000, 65000), 10u);
    // The cap: at most 4500 bytes, so four segments.
    EXPECT_EQ(frame_run(send, 0, 0, 1000, 4500), 4u);
    EXPECT_EQ(frame_run(send, 4, 4000, 1000, 4500), 4u);
    // The first segment partly acknowledged: it is short, the frame ends there.
    EXPECT_EQ(frame_run(send, 0, 300, 1000, 65000), 1u);

    // A gap splits.
    send[5] = {5500, 6500, false, false};
    EXPECT_EQ(frame_run(send, 0, 0, 1000, 65000), 5u);
    send[5] = {5000, 6000, false, false};
    // A retransmission next to new data splits.
    send[3].retransmission = true;
    EXPECT_EQ(frame_run(send, 0, 0, 1000, 65000), 3u);
    EXPECT_EQ(frame_run(send, 3, 3000, 1000, 65000), 1u);
    send[3].retransmission = false;
    // A short segment is the last of its frame.
    send[6].end = 6500;
    send[7] = {6500, 7500, false, false};
    EXPECT_EQ(frame_run(send, 0, 0, 1000, 65000), 7u);
    // The FIN ends the frame (on its last segment, or alone after it).
    send[6].end = 7000;
    send[7] = {7000, 8000, false, false};
    send[2].fin = true;
    EXPECT_EQ(frame_run(send, 0, 0, 1000, 65000), 3u);
    send[2].fin = false;
    std::vector<RelaySegment> with_fin = {{0, 1000}, {1000, 2000}, {2000, 2000, true}};
    EXPECT_EQ(frame_run(with_fin, 0, 0, 1000, 65000), 3u);
    // An empty segment without a FIN (never sent) does not join.
    std::vector<RelaySegment> empty = {{0, 1000}, {1000, 1000}};
    EXPECT_EQ(frame_run(empty, 0, 0, 1000, 65000), 1u);
}

// Sends the initial window of a 10 MB output, then `rounds` round trips
// (one every `step_ms`), each acknowledging the whole window in one ACK, as
// a receiver of GSO frames does. Returns what was acknowledged.
uint64_t whole_window_round_trips(RelaySender& sender, int rounds, uint64_t step_ms) {
    RelayOutput output{10'000'000, false};
    std::vector<RelaySegment> send;
    sender.pump(output, 0, send);
    EXPECT_EQ(send.size(), 10u);  // the initial window
    uint64_t acked = 0;
    for (int round = 0; round < rounds; ++round) {
        uint64_t window = sender.congestion_window();
        send.clear();
        acked += window;
        sender.on_ack(acked, false, 1 << 30, false, output, step_ms * (round + 1), send);
        EXPECT_EQ(sender.congestion_window(), 2 * window) << "round " << round;
    }
    return acked;
}

TEST(RelaySender, StretchAcksGrowTheWindowByTheBytesTheyAcknowledge) {
    // A receiver of GSO frames acknowledges dozens of segments at once: slow
    // start must count the bytes, not the ACKs.
    constexpr size_t kMss = 1000;
    RelaySender sender(0, 0, kMss, 0);
    whole_window_round_trips(sender, 4, 1);
    EXPECT_EQ(sender.congestion_window(), 160 * kMss);
}

TEST(RelaySender, TheNextRelayStartsFromTheWindowTheLastOneReachedUnlessIdleTooLong) {
    // A keep-alive connection relays each object anew: the next one starts
    // from the path the last one measured (RFC 5681 4.1), unless the
    // connection sat idle longer than a retransmission timeout.
    constexpr size_t kMss = 1000;
    RelaySender first(0, 0, kMss, 0);
    uint64_t acked = whole_window_round_trips(first, 4, 10);
    ASSERT_EQ(first.congestion_window(), 160 * kMss);
    RelayPathMemo memo = first.memo(40);
    ASSERT_TRUE(memo.srtt_ms);  // round trips were timed

    RelaySender soon(acked, acked, kMss, 40 + memo.rto_ms / 2, &memo);
    EXPECT_EQ(soon.congestion_window(), 160 * kMss);
    EXPECT_EQ(soon.rto_ms(), memo.rto_ms);
    std::vector<RelaySegment> send;
    RelayOutput more{acked + 1'000'000, false};
    soon.on_ack(acked, false, 1 << 30, false, more, 40 + memo.rto_ms / 2, send);
    soon.pump(more, 40 + memo.rto_ms / 2, send);
    uint64_t burst = 0;
    for (const RelaySegment& s : send)
        burst += s.end - s.begin;
    EXPECT_EQ(burst, 160 * kMss);  // no slow start from the initial window

    RelaySender later(acked, acked, kMss, 40 + memo.rto_ms + 1, &memo);
    EXPECT_EQ(later.congestion_window(), 10 * kMss);  // the restart window
    RelaySender fresh(acked, acked, kMss, 40);
    EXPECT_EQ(fresh.congestion_window(), 10 * kMss);
}

TEST(RelaySender, AReceiverAnsweringProbesIsProbedForeverOneThatFallsSilentIsGivenUp) {
    // RFC 9293 3.8.6.1: a receiver that keeps its window closed but answers
    // every probe must not be dropped. One that stops answering is gone.
    constexpr size_t kMss = 1000;
    RelaySender sender(0, 0, kMss, 0);
    RelayOutput output{100'000, false};
    std::vector<RelaySegment> send;
    uint64_t now = 0;
    sender.on_ack(0, false, 0, false, output, now, send);  // window closed
    int probes = 0;
    for (; probes < 3 * int(RelaySender::kMaxBackoffs); ++probes) {
        ASSERT_TRUE(sender.deadline()) << "probe " << probes;
        now = *sender.deadline();
        send.clear();
        sender.on_timer(output, now, send);
        ASSERT_FALSE(send.empty()) << "probe " << probes;
        // The receiver takes nothing and answers: its window is still 0.
        send.clear();
        sender.on_ack(0, false, 0, true, output, now + 1, send);
        ASSERT_FALSE(sender.gave_up()) << "after " << probes + 1 << " answered probes";
    }
    EXPECT_EQ(sender.rto_ms(), 60'000u);  // probes spaced by the backed-off timer
    // Silent from now on.
    for (uint32_t i = 0; i <= RelaySender::kMaxBackoffs && sender.deadline(); ++i) {
        now = *sender.deadline();
        send.clear();
        sender.on_timer(output, now, send);
    }
    EXPECT_TRUE(sender.gave_up());
}

// The output ranges of `send` that are retransmissions, as offsets.
std::vector<std::pair<uint64_t, uint64_t>> retransmitted(const std::vector<RelaySegment>& send) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (const RelaySegment& s : send)
        if (s.retransmission) out.push_back({s.begin, s.end});
    return out;
}

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

// A sender with ten 1000-byte segments of a 10000-byte output in flight.
struct TenSegmentsOut {
    static constexpr size_t kMss = 1000;
    RelaySender sender{0, 0, kMss, 0};
    RelayOutput output{10 * kMss, false};
    std::vector<RelaySegment> send;
    TenSegmentsOut() {
        sender.pump(output, 0, send);
        EXPECT_EQ(send.size(), 10u);
        send.clear();
    }
};

TEST(RelaySender, SackedDataIsNeverSentAgainOnlyTheHoles) {
    // Ten segments out; the second and the fifth are lost, the receiver
    // SACKs the rest as it comes. Recovery sends both holes, once each,
    // and nothing the receiver holds.
    TenSegmentsOut t;
    auto [sender, output, send] = std::tie(t.sender, t.output, t.send);
    sender.on_ack(1000, false, 1 << 20, false, output, 10, send);  // the first arrived
    Ranges sacked = {{2000, 4000}};
    sender.on_ack(1000, false, 1 << 20, true, output, 11, send, sacked);
    sacked = {{5000, 7000}, {2000, 4000}};
    sender.on_ack(1000, false, 1 << 20, true, output, 12, send, sacked);
    sacked = {{5000, 10000}, {2000, 4000}};
    sender.on_ack(1000, false, 1 << 20, true, output, 13, send, sacked);
    EXPECT_EQ(retransmitted(send), (Ranges{{1000, 2000}, {4000, 5000}}));
    EXPECT_EQ(sender.counters().fast_retransmits, 1u);
    EXPECT_EQ(sender.sacked(), (Ranges{{2000, 4000}, {5000, 10000}}));

    // The first hole arrives: a partial ACK, the other hole already went.
    send.clear();
    sender.on_ack(4000, false, 1 << 20, false, output, 20, send, Ranges{{5000, 10000}});
    EXPECT_TRUE(retransmitted(send).empty()) << retransmitted(send).size();
    EXPECT_EQ(sender.sacked(), (Ranges{{5000, 10000}}));
    send.clear();
    sender.on_ack(10000, false, 1 << 20, false, output, 21, send);
    EXPECT_TRUE(sender.done(output));
    EXPECT_TRUE(sender.sacked().empty());
}

TEST(RelaySender, AfterATimeoutTheGoBackSkipsWhatTheReceiverHolds) {
    TenSegmentsOut t;
    auto [sender, output, send] = std::tie(t.sender, t.output, t.send);
    // Only two ACKs come back, each SACKing part of what followed a loss:
    // not enough for a fast retransmit.
    sender.on_ack(0, false, 1 << 20, true, output, 5, send, Ranges{{3000, 4000}});
    sender.on_ack(0, false, 1 << 20, true, output, 6, send, Ranges{{3000, 4000}, {6000, 7000}});
    EXPECT_TRUE(retransmitted(send).empty());
    ASSERT_TRUE(sender.deadline());
    uint64_t now = *sender.deadline();
    send.clear();
    sender.on_timer(output, now, send);
    EXPECT_EQ(retransmitted(send), (Ranges{{0, 1000}}));
    // Each ACK opens the window; what went again never includes a SACKed byte.
    Ranges all;
    for (uint64_t acked = 1000; acked <= 3000; acked += 1000) {
        send.clear();
        sender.on_ack(acked, false, 1 << 20, false, output, ++now, send,
                      Ranges{{3000, 4000}, {6000, 7000}});
        for (auto r : retransmitted(send))
            all.push_back(r);
    }
    for (auto [begin, end] : all) {
        EXPECT_FALSE(begin < 4000 && end > 3000) << begin << "-" << end;
        EXPECT_FALSE(begin < 7000 && end > 6000) << begin << "-" << end;
    }
    EXPECT_GE(sender.counters().sack_skipped, 1000u);
}

TEST(Relay, SackBlocksCutWhatTheRelaySendsAgainUnderLoss) {
    // The same streams over the same lossy wire, with and without the
    // client's SACK blocks: exact either way, and fewer retransmitted
    // segments with them (measured: 100 against 144).
    uint64_t with = 0, without = 0;
    for (uint32_t seed = 1; seed <= 12; ++seed) {
        for (bool sack : {false, true}) {
            std::mt19937 rng(seed);
            std::string input = random_text(rng, 60'000 + rng() % 40'000);
            RandomRelay transform(seed * 7919);
            // 10 %: at 5 % losses come one per window, where a fast retransmit
            // alone repairs them and SACK changes nothing.
            WireOptions wire{0.10, 0, 0, false, sack};
            RelayedConnection c(input, transform, wire, seed);
            c.expect(&transform.expected);
            ASSERT_TRUE(c.run()) << "seed " << seed << (sack ? " sack: " : ": ") << c.progress();
            ASSERT_TRUE(c.received() == transform.expected) << "seed " << seed;
            EXPECT_EQ(c.violations(), 0u);
            (sack ? with : without) += c.stream().counters().relay_retransmissions;
        }
    }
    EXPECT_LT(with, without) << "retransmitted segments: " << with << " with SACK, " << without
                             << " without";
    std::cout << "relay retransmissions over 12 lossy streams: " << with << " with SACK, "
              << without << " without\n";
}

}  // namespace
}  // namespace nfqscan
