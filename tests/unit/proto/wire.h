// Wire: the stream engine's and the worker's side of the StreamTransform
// contract (include/nfqscan/tcp_stream.h) for both directions of one flow,
// for the inspectors' unit tests (HTTP, SMTP, POP3, IMAP): pending bytes per
// direction delivered in random pieces, pass / replace / relay applied as
// the engine applies them, the engine's forced maps (at the End, beyond a
// pending limit), bytes of the inspector's own after the output mapped so
// far (host.send()), redrives after the current call (host.redrive()), a
// close and a release. The test's fake host points its `wire` at it.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/inspector.h"

namespace nfqscan::wiretest {

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

// A spam verdict of `engine` (the project's YARA test rule by default).
inline ScanVerdict spam_verdict(ScanEngineKind engine = ScanEngineKind::Yara,
                                std::string signature = "NfqScan_Test_Spam_Marker",
                                std::string layer = {}, std::optional<double> score = {}) {
    return ScanVerdict::infected(
        {engine, std::move(signature), std::move(layer), ThreatCategory::Spam, score});
}

// What the inspectors' fake hosts share: the scans asked for (each id
// once, the object in a memory file a scanner process can map) and the
// event log (verdicts and fallbacks), with event ids the templates show.
class RecordingHost : public InspectorHost {
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

    std::vector<Scan> scans;
    std::vector<Record> records;
    std::vector<Record> fallbacks;
    int events = 0;
    bool keep = false;  // quarantining(): inspectors attach ObjectInfo::original

    bool quarantining() const override { return keep; }

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
};

class Wire {
  public:
    struct Dir {
        std::string pending;  // input not mapped yet
        uint64_t offset = 0;  // input offset of pending[0]
        std::string output;   // what the receiver gets
        bool relay = false;
        bool fin = false;
        size_t forced = 0;      // bytes the engine mapped itself (limits, FIN)
        size_t overmapped = 0;  // pass()/replace() beyond the bytes shown (trimmed)
    };

    // `pending_limit`: unmapped input beyond it goes on unchanged unless the
    // inspector relays ([stream] pending_limit); 0: no limit.
    template <typename Host>
    Wire(Inspector& inspector, Host& host, size_t pending_limit = 0)
        : inspector_(inspector), pending_limit_(pending_limit) {
        host.wire = this;
    }

    Dir& dir(Direction d) { return dirs_[size_t(d)]; }
    const std::string& out(Direction d) { return dir(d).output; }
    bool closed() const { return closed_; }
    bool released() const { return released_; }
    void set_pending_limit(size_t limit) { pending_limit_ = limit; }
    // What the inspector mapped after the flow was closed (must stay 0).
    size_t mapped_after_close() const { return mapped_after_close_; }

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
    // The flow ends (reset_both, send_and_close): the receiver of `d` gets
    // `bytes` last; input not mapped by then is dropped.
    void close_with(Direction d, const std::string& bytes) {
        closed_ = true;
        dir(d).output += bytes;
    }
    void close() { close_with(C2S, ""); }
    // host.release(): every byte passes without the inspector from now on.
    void release() { released_ = true; }
    // host.send(): after the output mapped so far, once the current call returns.
    void own(Direction d, const std::string& bytes) { own_[size_t(d)] += bytes; }
    // host.redrive(): both directions again once the current call returns.
    void want_redrive() { redrive_ = true; }

  private:
    class Sink : public StreamSink {
      public:
        explicit Sink(Dir& d) : d_(d) {}
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
        if (released_ && !closed_) {
            // Released: the host passes every byte without the inspector.
            s.output += s.pending;
            s.offset += s.pending.size();
            s.pending.clear();
            return;
        }
        if (!s.pending.empty()) {
            ++depth_;
            Sink sink(s);
            bool was_closed = closed_;
            inspector_.transform(d).on_bytes(s.offset, bytes_of(s.pending), push, sink);
            --depth_;
            if (was_closed) mapped_after_close_ += sink.consumed;
            size_t left = s.pending.size() - sink.consumed;
            size_t forced = 0;
            if (closed_) {
                // Input not mapped by then is dropped with the flow.
            } else if (push == Push::End && !s.relay) {
                forced = left;
            } else if (pending_limit_ > 0 && !s.relay && left > pending_limit_) {
                forced = left - pending_limit_;
            }
            s.output += s.pending.substr(sink.consumed, forced);
            s.forced += forced;
            size_t done = sink.consumed + forced;
            s.pending.erase(0, done);
            s.offset += done;
        }
        settle();
    }
    // The worker after each call: own bytes, then a redrive (a few rounds at
    // most).
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
    size_t pending_limit_;
    Dir dirs_[2];
    std::string own_[2];
    bool redrive_ = false;
    bool closed_ = false;
    bool released_ = false;
    size_t mapped_after_close_ = 0;
    int depth_ = 0;
};

}  // namespace nfqscan::wiretest
