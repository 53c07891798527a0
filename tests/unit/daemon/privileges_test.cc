// drop_privileges() runs in a child process (it cannot be undone), which
// reports what the kernel says it now is: /proc/self/status and a few things
// it tries.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "../scan/scan_test_support.h"
#include "child_output.h"
#include "nfqscan/privileges.h"

namespace nfqscan {
namespace {

constexpr uint64_t kNetAdminAndRaw = (1ull << 12) | (1ull << 13);  // CAP_NET_ADMIN, CAP_NET_RAW

// Runs `body` in a child process; returns what it printed (fields "key value"
// one a line) as a map.
std::map<std::string, std::string> in_child(const std::function<std::string()>& body) {
    const std::string got = test::output_of_child(body);
    std::map<std::string, std::string> fields;
    std::istringstream lines(got);
    for (std::string line; std::getline(lines, line);) {
        const size_t space = line.find_first_of(" \t");
        const size_t value =
            space == std::string::npos ? line.size() : line.find_first_not_of(" \t", space);
        fields[line.substr(0, space)] = value == std::string::npos ? "" : line.substr(value);
    }
    return fields;
}

// The identity and capability lines of /proc/self/status.
std::string proc_status() {
    std::ifstream in("/proc/self/status");
    std::string out;
    for (std::string line; std::getline(in, line);)
        for (const char* key : {"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:",
                                "CapBnd:", "CapAmb:", "NoNewPrivs:"})
            if (line.rfind(key, 0) == 0) out += line + "\n";
    return out;
}

uint64_t mask(const std::string& hex) {
    return std::stoull(hex, nullptr, 16);
}

Account nobody() {
    const passwd* pw = getpwnam("nobody");
    if (pw == nullptr) return {};
    return {"nobody", pw->pw_uid, pw->pw_gid};
}

TEST(Privileges, RootSwitchesToTheAccountKeepingOnlyTheTwoCapabilities) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
    const Account account = nobody();
    ASSERT_FALSE(account.name.empty()) << "no user nobody";
    auto got = in_child([&] {
        drop_privileges(account, "test.toml", 3);
        std::string out = proc_status();
        // What an exploited daemon would try.
        out += std::string("shadow ") +
               (access("/etc/shadow", R_OK) == 0 ? "readable" : "refused") + "\n";
        out += std::string("setuid0 ") + (setuid(0) == 0 ? "succeeded" : "refused") + "\n";
        // What it still needs: raw injection sockets.
        int raw = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
        out += std::string("raw ") + (raw >= 0 ? "opened" : "refused") + "\n";
        if (raw >= 0) close(raw);
        out += "describe " + describe_privileges() + "\n";
        return out;
    });
    ASSERT_EQ(got.count("error"), 0u) << got["error"];
    const std::string uid = std::to_string(account.uid);
    EXPECT_EQ(got["Uid:"], uid + "\t" + uid + "\t" + uid + "\t" + uid);
    const std::string gid = std::to_string(account.gid);
    EXPECT_EQ(got["Gid:"], gid + "\t" + gid + "\t" + gid + "\t" + gid);
    std::istringstream groups(got["Groups:"]);
    for (std::string group; groups >> group;)
        EXPECT_NE(group, "0") << "root's group kept: " << got["Groups:"];
    EXPECT_EQ(mask(got["CapPrm:"]), kNetAdminAndRaw);
    EXPECT_EQ(mask(got["CapEff:"]), kNetAdminAndRaw);
    EXPECT_EQ(mask(got["CapBnd:"]), kNetAdminAndRaw);
    EXPECT_EQ(mask(got["CapInh:"]), 0u);
    EXPECT_EQ(mask(got["CapAmb:"]), 0u);
    EXPECT_EQ(got["NoNewPrivs:"], "1");
    EXPECT_EQ(got["shadow"], "refused");
    EXPECT_EQ(got["setuid0"], "refused");
    EXPECT_EQ(got["raw"], "opened");
    EXPECT_NE(got["describe"].find("user nobody (uid " + uid), std::string::npos)
        << got["describe"];
    EXPECT_NE(got["describe"].find("cap_net_admin,cap_net_raw=ep"), std::string::npos)
        << got["describe"];
}

// Capabilities belong to threads: one started before would keep all of
// root's. The drop refuses instead.
TEST(Privileges, RefusesWhileOtherThreadsRun) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
    const Account account = nobody();
    auto got = in_child([&] {
        int hold[2];
        if (pipe(hold) != 0) return std::string("error pipe\n");
        std::thread waiting([fd = hold[0]] {
            char c;
            (void)!read(fd, &c, 1);
        });
        std::string out;
        try {
            drop_privileges(account, "test.toml", 3);
            out = "dropped\n";
        } catch (const std::logic_error& e) {
            out = std::string("refused ") + e.what() + "\n";
        }
        close(hold[1]);
        waiting.join();
        return out + proc_status();
    });
    EXPECT_EQ(got.count("dropped"), 0u);
    EXPECT_NE(got["refused"].find("2 threads"), std::string::npos) << got["refused"];
    EXPECT_EQ(got["Uid:"], "0\t0\t0\t0") << "the refusal must come before any change";
}

