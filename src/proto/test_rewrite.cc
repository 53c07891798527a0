#include "nfqscan/test_rewrite.h"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace nfqscan {

namespace {

struct Match {
    size_t position;
    size_t which;
};

// The earliest occurrence of any token at or after `from` (ties: the first
// configured token), as a whole-buffer scan would find it.
std::optional<Match> find_first(std::string_view text, size_t from,
                                const TokenReplacer::Replacements& replacements) {
    std::optional<Match> best;
    for (size_t i = 0; i < replacements.size(); ++i) {
        const std::string& token = replacements[i].first;
        if (token.empty()) continue;
        size_t p = text.find(token, from);
        if (p != std::string_view::npos && (!best || p < best->position)) best = Match{p, i};
    }
    return best;
}

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
    size_t hold_from = text.size();
    if (push == Push::More && longest_ > 1) {
        size_t first = text.size() > longest_ - 1 ? text.size() - (longest_ - 1) : 0;
        for (size_t q = first; q < text.size() && hold_from == text.size(); ++q) {
            std::string_view tail = text.substr(q);
            for (const auto& [token, _] : replacements_)
                if (token.size() > tail.size() && token.compare(0, tail.size(), tail) == 0)
                    hold_from = q;
        }
    }
    size_t done = 0;
    while (auto m = find_first(text, done, replacements_)) {
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
    while (auto m = find_first(input, done, replacements)) {
        out.append(input, done, m->position - done);
        out += replacements[m->which].second;
        done = m->position + replacements[m->which].first.size();
    }
    out.append(input, done);
    return out;
}

}  // namespace nfqscan
