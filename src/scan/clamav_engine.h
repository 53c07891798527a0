// libclamav behind RAII: database directories loaded into one compiled engine
// carrying the scan limits, and the scan of one object from memory. Every
// layer ClamAV unpacks (archive member, mail part, unpacked executable) is
// handed to a ClamLayerObserver before ClamAV scans it; that is where YARA and
// the archive checks run. ClamAV's clean-file cache is off: it would skip the
// children of a layer it saw before, and YARA's non-virus matches in them with it.
#pragma once

#include <clamav.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "load_failure.h"
#include "nfqscan/scan.h"

namespace nfqscan {

// One layer as ClamAV hands it over.
struct ClamLayer {
    uint32_t depth = 0;              // 0: the object itself
    std::string_view name;           // display name: file name or "(type)"
    std::string_view type;           // ClamAV file type, e.g. "CL_TYPE_ZIP"
    std::span<const uint8_t> bytes;  // empty if ClamAV could not map the layer
    std::string_view path;           // layer path, this layer included
};

class ClamLayerObserver {
  public:
    virtual ~ClamLayerObserver() = default;
    // Returning true stops the scan with the object counted as infected.
    virtual bool on_layer(const ClamLayer& layer) = 0;
    // An archive member as its container declares it, before extraction.
    virtual void on_archive_member(std::string_view container_path, std::string_view name,
                                   uint64_t declared_size, bool encrypted) = 0;
};

struct ClamScanOutcome {
    cl_error_t rc = CL_CLEAN;
    std::string virname;     // rc == CL_VIRUS
    std::string layer_path;  // innermost layer that reported virname
};

// The virus name ClamAV reports when an observer stopped the scan.
inline bool is_observer_virname(std::string_view virname) {
    return virname.starts_with("Detected.By.Callback");
}

// ClamAV's heuristic alerts that are really "could not scan it all" (limits,
// encryption, broken files) rather than detections.
std::optional<ScanError> error_for_clamav_signature(std::string_view virname);
// In a scanner process: libclamav's messages are dropped instead of logged
// (the logger's lock may have been held by another thread at the fork).
void silence_clamav_messages();

// Errors a scan returns instead of CL_CLEAN/CL_VIRUS.
ScanError error_for_clamav_code(cl_error_t rc);

class ClamEngine {
  public:
    struct Options {
        std::vector<std::string> db_dirs;  // none: an engine that only unpacks
        ScanLimits limits;
        std::string temp_dir;
        // libclamav's clean-file cache (MD5 of layers found clean, per
        // engine and so per scanner process). Off in nfqscand (see above);
        // on only to measure what it would save (nfqscan-scanbench).
        bool clean_cache = false;
    };
    struct Loaded {
        std::unique_ptr<ClamEngine> engine;  // null on failure
        std::optional<LoadFailure> failure;
        uint64_t signatures = 0;
        std::vector<std::string> loaded_dirs;
        std::vector<std::string> warnings;
    };
    // Loads and compiles; slow with the official databases (seconds).
    static Loaded load(const Options& options);

    ~ClamEngine();
    ClamEngine(const ClamEngine&) = delete;
    ClamEngine& operator=(const ClamEngine&) = delete;

    // Thread-safe: the compiled engine is never modified.
    ClamScanOutcome scan(std::span<const uint8_t> bytes, const std::string& name,
                         ClamLayerObserver* observer) const;

    uint32_t db_version() const;
    int64_t db_time() const;
    static std::string version();

  private:
    explicit ClamEngine(cl_engine* engine) : engine_(engine) {}
    cl_engine* engine_;
};

}  // namespace nfqscan
