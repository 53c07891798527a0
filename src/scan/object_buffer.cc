#include "nfqscan/object_buffer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

namespace nfqscan {
namespace {

uint64_t page_size() {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    return page;
}

uint64_t round_to_page(uint64_t n) {
    const uint64_t page = page_size();
    return (n + page - 1) / page * page;
}

std::mutex& recycled_mutex() {
    static std::mutex mutex;
    return mutex;
}

// Never destroyed: buffers may be let go by threads still running at exit.
std::vector<std::unique_ptr<ObjectBuffer>>& recycled() {
    static auto* kept = new std::vector<std::unique_ptr<ObjectBuffer>>();
    return *kept;
}

std::atomic<bool>& hashing_flag() {
    static std::atomic<bool> on{false};
    return on;
}

}  // namespace

void ObjectBuffer::set_hashing(bool on) {
    hashing_flag().store(on, std::memory_order_relaxed);
}

bool ObjectBuffer::hashing() {
    return hashing_flag().load(std::memory_order_relaxed);
}

ObjectBuffer::ObjectBuffer(uint64_t limit) : limit_(limit) {
    if (hashing()) hash_ = std::make_unique<Sha256>();
}

std::optional<Sha256Digest> ObjectBuffer::sha256() const {
    if (!hash_) return std::nullopt;
    return hash_->digest();
}

std::shared_ptr<ObjectBuffer> ObjectBuffer::make(uint64_t limit) {
    ObjectBuffer* buffer = nullptr;
    {
        std::lock_guard lock(recycled_mutex());
        std::vector<std::unique_ptr<ObjectBuffer>>& kept = recycled();
        if (!kept.empty()) {
            buffer = kept.back().release();
            kept.pop_back();
        }
    }
    if (buffer) {
        buffer->limit_ = limit;
        buffer->size_ = 0;
        buffer->error_.clear();
        if (!hashing())
            buffer->hash_.reset();
        else if (buffer->hash_)
            buffer->hash_->reset();
        else
            buffer->hash_ = std::make_unique<Sha256>();
    } else {
        buffer = new ObjectBuffer(limit);
    }
    return std::shared_ptr<ObjectBuffer>(buffer, &ObjectBuffer::recycle);
}

void ObjectBuffer::recycle(ObjectBuffer* buffer) {
    std::unique_ptr<ObjectBuffer> owned(buffer);
    // Only small files are kept: a grown one gives its memory back.
    if (buffer->capacity_ != kInitialCapacity) return;
    std::lock_guard lock(recycled_mutex());
    std::vector<std::unique_ptr<ObjectBuffer>>& kept = recycled();
    if (kept.size() < kRecycled) kept.push_back(std::move(owned));
}

ObjectBuffer::~ObjectBuffer() {
    if (data_) ::munmap(data_, capacity_);
    if (fd_ >= 0) ::close(fd_);
}

uint64_t ObjectBuffer::memory_bytes() const {
    return round_to_page(size_);
}

ObjectBuffer::Append ObjectBuffer::append(std::span<const uint8_t> bytes) {
    if (bytes.empty()) return Append::Ok;
    if (bytes.size() > limit_ - size_) return Append::OverLimit;
    const uint64_t needed = size_ + bytes.size();
    if (needed > capacity_ && !grow(needed)) return Append::NoResource;
    std::memcpy(data_ + size_, bytes.data(), bytes.size());
    if (hash_) hash_->update(bytes);
    size_ = needed;
    return Append::Ok;
}

bool ObjectBuffer::grow(uint64_t needed) {
    auto fail = [this](const char* what) {
        error_ = std::string(what) + ": " + std::strerror(errno);
        return false;
    };
    const uint64_t ceiling = round_to_page(limit_);
    const uint64_t target =
        std::min(ceiling, round_to_page(std::max({needed, capacity_ * 2, kInitialCapacity})));
    if (fd_ < 0) {
        fd_ = ::memfd_create("nfqscan-object", MFD_CLOEXEC);
        if (fd_ < 0) return fail("memfd_create");
    }
    if (::ftruncate(fd_, static_cast<off_t>(target)) != 0) return fail("ftruncate");
    void* map = data_ ? ::mremap(data_, capacity_, target, MREMAP_MAYMOVE)
                      : ::mmap(nullptr, target, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    // On failure the file may be longer than the mapping; the next growth
    // sizes it again, and only the first size() bytes are the object.
    if (map == MAP_FAILED) return fail(data_ ? "mremap" : "mmap");
    // A scanner forked while this object is held must not inherit the
    // mapping: it would keep the object's memory until that scanner ends.
    // (mremap keeps the flag.)
    if (!data_) ::madvise(map, target, MADV_DONTFORK);
    data_ = static_cast<uint8_t*>(map);
    capacity_ = target;
    return true;
}

}  // namespace nfqscan
