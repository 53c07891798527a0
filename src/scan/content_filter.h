// Scan modes: whether a profile scans an object at all, from the extension of
// its name, its declared MIME type and the type libmagic sniffs from its first
// bytes. A skipped object is clean with the "skipped" flag.
#pragma once

#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "nfqscan/scan.h"

struct magic_set;

namespace nfqscan {

class ContentFilter {
  public:
    explicit ContentFilter(std::map<std::string, ScanProfile> profiles);
    ~ContentFilter();
    ContentFilter(const ContentFilter&) = delete;
    ContentFilter& operator=(const ContentFilter&) = delete;

    bool should_scan(const ScanObject& object) const;

    // The MIME type libmagic sees in the bytes ("application/zip"), or empty.
    std::string sniff_mime_type(std::span<const uint8_t> bytes) const;

  private:
    const ScanProfile* profile_for(const std::string& name) const;

    std::map<std::string, ScanProfile> profiles_;
    // libmagic handles are not thread-safe: a stock, one per concurrent caller.
    mutable std::mutex mutex_;
    mutable std::vector<magic_set*> idle_magic_;
};

// "application/zip" against "application/zip", "application/*" or "*/*";
// parameters (";charset=...") and case are ignored.
bool mime_type_matches(std::string_view type, std::string_view pattern);
// The last extension of a file name, lower case, without the dot ("" if none).
std::string file_extension(std::string_view name);

}  // namespace nfqscan
