#include "verdict_cache.h"

#include <cstring>
#include <string_view>

namespace nfqscan {
namespace {

// Each field goes in with its length, so that no two different inputs make
// the same byte string ("ab" + "c" vs "a" + "bc").
class KeyWriter {
  public:
    void u64(uint64_t v) {
        for (int i = 0; i < 8; ++i)
            byte(static_cast<uint8_t>(v >> (8 * i)));
    }
    void text(std::string_view s) {
        u64(s.size());
        hash_.update({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
    }
    void bytes(std::span<const uint8_t> b) { hash_.update(b); }
    Sha256Digest digest() const { return hash_.digest(); }

  private:
    void byte(uint8_t b) { hash_.update({&b, 1}); }
    Sha256 hash_;
};

// What a heap string costs beyond its place in the struct (libstdc++ keeps
// up to 15 characters inline).
size_t heap_bytes(const std::string& s) {
    return s.capacity() > 15 ? s.capacity() + 1 : 0;
}

size_t entry_memory(const ScanVerdict& v) {
    // The list node (two pointers and the entry), the index node (key,
    // iterator, next pointer, cached hash) and its bucket pointer.
    constexpr size_t kListNode = 2 * sizeof(void*);
    constexpr size_t kIndexNode =
        sizeof(VerdictCacheKey) + sizeof(void*) + sizeof(void*) + sizeof(size_t);
    constexpr size_t kBucket = sizeof(void*);
    return kListNode + sizeof(VerdictCacheKey) + sizeof(ScanVerdict) + sizeof(size_t) + kIndexNode +
           kBucket + heap_bytes(v.detection.signature) + heap_bytes(v.detection.layer_path) +
           heap_bytes(v.reason) + heap_bytes(v.layer_path);
}

}  // namespace

VerdictCacheKey verdict_cache_key(const Sha256Digest& content, uint64_t generation,
                                  const ScanObject& object, const ScanProfile* profile,
                                  const ScanLimits& limits) {
    KeyWriter w;
    w.text("nfqscan verdict cache 1");
    w.bytes(content);
    w.u64(generation);
    w.text(object.profile.empty() ? std::string_view("default") : object.profile);
    if (profile == nullptr) {
        w.u64(0);
    } else {
        w.u64(profile->mode == ScanProfile::Mode::All ? 1 : 2);
        w.u64(profile->extensions.size());
        for (const std::string& e : profile->extensions)
            w.text(e);
        w.u64(profile->mime_types.size());
        for (const std::string& m : profile->mime_types)
            w.text(m);
    }
    w.u64(limits.max_content_size);
    w.u64(limits.max_scan_size);
    w.u64(limits.max_layers);
    w.u64(limits.max_files);
    w.u64(limits.max_scan_time_ms);
    w.text(object.name);
    w.text(object.mime_type);
    return w.digest();
}

bool verdict_cacheable(const ScanVerdict& verdict) {
    return (verdict.is_clean() && !verdict.skipped) || verdict.is_infected();
}

size_t VerdictCache::KeyHash::operator()(const VerdictCacheKey& k) const {
    // The key is already a cryptographic digest: any 8 of its bytes are uniform.
    size_t h = 0;
    std::memcpy(&h, k.data(), sizeof h);
    return h;
}

std::optional<ScanVerdict> VerdictCache::find(const VerdictCacheKey& key, Tally tally) {
    std::lock_guard lock(mutex_);
    if (capacity_ == 0) return std::nullopt;
    auto it = index_.find(key);
    if (it == index_.end()) {
        if (tally == Tally::HitOrMiss) ++misses_;
        return std::nullopt;
    }
    ++hits_;
    lru_.splice(lru_.begin(), lru_, it->second);
    ScanVerdict v = it->second->verdict;
    v.cached = true;
    v.elapsed = std::chrono::microseconds(0);
    return v;
}

void VerdictCache::insert(const VerdictCacheKey& key, const ScanVerdict& verdict,
                          uint64_t generation) {
    if (!verdict_cacheable(verdict)) return;
    std::lock_guard lock(mutex_);
    if (capacity_ == 0 || generation != generation_) return;
    if (auto it = index_.find(key); it != index_.end()) {
        // Judged twice at once (both missed): keep the first.
        lru_.splice(lru_.begin(), lru_, it->second);
        return;
    }
    Entry entry{key, verdict, 0};
    entry.verdict.cached = false;
    entry.verdict.elapsed = std::chrono::microseconds(0);
    entry.memory = entry_memory(entry.verdict);
    if (entry.memory > kMaxEntryMemory) return;
    lru_.push_front(std::move(entry));
    index_.emplace(key, lru_.begin());
    memory_ += lru_.front().memory;
    ++inserts_;
    evict_over(capacity_);
}

void VerdictCache::evict_over(size_t capacity) {
    while (lru_.size() > capacity) {
        memory_ -= lru_.back().memory;
        index_.erase(lru_.back().key);
        lru_.pop_back();
        ++evictions_;
    }
}

void VerdictCache::start_generation(uint64_t generation, size_t capacity) {
    std::lock_guard lock(mutex_);
    invalidated_ += lru_.size();
    lru_.clear();
    index_.clear();
    memory_ = 0;
    generation_ = generation;
    capacity_ = capacity;
}

size_t VerdictCache::capacity() const {
    std::lock_guard lock(mutex_);
    return capacity_;
}

VerdictCacheStats VerdictCache::stats() const {
    std::lock_guard lock(mutex_);
    return {capacity_, lru_.size(), memory_, hits_, misses_, inserts_, evictions_, invalidated_};
}

}  // namespace nfqscan
