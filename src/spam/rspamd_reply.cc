// rspamd's /checkv2 reply -> a verdict (nfqscan/spam.h).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "nfqscan/spam.h"

namespace nfqscan {

namespace {

constexpr size_t kMaxSymbolsListed = 10;
constexpr size_t kMaxSymbolText = 400;

// The symbols that added most to the score, "GTUBE(0.00), ...": what the
// event and the X-Spam-Report header show.
std::string top_symbols(const nlohmann::json& symbols) {
    if (!symbols.is_object()) return {};
    std::vector<std::pair<double, std::string>> all;
    for (const auto& [name, symbol] : symbols.items()) {
        double score = 0;
        if (symbol.is_object()) {
            auto it = symbol.find("score");
            if (it != symbol.end() && it->is_number()) score = it->get<double>();
        }
        all.emplace_back(score, name);
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    std::string out;
    for (size_t i = 0; i < all.size() && i < kMaxSymbolsListed; ++i) {
        char score[32];
        std::snprintf(score, sizeof score, "%.2f", all[i].first);
        std::string item = all[i].second + "(" + score + ")";
        if (out.size() + item.size() + 2 > kMaxSymbolText) break;
        out += (out.empty() ? "" : ", ") + item;
    }
    return out;
}

}  // namespace

std::string_view spam_engine_name(SpamConfig::Engine e) {
    return e == SpamConfig::Engine::Rspamd ? "rspamd" : "none";
}

ScanVerdict parse_rspamd_reply(std::string_view body, double threshold) {
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return ScanVerdict::failed(ScanError::EngineNotReady, "rspamd: a reply that is not JSON");
    auto action_it = j.find("action");
    auto score_it = j.find("score");
    if (action_it == j.end() || !action_it->is_string() || score_it == j.end() ||
        !score_it->is_number())
        return ScanVerdict::failed(ScanError::EngineNotReady,
                                   "rspamd: a reply without action and score");
    const std::string action = action_it->get<std::string>();
    const double score = score_it->get<double>();
    if (!std::isfinite(score))
        return ScanVerdict::failed(ScanError::EngineNotReady, "rspamd: a score out of range");
    const bool spam =
        threshold > 0 ? score >= threshold
                      : action == "reject" || action == "add header" || action == "rewrite subject";
    if (!spam) return ScanVerdict::clean();
    Detection d;
    d.engine = ScanEngineKind::Rspamd;
    d.category = ThreatCategory::Spam;
    d.signature = "rspamd: " + action.substr(0, 64);
    auto symbols = j.find("symbols");
    if (symbols != j.end()) d.layer_path = top_symbols(*symbols);
    d.score = score;
    return ScanVerdict::infected(std::move(d));
}

}  // namespace nfqscan
