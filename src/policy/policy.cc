// ProtocolPolicy: verdict -> action, fallbacks by category, HTTP allowlists.
#include "nfqscan/policy.h"

#include <algorithm>
#include <cctype>

namespace nfqscan {
namespace {

constexpr std::array<std::string_view, kCategoryCount> kCategoryNames = {
    "content-size",     "decompress-layer", "timeout",           "encrypted", "corrupt",
    "engine-not-ready", "out-of-resource",  "too-many-requests", "partial",   "protocol-error"};

char lower(char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return lower(x) == lower(y); });
}

bool iends_with(std::string_view text, std::string_view suffix) {
    return text.size() >= suffix.size() &&
           iequals(text.substr(text.size() - suffix.size()), suffix);
}

// "Example.COM:8080" -> "Example.COM", "[2001:db8::1]:80" -> "2001:db8::1";
// a trailing dot (an absolute name) is dropped too.
std::string_view host_only(std::string_view host) {
    if (host.starts_with('[')) {
        const size_t close = host.find(']');
        return close == std::string_view::npos ? host.substr(1) : host.substr(1, close - 1);
    }
    const size_t colon = host.find(':');
    // More than one colon: a bare IPv6 address, which has no port.
    if (colon != std::string_view::npos && host.find(':', colon + 1) == std::string_view::npos)
        host = host.substr(0, colon);
    if (host.ends_with('.')) host.remove_suffix(1);
    return host;
}

// A URL split where its case rules change: "scheme://authority" compares
// without case, the rest (path and query) exactly.
struct UrlParts {
    std::string_view scheme;
    std::string_view authority;  // without a default port (:80 for http, :443 for https)
    std::string_view rest;       // from the first '/', '?' or '#' after the authority
};

std::optional<UrlParts> split_url(std::string_view url) {
    const size_t sep = url.find("://");
    if (sep == std::string_view::npos || sep == 0) return std::nullopt;
    UrlParts p;
    p.scheme = url.substr(0, sep);
    const std::string_view after = url.substr(sep + 3);
    const size_t end = after.find_first_of("/?#");
    p.authority = after.substr(0, end);
    p.rest = end == std::string_view::npos ? std::string_view{} : after.substr(end);
    if (p.authority.empty()) return std::nullopt;
    if ((iequals(p.scheme, "http") && iends_with(p.authority, ":80")) ||
        (iequals(p.scheme, "https") && iends_with(p.authority, ":443")))
        p.authority.remove_suffix(iequals(p.scheme, "http") ? 3 : 4);
    return p;
}

}  // namespace

std::string_view category_name(Category c) {
    return kCategoryNames[static_cast<size_t>(c)];
}

std::optional<Category> category_from_name(std::string_view name) {
    for (size_t i = 0; i < kCategoryNames.size(); ++i)
        if (kCategoryNames[i] == name) return static_cast<Category>(i);
    return std::nullopt;
}

Category category_of(ScanError e) {
    static_assert(kScanErrorCount <= kCategoryCount);
    return static_cast<Category>(static_cast<size_t>(e));
}

std::string_view action_name(Action a) {
    return a == Action::Block ? "block" : "pass";
}

std::optional<Action> action_from_name(std::string_view name) {
    if (name == "block") return Action::Block;
    if (name == "pass") return Action::Pass;
    return std::nullopt;
}

std::array<Action, kCategoryCount> ProtocolPolicy::default_fallbacks() {
    std::array<Action, kCategoryCount> f;
    f.fill(Action::Pass);
    // A full scan queue is the cheapest way to get past a scanner: flood it,
    // then send the payload (Juniper blocks too-many-requests by default too).
    f[size_t(Category::TooManyRequests)] = Action::Block;
    // Bytes that break the framing of a flow being parsed cannot be delivered
    // as "scanned"; the peers see a reset.
    f[size_t(Category::ProtocolError)] = Action::Block;
    // engine-not-ready stays pass: after a restart the engines take seconds
    // to load, and all traffic would stop meanwhile.
    return f;
}

Action ProtocolPolicy::decide(const ScanVerdict& verdict) const {
    switch (verdict.kind) {
        case ScanVerdict::Kind::Clean:
            return Action::Pass;
        case ScanVerdict::Kind::Infected:
            switch (verdict.detection.category) {
                case ThreatCategory::Virus:
                    return on_virus;
                case ThreatCategory::Policy:
                    return on_policy;
                case ThreatCategory::Spam:
                    return Action::Pass;
            }
            return on_virus;
        case ScanVerdict::Kind::Error:
            return fallback_for(category_of(verdict.error));
    }
    return Action::Block;
}

MailBlock ProtocolPolicy::mail_block_for(const ScanVerdict& verdict) const {
    if (verdict.is_infected() && verdict.detection.category == ThreatCategory::Policy)
        return mail_on_policy;
    return mail_on_virus;  // viruses, and fallbacks that block
}

std::string_view mail_block_name(MailBlock b) {
    static constexpr std::array<std::string_view, 4> kNames = {"replace", "strip", "reject",
                                                               "drop"};
    return kNames[size_t(b)];
}

namespace {
constexpr std::array<std::string_view, 5> kSpamActionNames = {"accept", "tag", "reject", "drop",
                                                              "forward"};
}  // namespace

std::string_view spam_action_name(SpamAction a) {
    return kSpamActionNames[size_t(a)];
}

std::optional<SpamAction> spam_action_from_name(std::string_view name) {
    for (size_t i = 0; i < kSpamActionNames.size(); ++i)
        if (kSpamActionNames[i] == name) return static_cast<SpamAction>(i);
    return std::nullopt;
}

bool ProtocolPolicy::host_allowlisted(std::string_view host) const {
    const std::string_view name = host_only(host);
    if (name.empty()) return false;
    for (const std::string& entry : allow_hosts) {
        if (entry.starts_with('.') ? iends_with(name, entry) : iequals(name, entry)) return true;
    }
    return false;
}

bool ProtocolPolicy::allowlisted(std::string_view host, std::string_view url) const {
    if (host_allowlisted(host)) return true;
    if (allow_urls.empty() || url.empty()) return false;
    const std::optional<UrlParts> u = split_url(url);
    if (!u) return false;
    for (const std::string& entry : allow_urls) {
        const std::optional<UrlParts> e = split_url(entry);
        // The authority must match whole: "http://example.com" must not let
        // "http://example.com.evil.net/" through.
        if (e && iequals(e->scheme, u->scheme) && iequals(e->authority, u->authority) &&
            u->rest.starts_with(e->rest))
            return true;
    }
    return false;
}

}  // namespace nfqscan