TEST(Privileges, EmptyUserChangesNothing) {
    DaemonConfig daemon;
    daemon.user = "";
    EXPECT_FALSE(configured_account(daemon, "test.toml").has_value());
    auto got = in_child([] {
        const std::string before = proc_status();
        drop_privileges(std::nullopt, "test.toml", 0);
        return std::string("same ") + (proc_status() == before ? "yes" : "no") + "\n";
    });
    EXPECT_EQ(got["same"], "yes");
}

TEST(Privileges, UnknownUserIsAConfigErrorWithFileLineAndKey) {
    Config c =
        parse_config("[daemon]\nqueues = \"0\"\nuser = \"no-such-user-here\"\n", "test.toml");
    try {
        configured_account(c.daemon, c.source);
        FAIL() << "an unknown user was accepted";
    } catch (const ConfigError& e) {
        EXPECT_EQ(e.file(), "test.toml");
        EXPECT_EQ(e.line(), 3u);
        EXPECT_EQ(e.key(), "daemon.user");
        EXPECT_NE(std::string(e.what()).find("no user named \"no-such-user-here\""),
                  std::string::npos)
            << e.what();
    }
    DaemonConfig defaulted;
    defaulted.user = "no-such-user-here";
    try {
        configured_account(defaulted, "test.toml");
        FAIL() << "an unknown user was accepted";
    } catch (const ConfigError& e) {
        EXPECT_EQ(e.line(), 0u);
        EXPECT_NE(std::string(e.what()).find("(the default)"), std::string::npos) << e.what();
    }
}

TEST(Privileges, UserKeyIsReadAndMustBeAString) {
    const Config c = parse_config("[daemon]\nuser = \"\"\n", "test.toml");
    EXPECT_EQ(c.daemon.user, "");
    EXPECT_EQ(c.daemon.user_line, 2u);
    EXPECT_EQ(parse_config("", "test.toml").daemon.user, "nfqscan");
    try {
        parse_config("[daemon]\nuser = 0\n", "test.toml");
        FAIL() << "a number was accepted as a user";
    } catch (const ConfigError& e) {
        EXPECT_EQ(e.line(), 2u);
        EXPECT_EQ(e.key(), "daemon.user");
    }
}

TEST(Privileges, CreatedFoldersAndTheEventLogBecomeTheAccounts) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to give files away";
    const Account account = nobody();
    test::TempDir dir;
    const std::string nested = dir.path() + "/run/nfqscan";
    create_owned_directories(nested, account);
    struct stat st {};
    ASSERT_EQ(stat(nested.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, account.uid);
    ASSERT_EQ(stat((dir.path() + "/run").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, account.uid);
    ASSERT_EQ(stat(dir.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << "an existing folder was given away";

    const std::string log = nested + "/events.jsonl";
    test::write_file(log, "{}\n");
    give_file_to(log, account);
    ASSERT_EQ(stat(log.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, account.uid);
    give_file_to(nested + "/missing.jsonl", account);  // not an error
    // A link is never followed: root must not chown what it points at.
    const std::string target = dir.file("target");
    test::write_file(target, "x");
    ASSERT_EQ(symlink(target.c_str(), (nested + "/link.jsonl").c_str()), 0);
    EXPECT_THROW(give_file_to(nested + "/link.jsonl", account), std::exception);
    ASSERT_EQ(stat(target.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
}

}  // namespace
}  // namespace nfqscan
