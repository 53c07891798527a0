// ObjectBuffer: an object's bytes in a memory file (memfd), written once by
// the inspector that decodes them and read in place by whoever scans them.
// With process isolation the scan service hands the file's descriptor to its
// scanner process (SCM_RIGHTS), which maps it read-only: the bytes are copied
// once between the wire (the stream engine's relay store) and the scanner,
// as DESIGN.md ("Object ... copied at most once") asks.
//
// Invariants (tests/unit/scan/object_buffer_test.cc):
//   - nothing is allocated before the first append(); fd() is -1 until then;
//   - size() never exceeds limit(): an append that would pass it appends
//     nothing and answers OverLimit;
//   - growth doubles the file (and its mapping, moved by mremap) up to the
//     limit rounded to a page, or takes a kept larger file (Recycling), so
//     appends are amortised O(1) per byte; a file of its own is never more
//     than twice the bytes it holds (or kInitialCapacity);
//   - the first size() bytes of the file (pread on fd()) are bytes();
//   - a child forked meanwhile does not inherit the mapping (MADV_DONTFORK):
//     a scanner forked while objects are held would otherwise keep their
//     memory as long as it lives.
// bytes() is invalidated by a later append() (the mapping may move): an
// object is appended to by one owner, then shared read-only
// (std::shared_ptr<const ObjectBuffer>) and never written again.
//
// Recycling: a new memory file costs ~20 us here, and each fresh page a fault
// that allocates and zeroes it (~1.3 ms of CPU per MiB). make() hands out the
// smallest buffer kept when its last owner let go (at most kRecycled; grown
// files only up to 32 MiB in all, object_buffer.cc), emptied, with its file,
// mapping and pages; a buffer that outgrows its file takes a kept larger one.
// Whatever a recycled file holds past size() is never part of an object.
//
// Digest: while hashing() is on (the scan service turns it on when its
// verdict cache is), a buffer made then hashes every byte appended (SHA-256,
// incrementally: the bytes are hot in the cache right after the copy), so
// sha256() is ready when the object ends and a verdict cache hit costs no
// pass over the object. A buffer made while it was off has no digest.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "nfqscan/sha256.h"

namespace nfqscan {

class ObjectBuffer {
  public:
    // The first size of the file; small bodies are common, and a memfd costs
    // only the pages that are written.
    static constexpr uint64_t kInitialCapacity = 64u << 10;

    enum class Append : uint8_t {
        Ok,
        OverLimit,  // nothing appended: the object would exceed limit()
        NoResource  // nothing appended: no descriptor or memory (error() says why)
    };

    // Buffers kept for reuse, process-wide.
    static constexpr size_t kRecycled = 64;

    // An empty buffer, recycled if one is free.
    static std::shared_ptr<ObjectBuffer> make(uint64_t limit);

    explicit ObjectBuffer(uint64_t limit);
    ~ObjectBuffer();
    ObjectBuffer(const ObjectBuffer&) = delete;
    ObjectBuffer& operator=(const ObjectBuffer&) = delete;

    Append append(std::span<const uint8_t> bytes);

    uint64_t size() const { return size_; }
    uint64_t limit() const { return limit_; }
    bool empty() const { return size_ == 0; }
    // The file's length, which it may fill before growing again.
    uint64_t capacity() const { return capacity_; }
    // The memory the object's bytes take (whole pages): for status.
    uint64_t memory_bytes() const;
    std::span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(size_)}; }
    // The memory file; its first size() bytes are the object. -1 while empty
    // and never grown.
    int fd() const { return fd_; }
    // Why the last append answered NoResource.
    const std::string& error() const { return error_; }
    // SHA-256 of bytes(), if this buffer was made while hashing() was on.
    std::optional<Sha256Digest> sha256() const;

    // Process-wide: whether buffers made from now on hash their bytes.
    static void set_hashing(bool on);
    static bool hashing();

  private:
    bool grow(uint64_t needed);
    static void recycle(ObjectBuffer* buffer);

    uint64_t limit_;
    uint64_t size_ = 0;
    uint64_t capacity_ = 0;
    uint8_t* data_ = nullptr;
    int fd_ = -1;
    std::string error_;
    std::unique_ptr<Sha256> hash_;  // null: not hashing
};

}  // namespace nfqscan
