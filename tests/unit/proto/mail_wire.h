// The mail inspectors (POP3, IMAP) against a simulated engine: a wire that
// plays the StreamTransform contract of tcp_stream.h (pending bytes per
// direction, relay, More / Stalled / End) and the worker's handling of the
// host's requests (send(): own bytes after the output mapped so far, right
// after the current call; redrive(): both directions shown their pending
// bytes again), delivering the peers' bytes in random pieces; and a fake
// host that records what the inspector asks of it.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "nfqscan/inspector.h"

namespace nfqscan::mailtest {

using Push = StreamTransform::Push;
inline constexpr auto C2S = Direction::ClientToServer;
inline constexpr auto S2C = Direction::ServerToClient;

inline std::span<const uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string text_of(std::span<const uint8_t> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

inline const std::string kEicar =
    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

inline ScanVerdict virus(std::string name = "Eicar-Test-Signature") {
    Detection d;
    d.signature = std::move(name);
    return ScanVerdict::infected(d);
}

class Wire;

class FakeHost : public InspectorHost {
  public:
    struct Scan {
        uint64_t id;
        ObjectInfo info;
        std::string bytes;
        bool answered = false;
    };
    struct Record {
        ObjectInfo info;
        std::string what;  // signature or category
        std::string action;
        std::string event_id;
        std::string reason = {};  // fallbacks
    };

    Wire* wire = nullptr;
    ProtocolPolicy policy_;
    MessageTemplates templates_;
    ScanLimits limits_;
    std::vector<Scan> scans;
    std::vector<Record> records;
    std::vector<Record> fallbacks;
    std::vector<Notification> notifications;
    std::map<std::string, uint64_t> counted;  // count(): the inspector's own counters
    int resets = 0;
    int redrives = 0;
    std::vector<ReleaseReason> releases;
    int events = 0;

    void scan(uint64_t id, const ObjectInfo& info,
              std::shared_ptr<const ObjectBuffer> bytes) override {
        EXPECT_GE(bytes->fd(), 0);
        for (const Scan& s : scans)
            EXPECT_NE(s.id, id) << "scan id used twice";
        scans.push_back({id, info, std::string(bytes->bytes().begin(), bytes->bytes().end())});
    }
    std::string record(const ObjectInfo& info, const ScanVerdict& verdict,
                       std::string_view action) override {
        std::string id = "ev-" + std::to_string(++events);
        std::string what = verdict.is_infected() ? verdict.detection.signature
                                                 : std::string(scan_error_name(verdict.error));
        records.push_back({info, what, std::string(action), id});
        return id;
    }
    std::string record_fallback(const ObjectInfo& info, Category category, std::string_view reason,
                                std::string_view action) override {
        std::string id = "ev-" + std::to_string(++events);
        fallbacks.push_back({info, std::string(category_name(category)), std::string(action), id,
                             std::string(reason)});
        return id;
    }
    void send_and_close(Direction, std::span<const uint8_t>) override {
        ADD_FAILURE() << "send_and_close()";
    }
    void reset_both() override;
    void send(Direction d, std::span<const uint8_t> bytes) override;
    // notify_sender_on_*: the header's Return-Path or From is told.
    void notify(Notification n) override { notifications.push_back(std::move(n)); }
    void count(std::string_view name, uint64_t n) override { counted[std::string(name)] += n; }
    void redrive() override;
    void note_allowlisted(const ObjectInfo&) override {}
    void release(ReleaseReason reason) override;
    const ProtocolPolicy& policy() const override { return policy_; }
    const MessageTemplates& messages() const override { return templates_; }
    const ScanLimits& limits() const override { return limits_; }
    std::string render_message(std::string_view name, const MessageFields& f) const override {
        return std::string(name) + ": detection=" + f.detection + " category=" + f.category +
               " object=" + f.object + " id=" + f.event_id + " sender=" + f.sender +
               " recipients=" + f.recipients + " action=" + f.action + "\n";
    }
    MessageFields message_fields() const override {
        MessageFields f;
        f.client = "10.0.0.1:40000";
        f.server = "10.0.0.2:110";
        f.protocol = "pop3";
        return f;
    }
    uint64_t now_ms() const override { return 1'000'000; }
    void want_ticks(bool) override {}
};

// The engine's side of the contract, for both directions of one flow.
class Wire {
  public:
    struct Dir {
        std::string pending;  // input not mapped yet
        uint64_t offset = 0;  // input offset of pending[0]
        std::string output;   // what the receiver gets
        bool relay = false;
        bool fin = false;
        size_t overmapped = 0;  // pass()/replace() beyond the bytes shown
    };

    Wire(Inspector& inspector, FakeHost& host) : inspector_(inspector) { host.wire = this; }

    Dir& dir(Direction d) { return dirs_[size_t(d)]; }
    const std::string& out(Direction d) { return dir(d).output; }
    bool closed() const { return closed_; }
    bool released() const { return released_; }
    void release() { released_ = true; }

    void deliver(Direction d, const std::string& bytes, bool fin = false) {
        Dir& s = dir(d);
        s.pending += bytes;
        if (fin) s.fin = true;
        feed(d, fin ? Push::End : Push::More);
    }
    // `bytes` in random pieces of 1..max_piece bytes, some of them 1 byte.
    void send(Direction d, const std::string& bytes, std::mt19937& rng, size_t max_piece = 64) {
        size_t at = 0;
        while (at < bytes.size()) {
            size_t n = rng() % 4 == 0 ? 1 : 1 + rng() % max_piece;
            n = std::min(n, bytes.size() - at);
            deliver(d, bytes.substr(at, n));
            at += n;
        }
    }
    void fin(Direction d) { deliver(d, "", true); }
    void stall(Direction d) { feed(d, Push::Stalled); }
    // After a verdict: both directions are shown their pending bytes again.
    void redrive() {
        ++depth_;
        feed(C2S, dir(C2S).fin ? Push::End : Push::More);
        feed(S2C, dir(S2C).fin ? Push::End : Push::More);
        --depth_;
        settle();
    }
    void close() { closed_ = true; }
    void own(Direction d, const std::string& bytes) { own_[size_t(d)] += bytes; }
    void want_redrive() { redrive_ = true; }

  private:
    class Sink : public StreamSink {
      public:
        Sink(Dir& d) : d_(d) {}
        void pass(size_t n) override {
            d_.overmapped += n - std::min(n, d_.pending.size() - consumed);
            n = std::min(n, d_.pending.size() - consumed);
            d_.output += d_.pending.substr(consumed, n);
            consumed += n;
        }
        void replace(size_t n, std::span<const uint8_t> bytes) override {
            d_.overmapped += n - std::min(n, d_.pending.size() - consumed);
            consumed += std::min(n, d_.pending.size() - consumed);
            d_.output += text_of(bytes);
        }
        void relay(bool on) override { d_.relay = on; }
        size_t consumed = 0;

      private:
        Dir& d_;
    };

    void feed(Direction d, Push push) {
        Dir& s = dir(d);
        if (closed_) return;
        if (released_) {
            // Released: the host passes every byte without the inspector.
            s.output += s.pending;
            s.offset += s.pending.size();
            s.pending.clear();
            return;
        }
        if (!s.pending.empty()) {
            ++depth_;
            Sink sink(s);
            inspector_.transform(d).on_bytes(s.offset, bytes_of(s.pending), push, sink);
            --depth_;
            size_t left = s.pending.size() - sink.consumed;
            size_t forced = 0;
            if (closed_) {
                // Input not mapped by then is dropped with the flow.
            } else if (push == Push::End && !s.relay) {
                forced = left;
            }
            s.output += s.pending.substr(sink.consumed, forced);
            size_t done = sink.consumed + forced;
            s.pending.erase(0, done);
            s.offset += done;
        }
        settle();
    }
    // The worker's settle(): own bytes, then a redrive (a few rounds at most).
    void settle() {
        if (depth_ > 0) return;
        for (int round = 0; round < 8; ++round) {
            for (Direction d : {C2S, S2C}) {
                dir(d).output += own_[size_t(d)];
                own_[size_t(d)].clear();
            }
            if (!redrive_ || closed_) return;
            redrive_ = false;
            redrive();
        }
    }

    Inspector& inspector_;
    Dir dirs_[2];
    std::string own_[2];
    bool redrive_ = false;
    bool closed_ = false;
    bool released_ = false;
    int depth_ = 0;
};

inline void FakeHost::reset_both() {
    ++resets;
    wire->close();
}
inline void FakeHost::send(Direction d, std::span<const uint8_t> bytes) {
    wire->own(d, text_of(bytes));
}
inline void FakeHost::release(ReleaseReason reason) {
    releases.push_back(reason);
    wire->release();
}
inline void FakeHost::redrive() {
    ++redrives;
    wire->want_redrive();
}

// One flow of inspector type T.
template <typename T>
struct MailFlow {
    FakeHost host;
    std::unique_ptr<T> inspector = std::make_unique<T>(host);
    Wire wire{*inspector, host};
    std::mt19937 rng{1};

    // Answers scan `index` (and then shows both directions their bytes).
    void verdict(size_t index, const ScanVerdict& v) {
        host.scans.at(index).answered = true;
        inspector->on_verdict(host.scans.at(index).id, v);
        wire.redrive();
    }
    // Answers every scan not answered yet, those it starts too (the parts
    // of an infected message): infected when the scanned bytes hold the
    // EICAR string, clean otherwise.
    void answer_all() {
        for (size_t i = 0; i < host.scans.size(); ++i) {
            if (host.scans[i].answered) continue;
            bool eicar = host.scans[i].bytes.find(kEicar) != std::string::npos;
            verdict(i, eicar ? virus() : ScanVerdict::clean());
        }
    }
    size_t unanswered() const {
        size_t n = 0;
        for (const auto& s : host.scans)
            n += !s.answered;
        return n;
    }
    void client(const std::string& s, size_t piece = 64) { wire.send(C2S, s, rng, piece); }
    void server(const std::string& s, size_t piece = 64) { wire.send(S2C, s, rng, piece); }
};

}  // namespace nfqscan::mailtest
