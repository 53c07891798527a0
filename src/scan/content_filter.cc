#include "content_filter.h"

#include <magic.h>

#include <algorithm>
#include <cctype>

namespace nfqscan {
namespace {

// libmagic decides from the head of the data; more only costs time.
constexpr size_t kSniffBytes = 64 * 1024;

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

}  // namespace

bool mime_type_matches(std::string_view type, std::string_view pattern) {
    type = trim(type.substr(0, type.find(';')));
    const std::string t = lower(type), p = lower(trim(pattern));
    if (t.empty() || p.empty()) return false;
    if (p == "*/*" || p == "*") return true;
    if (p.size() >= 2 && p.ends_with("/*")) return t.starts_with(p.substr(0, p.size() - 1));
    return t == p;
}

std::string file_extension(std::string_view name) {
    const size_t slash = name.find_last_of("/\\");
    if (slash != std::string_view::npos) name.remove_prefix(slash + 1);
    const size_t dot = name.rfind('.');
    if (dot == std::string_view::npos || dot + 1 == name.size()) return {};
    return lower(name.substr(dot + 1));
}

ContentFilter::ContentFilter(std::map<std::string, ScanProfile> profiles)
    : profiles_(std::move(profiles)) {}

ContentFilter::~ContentFilter() {
    for (magic_t m : idle_magic_)
        magic_close(m);
}

const ScanProfile* ContentFilter::profile_for(const std::string& name) const {
    auto it = profiles_.find(name.empty() ? std::string("default") : name);
    if (it == profiles_.end()) it = profiles_.find("default");
    return it == profiles_.end() ? nullptr : &it->second;
}

bool ContentFilter::should_scan(const ScanObject& object) const {
    const ScanProfile* profile = profile_for(object.profile);
    if (profile == nullptr || profile->mode == ScanProfile::Mode::All) return true;

    const std::string ext = file_extension(object.name);
    if (!ext.empty()) {
        for (const std::string& listed : profile->extensions) {
            std::string_view l = trim(listed);
            if (l.starts_with('.')) l.remove_prefix(1);
            if (lower(l) == ext) return true;
        }
    }
    if (profile->mime_types.empty()) return false;
    for (const std::string& pattern : profile->mime_types)
        if (mime_type_matches(object.mime_type, pattern)) return true;
    const std::string sniffed = sniff_mime_type(object.bytes);
    // No verdict from libmagic means we cannot tell: scan rather than skip.
    if (sniffed.empty()) return true;
    for (const std::string& pattern : profile->mime_types)
        if (mime_type_matches(sniffed, pattern)) return true;
    return false;
}

std::string ContentFilter::sniff_mime_type(std::span<const uint8_t> bytes) const {
    magic_t m = nullptr;
    {
        std::lock_guard lock(mutex_);
        if (!idle_magic_.empty()) {
            m = idle_magic_.back();
            idle_magic_.pop_back();
        }
    }
    if (m == nullptr) {
        m = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS | MAGIC_NO_CHECK_ELF);
        if (m == nullptr) return {};
        if (magic_load(m, nullptr) != 0) {
            magic_close(m);
            return {};
        }
    }
    const char* type = magic_buffer(m, bytes.data(), std::min(bytes.size(), kSniffBytes));
    std::string result = type != nullptr ? type : "";
    std::lock_guard lock(mutex_);
    idle_magic_.push_back(m);
    return result;
}

}  // namespace nfqscan
