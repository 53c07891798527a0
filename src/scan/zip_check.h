// A structural check of ZIP layers. libclamav silently falls back to the local
// headers when a ZIP's central directory is missing or truncated (a cut-off
// download, a deliberately broken archive) and may then call a partial scan
// clean; such a layer is reported as corrupt instead.
#pragma once

#include <cstdint>
#include <span>

namespace nfqscan {

// True when the end-of-central-directory record is present, the central
// directory lies inside the data, and each of its entries points at a local
// header. Data prepended to the archive (self-extractors) is allowed.
bool zip_directory_intact(std::span<const uint8_t> zip);

}  // namespace nfqscan
