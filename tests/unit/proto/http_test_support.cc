// TEST STAND-IN UNTIL src/policy LANDS: delete this file at the merge.
// The policy module (include/nfqscan/policy.h) is implemented on another
// branch; the HTTP inspector's tests need these five symbols to link:
//   nfqscan::ProtocolPolicy::default_fallbacks()
//   nfqscan::ProtocolPolicy::decide(const ScanVerdict&) const
//   nfqscan::ProtocolPolicy::allowlisted(std::string_view, std::string_view) const
//   nfqscan::category_name(Category)
//   nfqscan::category_of(ScanError)
// They follow policy.h's comments, nothing more.
#include <array>

#include "nfqscan/policy.h"

namespace nfqscan {

std::array<Action, kCategoryCount> ProtocolPolicy::default_fallbacks() {
    std::array<Action, kCategoryCount> a;
    a.fill(Action::Pass);
    a[size_t(Category::TooManyRequests)] = Action::Block;
    a[size_t(Category::ProtocolError)] = Action::Block;
    return a;
}

Action ProtocolPolicy::decide(const ScanVerdict& verdict) const {
    if (verdict.is_clean()) return Action::Pass;
    if (verdict.is_infected()) {
        switch (verdict.detection.category) {
            case ThreatCategory::Virus:
                return on_virus;
            case ThreatCategory::Policy:
                return on_policy;
            case ThreatCategory::Spam:
                return Action::Pass;
        }
    }
    return fallback_for(category_of(verdict.error));
}

bool ProtocolPolicy::allowlisted(std::string_view host, std::string_view url) const {
    for (const std::string& h : allow_hosts) {
        if (h == host) return true;
        if (h.starts_with('.') && host.ends_with(h)) return true;
    }
    for (const std::string& u : allow_urls)
        if (url.starts_with(u)) return true;
    return false;
}

std::string_view category_name(Category c) {
    static constexpr std::array<std::string_view, kCategoryCount> kNames = {
        "content-size",     "decompress-layer", "timeout",           "encrypted", "corrupt",
        "engine-not-ready", "out-of-resource",  "too-many-requests", "partial",   "protocol-error"};
    return kNames[size_t(c)];
}

Category category_of(ScanError e) {
    return Category(uint8_t(e));  // the first eight categories are ScanError's, in order
}

}  // namespace nfqscan
