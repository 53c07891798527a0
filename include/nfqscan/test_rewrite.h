// The test inspector ([test_rewrite], accepted only with
// --allow-test-inspectors): replaces every occurrence of configured tokens in
// a stream, also across segment boundaries, so the lab can check what the
// stream engine delivers against a known transformation. Not for production.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nfqscan/tcp_stream.h"

namespace nfqscan {

class TokenReplacer : public StreamTransform {
  public:
    using Replacements = std::vector<std::pair<std::string, std::string>>;
    explicit TokenReplacer(Replacements replacements);

    void on_bytes(uint64_t offset, std::span<const uint8_t> pending, Push push,
                  StreamSink& sink) override;

    // The same transformation applied to a whole buffer at once: what the
    // receiver must end up with.
    static std::string apply(const Replacements& replacements, const std::string& input);

  private:
    Replacements replacements_;
    size_t longest_ = 0;
};

}  // namespace nfqscan
