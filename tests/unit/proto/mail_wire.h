// The mail inspectors (POP3, IMAP) against a simulated engine (wire.h: the
// engine's and the worker's side of the StreamTransform contract), with a
// fake host that records what the inspector asks of it.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "nfqscan/inspector.h"
#include "wire.h"

namespace nfqscan::mailtest {

using wiretest::bytes_of;
using wiretest::C2S;
using wiretest::kEicar;
using wiretest::Push;
using wiretest::S2C;
using wiretest::text_of;
using wiretest::virus;
using wiretest::Wire;

class FakeHost : public wiretest::RecordingHost {
  public:
    Wire* wire = nullptr;
    ProtocolPolicy policy_;
    MessageTemplates templates_;
    ScanLimits limits_;
    std::vector<Notification> notifications;
    std::map<std::string, uint64_t> counted;  // count(): the inspector's own counters
    int resets = 0;
    int redrives = 0;
    std::vector<ReleaseReason> releases;

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
