// VerdictCache: the verdicts of objects already judged, so that an object
// seen again (the same update downloaded by every machine of an office, the
// same attachment fetched by each recipient) costs a lookup instead of a scan.
//
// A verdict depends on the bytes and on everything the scan reads besides
// them; the key is a SHA-256 over all of it (verdict_cache_key()):
//   - the SHA-256 of the object's bytes as scanned (ObjectBuffer::sha256(),
//     computed as the bytes arrive; a cryptographic hash, so an attacker
//     cannot make an infected object collide with a clean one);
//   - the engines' generation: every reload (new signatures, rules, limits,
//     profiles) starts a new one, so nothing judged by older engines is hit;
//   - the scan profile (its name and its mode, extensions and MIME types)
//     and the limits;
//   - the object's name and declared MIME type: layer paths start with the
//     name, YARA rules see it as `filename`, and a listed profile chooses by
//     extension and type.
// Only definite verdicts are kept: clean (not skipped) and infected. Errors
// (timeout, engine-not-ready, out-of-resource, ...) say nothing about the
// bytes and are never cached.
//
// Bounded by an entry count with least-recently-used eviction; the memory
// the entries take is accounted (an estimate of the nodes and strings). A
// verdict whose entry would exceed kMaxEntryMemory (a detection with a very
// long layer path, which hostile nesting can make) is not kept, so the
// memory stays below capacity x kMaxEntryMemory.
// Thread-safe: one mutex, held for a hash lookup and a list splice.
#pragma once

#include <array>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "nfqscan/scan.h"
#include "nfqscan/sha256.h"

namespace nfqscan {

using VerdictCacheKey = Sha256Digest;

// `profile` is the profile the object's scan uses (null: none configured,
// everything is scanned).
VerdictCacheKey verdict_cache_key(const Sha256Digest& content, uint64_t generation,
                                  const ScanObject& object, const ScanProfile* profile,
                                  const ScanLimits& limits);

// Whether a verdict may be kept: clean and scanned, or infected.
bool verdict_cacheable(const ScanVerdict& verdict);

class VerdictCache {
  public:
    static constexpr size_t kMaxEntryMemory = 2048;

    explicit VerdictCache(size_t capacity) : capacity_(capacity) {}

    // What a lookup counts. An object may be looked up at submission and
    // again when its scan starts (an identical one may have been judged
    // meanwhile): only the last lookup counts a miss, so that each object
    // counts one hit or one miss.
    enum class Tally : uint8_t { HitOnly, HitOrMiss };
    // The cached verdict (marked cached, elapsed zero), and the entry becomes
    // the most recently used.
    std::optional<ScanVerdict> find(const VerdictCacheKey& key, Tally tally);
    // Keeps a cacheable verdict of `generation`; ignored if that is no longer
    // the cache's generation (a scan that started before a reload), the
    // verdict is not cacheable or its entry would be over kMaxEntryMemory.
    // Evicts the least recently used beyond capacity.
    void insert(const VerdictCacheKey& key, const ScanVerdict& verdict, uint64_t generation);
    // New engines: every entry is dropped (none could be hit again) and
    // the capacity may change. 0 turns the cache off.
    void start_generation(uint64_t generation, size_t capacity);

    size_t capacity() const;
    VerdictCacheStats stats() const;

  private:
    struct Entry {
        VerdictCacheKey key;
        ScanVerdict verdict;
        size_t memory;
    };
    struct KeyHash {
        size_t operator()(const VerdictCacheKey& k) const;
    };
    using Lru = std::list<Entry>;  // most recently used first

    void evict_over(size_t capacity);

    mutable std::mutex mutex_;
    size_t capacity_;
    uint64_t generation_ = 0;
    Lru lru_;
    std::unordered_map<VerdictCacheKey, Lru::iterator, KeyHash> index_;
    uint64_t memory_ = 0;
    uint64_t hits_ = 0, misses_ = 0, inserts_ = 0, evictions_ = 0, invalidated_ = 0;
};

}  // namespace nfqscan
