#include <gtest/gtest.h>

#include "nfqscan/nfqueue.h"

namespace nfqscan {
namespace {

TEST(KernelQueueStats, ParsesProcLines) {
    auto stats = parse_kernel_queue_stats(
        "    0  12345     3 2 65535     7     9    40123  1\n"
        "    1 4001     0 2 65535     0     0        0  1\n"
        "garbage line\n");
    ASSERT_EQ(stats.size(), 2u);  // the garbage line is skipped
    EXPECT_EQ(stats[1].queue, 1);
    EXPECT_EQ(stats[0].queue, 0);
    EXPECT_EQ(stats[0].peer_portid, 12345u);
    EXPECT_EQ(stats[0].queue_total, 3u);
    EXPECT_EQ(stats[0].copy_range, 65535u);
    EXPECT_EQ(stats[0].queue_dropped, 7u);
    EXPECT_EQ(stats[0].user_dropped, 9u);
    EXPECT_EQ(stats[0].id_sequence, 40123u);
}

}  // namespace
}  // namespace nfqscan
