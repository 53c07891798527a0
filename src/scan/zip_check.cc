#include "zip_check.h"

#include <algorithm>
#include <cstddef>

namespace nfqscan {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr size_t kEndRecordSize = 22;
constexpr size_t kCentralEntrySize = 46;
constexpr size_t kMaxComment = 0xffff;

uint16_t le16(std::span<const uint8_t> d, size_t at) {
    return static_cast<uint16_t>(d[at] | (d[at + 1] << 8));
}
uint32_t le32(std::span<const uint8_t> d, size_t at) {
    return static_cast<uint32_t>(d[at]) | (static_cast<uint32_t>(d[at + 1]) << 8) |
           (static_cast<uint32_t>(d[at + 2]) << 16) | (static_cast<uint32_t>(d[at + 3]) << 24);
}

}  // namespace

bool zip_directory_intact(std::span<const uint8_t> zip) {
    if (zip.size() < kEndRecordSize) return false;
    // The end record sits in the last 22 bytes plus at most a 64 KiB comment.
    const size_t lowest =
        zip.size() > kEndRecordSize + kMaxComment ? zip.size() - kEndRecordSize - kMaxComment : 0;
    size_t end = zip.size() - kEndRecordSize + 1;
    bool found = false;
    while (end-- > lowest) {
        if (le32(zip, end) == kEndOfDirectory) {
            found = true;
            break;
        }
    }
    if (!found) return false;

    const uint16_t entries = le16(zip, end + 10);
    const uint32_t dir_size = le32(zip, end + 12);
    const uint32_t dir_offset = le32(zip, end + 16);
    // ZIP64 keeps the real values elsewhere; the markers alone are no evidence
    // of damage.
    if (entries == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) return true;
    if (dir_size > end) return false;
    const size_t dir_start = end - dir_size;  // where the directory really is
    if (dir_start < dir_offset) return false;
    const size_t shift = dir_start - dir_offset;  // bytes prepended to the archive

    size_t at = dir_start;
    for (uint16_t i = 0; i < entries; ++i) {
        if (at + kCentralEntrySize > end || le32(zip, at) != kCentralHeader) return false;
        const size_t local = static_cast<size_t>(le32(zip, at + 42)) + shift;
        if (local + 4 > dir_start || le32(zip, local) != kLocalHeader) return false;
        at += kCentralEntrySize + le16(zip, at + 28) + le16(zip, at + 30) + le16(zip, at + 32);
    }
    return at <= end;
}

}  // namespace nfqscan
