#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "nfqscan/conntrack.h"

namespace nfqscan {
namespace {

TEST(ConntrackSysctl, LiberalTrackingIsReadFromTheSysctlFile) {
    char path[] = "/tmp/nfqscan-liberal-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    std::ofstream(path) << "1\n";
    EXPECT_EQ(conntrack_tcp_liberal(path), std::optional<bool>(true));
    std::ofstream(path) << "0\n";
    EXPECT_EQ(conntrack_tcp_liberal(path), std::optional<bool>(false));
    std::remove(path);
    // Conntrack not loaded: the file does not exist, nothing is known.
    EXPECT_EQ(conntrack_tcp_liberal(path), std::nullopt);
}

}  // namespace
}  // namespace nfqscan
