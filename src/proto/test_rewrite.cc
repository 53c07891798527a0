#include "nfqscan/test_rewrite.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

namespace nfqscan {

namespace {

struct Match {
    size_t position;
    size_t which;
};

// The earliest occurrence of any token at or after a position that only
// moves forward (ties: the first configured token), as a whole-buffer scan
// would find it. Each token's next occurrence is remembered and searched
// again only once the position passed it, so the text is read once per
// token, not once per token and match.
class TokenFinder {
  public:
    TokenFinder(std::string_view text, const TokenReplacer::Replacements& replacements)
        : text_(text), replacements_(replacements) {
        for (const auto& [token, _] : replacements)
            next_.push_back(token.empty() ? std::string_view::npos : text.find(token));
    }

    std::optional<Match> next(size_t from) {
        std::optional<Match> best;
        for (size_t i = 0; i < replacements_.size(); ++i) {
            if (next_[i] == std::string_view::npos) continue;
            if (next_[i] < from) next_[i] = text_.find(replacements_[i].first, from);
            if (next_[i] != std::string_view::npos && (!best || next_[i] < best->position))
                best = Match{next_[i], i};
        }
        return best;
    }

  private:
    std::string_view text_;
    const TokenReplacer::Replacements& replacements_;
    std::vector<size_t> next_;  // each token's next occurrence (npos: none left)
};

}  // namespace

TokenReplacer::TokenReplacer(Replacements replacements, bool relay)
    : replacements_(std::move(replacements)), relay_(relay) {
    for (const auto& [token, _] : replacements_)
        longest_ = std::max(longest_, token.size());
}

void TokenReplacer::on_bytes(uint64_t, std::span<const uint8_t> pending, Push push,
                             StreamSink& sink) {
    if (relay_) {
        // Everything is stored until the end; a full buffer is let go
        // (but for a possible token start), like the pass mode does.
        sink.relay(push != Push::End);
        if (push == Push::More) return;
    }
    std::string_view text(reinterpret_cast<const char*>(pending.data()), pending.size());
    // While more bytes may come, the first position whose rest is a proper
    // prefix of a token must wait: a match starting there (or a longer one
    // than what completes later) would be what a whole-buffer scan finds.
    // A full relay store (Stalled while relaying) is such a case too: the
    // engine acknowledges the sender itself, so nothing waits on those bytes.
    // In pass mode Stalled means the sender waits for them: all must go.
    bool more_may_come = push == Push::More || (relay_ && push == Push::Stalled);
    size_t hold_from = text.size();
    if (more_may_come && longest_ > 1) {
        size_t first = text.size() > longest_ - 1 ? text.size() - (longest_ - 1) : 0;
        for (size_t q = first; q < text.size() && hold_from == text.size(); ++q) {
            std::string_view tail = text.substr(q);
            for (const auto& [token, _] : replacements_)
                if (token.size() > tail.size() && token.compare(0, tail.size(), tail) == 0)
                    hold_from = q;
        }
    }
    size_t done = 0;
    TokenFinder finder(text, replacements_);
    while (auto m = finder.next(done)) {
        if (m->position >= hold_from) break;
        sink.pass(m->position - done);
        const auto& [token, replacement] = replacements_[m->which];
        sink.replace(token.size(),
                     {reinterpret_cast<const uint8_t*>(replacement.data()), replacement.size()});
        done = m->position + token.size();
    }
    if (hold_from > done) sink.pass(hold_from - done);
}

std::string TokenReplacer::apply(const Replacements& replacements, const std::string& input) {
    std::string out;
    size_t done = 0;
    TokenFinder finder(input, replacements);
    while (auto m = finder.next(done)) {
        out.append(input, done, m->position - done);
        out += replacements[m->which].second;
        done = m->position + replacements[m->which].first.size();
    }
    out.append(input, done);
    return out;
}

}  // namespace nfqscan
