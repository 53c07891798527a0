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

// Kept buffers may also be grown ones, while their files hold at most this
// much in all. Every fresh page of a memory file costs a write fault that
// allocates and zeroes it (~1.3 ms of CPU per MiB on the build machines'
// VMs, as much as the rest of a queue worker's work on a relayed object);
// a kept file's pages are written again without either. The price: up to
// this much memory stays with the process, outside the stream memory cap,
// and a small object may sit in a larger file than it needs.
constexpr uint64_t kKeptGrownBytes = 32u << 20;

// File bytes of the kept buffers grown past kInitialCapacity (under
// recycled_mutex()).
uint64_t& kept_grown_bytes() {
    static uint64_t bytes = 0;
    return bytes;
}

bool grown(const ObjectBuffer& buffer) {
    return buffer.capacity() > ObjectBuffer::kInitialCapacity;
}

// The smallest kept buffer whose file holds `at_least` bytes (among equals
// the one let go last), or null.
std::unique_ptr<ObjectBuffer> take_kept(uint64_t at_least) {
    std::lock_guard lock(recycled_mutex());
    std::vector<std::unique_ptr<ObjectBuffer>>& kept = recycled();
    size_t best = kept.size();
    for (size_t i = kept.size(); i-- > 0;) {
        const uint64_t c = kept[i]->capacity();
        if (c >= at_least && (best == kept.size() || c < kept[best]->capacity())) best = i;
    }
    if (best == kept.size()) return nullptr;
    std::unique_ptr<ObjectBuffer> taken = std::move(kept[best]);
    kept.erase(kept.begin() + static_cast<ptrdiff_t>(best));
    if (grown(*taken)) kept_grown_bytes() -= taken->capacity();
    return taken;
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
    // The smallest kept one: a grown file stays for an object that grows.
    ObjectBuffer* buffer = take_kept(0).release();
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
    // Kept: files of kInitialCapacity (the common small body), and grown
    // ones within kKeptGrownBytes; not a buffer that never got a file, nor
    // one a small limit kept smaller.
    if (buffer->capacity_ < kInitialCapacity) return;
    std::lock_guard lock(recycled_mutex());
    std::vector<std::unique_ptr<ObjectBuffer>>& kept = recycled();
    if (kept.size() >= kRecycled) return;
    if (grown(*buffer)) {
        if (kept_grown_bytes() + buffer->capacity_ > kKeptGrownBytes) return;
        kept_grown_bytes() += buffer->capacity_;
    }
    kept.push_back(std::move(owned));
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
    // A kept file that holds `needed` takes this one's place: the bytes so
    // far are copied over (at most half of what a doubling would have
    // faulted in), and this file goes back to be kept (or closed).
    if (std::unique_ptr<ObjectBuffer> kept = take_kept(needed)) {
        if (size_ > 0) std::memcpy(kept->data_, data_, size_);
        std::swap(fd_, kept->fd_);
        std::swap(data_, kept->data_);
        std::swap(capacity_, kept->capacity_);
        recycle(kept.release());
        return true;
    }
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
