// ObjectBuffer: the invariants stated in include/nfqscan/object_buffer.h.
#include "nfqscan/object_buffer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

    // A grown buffer is kept too (its pages need no fault and no zeroing
    // again). A new object gets a small file first; once it outgrows it,
    // the kept larger file takes its place, with the bytes so far.
    int grown_fd = -1;
    uint64_t grown_capacity = 0;
    {
        auto grown = ObjectBuffer::make(1 << 20);
        const std::string big(2 * ObjectBuffer::kInitialCapacity, 'g');
        ASSERT_EQ(grown->append(bytes_of(big)), ObjectBuffer::Append::Ok);
        EXPECT_GT(grown->capacity(), ObjectBuffer::kInitialCapacity);
        grown_fd = grown->fd();
        grown_capacity = grown->capacity();
    }
    again.reset();  // a small file kept, at least
    auto next = ObjectBuffer::make(1 << 20);
    EXPECT_NE(next->fd(), grown_fd);
    EXPECT_TRUE(next->capacity() == 0 || next->capacity() == ObjectBuffer::kInitialCapacity)
        << next->capacity();
    const std::string first(1000, 'a');
    ASSERT_EQ(next->append(bytes_of(first)), ObjectBuffer::Append::Ok);
    const std::string rest(grown_capacity - first.size(), 'h');
    ASSERT_EQ(next->append(bytes_of(rest)), ObjectBuffer::Append::Ok);
    EXPECT_EQ(next->fd(), grown_fd);
    EXPECT_EQ(next->capacity(), grown_capacity);  // the kept file held it all
    EXPECT_EQ(text_of(next->bytes()), first + rest);
    EXPECT_EQ(file_prefix(next->fd(), 1001), first + "h");
}

TEST(ObjectBuffer, GrownBuffersAreKeptOnlyWithinABudget) {
    // Eight 8 MiB files let go at once: those over the budget for grown
    // files (32 MiB, object_buffer.cc) are closed, the others kept open,
    // and the next objects that grow that large take them.
    const uint64_t each = 8u << 20;
    const size_t count = 8;
    std::vector<int> fds;
    {
        std::vector<std::shared_ptr<ObjectBuffer>> held;
        const std::string big(each, 'b');
        for (size_t i = 0; i < count; ++i) {
            held.push_back(ObjectBuffer::make(each));
            ASSERT_EQ(held.back()->append(bytes_of(big)), ObjectBuffer::Append::Ok);
            fds.push_back(held.back()->fd());
        }
    }
    std::vector<int> kept;
    for (int fd : fds)
        if (::fcntl(fd, F_GETFD) != -1) kept.push_back(fd);
    EXPECT_GE(kept.size(), 1u);
    EXPECT_LE(kept.size(), (32u << 20) / each);

    std::vector<std::shared_ptr<ObjectBuffer>> again;
    const std::string big(each, 'c');
    size_t reused = 0;
    for (size_t i = 0; i < count; ++i) {
        again.push_back(ObjectBuffer::make(each));
        ASSERT_EQ(again.back()->append(bytes_of(big)), ObjectBuffer::Append::Ok);
        EXPECT_EQ(text_of(again.back()->bytes()), big);
        if (std::find(kept.begin(), kept.end(), again.back()->fd()) != kept.end()) ++reused;
    }
    EXPECT_EQ(reused, kept.size());
}

}  // namespace
}  // namespace nfqscan
