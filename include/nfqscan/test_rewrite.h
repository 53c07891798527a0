// The test inspector ([test_rewrite], accepted only with
// --allow-test-inspectors): replaces every occurrence of configured tokens in
// a stream, also across segment boundaries, so the lab can check what the
// stream engine delivers against a known transformation. Not for production.
// With `relay`, each direction it inspects is stored whole (to the FIN, or
// until the relay buffer is full) and replaced in the buffer, exercising the
// engine's store-and-forward path.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nfqscan/tcp_stream.h"

namespace nfqscan {

class TokenReplacer : public StreamTransform {
  public:
    using Replacements = std::vector<std::pair<std::string, std::string>>;
    // `relay`: store and forward the whole stream (up to the relay limit) and
    // replace in the buffer at its end; otherwise replace as bytes pass.
    explicit TokenReplacer(Replacements replacements, bool relay = false);

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;

    // The same transformation applied to a whole buffer at once: what the
    // receiver must end up with.
    static std::string apply(const Replacements& replacements, const std::string& input);

  private:
    Replacements replacements_;
    size_t longest_ = 0;
    bool relay_ = false;
};

// Relays a direction unchanged, as the bytes come: the store-and-forward
// machinery (acknowledging the sender, delivering to the receiver) without
// waiting for anything, e.g. for uploads in the lab.
class RelayForwarder : public StreamTransform {
  public:
    void on_bytes(uint64_t, std::span<const uint8_t> pending, Push, StreamSink& sink) override {
        sink.relay(true);
        sink.pass(pending.size());
    }
};

}  // namespace nfqscan
