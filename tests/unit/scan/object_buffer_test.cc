// ObjectBuffer: the invariants stated in include/nfqscan/object_buffer.h.
#include "nfqscan/object_buffer.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

namespace nfqscan {
namespace {

std::span<const uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string text_of(std::span<const uint8_t> b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// The first `n` bytes of the file, read through the descriptor.
std::string file_prefix(int fd, size_t n) {
    std::string out(n, '\0');
    size_t done = 0;
    while (done < n) {
        const ssize_t r = ::pread(fd, out.data() + done, n - done, static_cast<off_t>(done));
        if (r <= 0) break;
        done += static_cast<size_t>(r);
    }
    out.resize(done);
    return out;
}

TEST(ObjectBuffer, NothingAllocatedBeforeTheFirstAppend) {
    ObjectBuffer b(1 << 20);
    EXPECT_EQ(b.fd(), -1);
    EXPECT_EQ(b.size(), 0u);
    EXPECT_EQ(b.capacity(), 0u);
    EXPECT_TRUE(b.bytes().empty());
    EXPECT_EQ(b.append({}), ObjectBuffer::Append::Ok);
    EXPECT_EQ(b.fd(), -1);
}

TEST(ObjectBuffer, AppendsAcrossGrowthKeepTheBytesInTheViewAndTheFile) {
    ObjectBuffer b(8u << 20);
    std::string expected;
    uint64_t grown = 0, last_capacity = 0;
    // Pieces of varying size, past several doublings of kInitialCapacity.
    for (size_t i = 0; expected.size() < 3 * ObjectBuffer::kInitialCapacity * 4 + 123; ++i) {
        std::string piece(1 + (i * 7919) % 5000, char('a' + i % 26));
        ASSERT_EQ(b.append(bytes_of(piece)), ObjectBuffer::Append::Ok);
        expected += piece;
        if (b.capacity() != last_capacity) {
            ++grown;
            // Doubling (or the first allocation): never more than twice what it holds.
            EXPECT_LE(b.capacity(),
                      std::max<uint64_t>(2 * b.size(), ObjectBuffer::kInitialCapacity) +
                          uint64_t(::sysconf(_SC_PAGESIZE)));
            last_capacity = b.capacity();
        }
        ASSERT_EQ(b.size(), expected.size());
    }
    EXPECT_GE(grown, 4u);
    EXPECT_LT(grown, 10u);  // amortised: logarithmic in the size, not one per append
    EXPECT_EQ(text_of(b.bytes()), expected);
    ASSERT_GE(b.fd(), 0);
    EXPECT_EQ(file_prefix(b.fd(), expected.size()), expected);
}

TEST(ObjectBuffer, OneLargeAppendGrowsAtOnce) {
    ObjectBuffer b(4u << 20);
    const std::string big(3u << 20, 'x');
    ASSERT_EQ(b.append(bytes_of("head")), ObjectBuffer::Append::Ok);
    ASSERT_EQ(b.append(bytes_of(big)), ObjectBuffer::Append::Ok);
    EXPECT_EQ(b.size(), big.size() + 4);
    EXPECT_EQ(file_prefix(b.fd(), b.size()), "head" + big);
}

TEST(ObjectBuffer, GrowthIsBoundedByTheLimit) {
    const uint64_t limit = 200000;  // not a multiple of the page size
    ObjectBuffer b(limit);
    const std::string piece(50000, 'y');
    for (int i = 0; i < 4; ++i)
        ASSERT_EQ(b.append(bytes_of(piece)), ObjectBuffer::Append::Ok);
    EXPECT_EQ(b.size(), limit);
    const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
    EXPECT_LE(b.capacity(), (limit + page - 1) / page * page);

    // Nothing of an append past the limit is kept.
    EXPECT_EQ(b.append(bytes_of("z")), ObjectBuffer::Append::OverLimit);
    EXPECT_EQ(b.size(), limit);
    EXPECT_EQ(b.memory_bytes(), (limit + page - 1) / page * page);
    ObjectBuffer small(10);
    EXPECT_EQ(small.append(bytes_of("0123456789abc")), ObjectBuffer::Append::OverLimit);
    EXPECT_EQ(small.size(), 0u);
    EXPECT_EQ(small.append(bytes_of("0123456789")), ObjectBuffer::Append::Ok);
    EXPECT_EQ(text_of(small.bytes()), "0123456789");
}

TEST(ObjectBuffer, AForkedChildDoesNotInheritTheMapping) {
    ObjectBuffer b(8u << 20);
    const std::string big(3 * ObjectBuffer::kInitialCapacity, 'f');
    ASSERT_EQ(b.append(bytes_of("x")), ObjectBuffer::Append::Ok);
    ASSERT_EQ(b.append(bytes_of(big)), ObjectBuffer::Append::Ok);  // moved by mremap
    auto* address = const_cast<uint8_t*>(b.bytes().data());
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        unsigned char resident = 0;
        const bool unmapped = ::mincore(address, 1, &resident) != 0 && errno == ENOMEM;
        ::_exit(unmapped ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ObjectBuffer, RecycledBuffersComeBackEmptyWithTheirFile) {
    int fd = -1;
    {
        auto first = ObjectBuffer::make(1 << 20);
        ASSERT_EQ(first->append(bytes_of("an earlier object")), ObjectBuffer::Append::Ok);
        fd = first->fd();
    }
    // The one just let go is handed out again (the list is last in, first out).
    auto again = ObjectBuffer::make(8);
    EXPECT_EQ(again->fd(), fd);
    EXPECT_EQ(again->size(), 0u);
    EXPECT_TRUE(again->bytes().empty());
    EXPECT_EQ(again->limit(), 8u);
    EXPECT_EQ(again->append(bytes_of("too long now")), ObjectBuffer::Append::OverLimit);
    ASSERT_EQ(again->append(bytes_of("new")), ObjectBuffer::Append::Ok);
    EXPECT_EQ(text_of(again->bytes()), "new");
    EXPECT_EQ(file_prefix(again->fd(), 3), "new");

    // A grown buffer is not kept.
    {
        auto grown = ObjectBuffer::make(1 << 20);
        const std::string big(2 * ObjectBuffer::kInitialCapacity, 'g');
        ASSERT_EQ(grown->append(bytes_of(big)), ObjectBuffer::Append::Ok);
        EXPECT_GT(grown->capacity(), ObjectBuffer::kInitialCapacity);
    }
    auto next = ObjectBuffer::make(1 << 20);
    EXPECT_TRUE(next->capacity() == 0 || next->capacity() == ObjectBuffer::kInitialCapacity)
        << next->capacity();
}

}  // namespace
}  // namespace nfqscan
