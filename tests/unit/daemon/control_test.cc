#include <grp.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "child_output.h"
#include "nfqscan/control.h"

namespace nfqscan {
namespace {

std::string socket_path() {
    return "/tmp/nfqscan-control-test-" + std::to_string(getpid()) + ".sock";
}

TEST(ControlServer, AnswersRegisteredCommandsOverTheSocket) {
    ControlServer server(socket_path());
    server.handle("echo", [](const nlohmann::json& r) { return r["value"]; });
    server.start();
    nlohmann::json reply =
        control_request(socket_path(), {{"command", "echo"}, {"value", {1, 2, 3}}});
    EXPECT_EQ(reply, nlohmann::json({1, 2, 3}));
    try {
        control_request(socket_path(), {{"command", "nope"}});
        FAIL();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown command: nope"), std::string::npos);
    }
}

TEST(ControlServer, MalformedRequestsGetErrorsNotCrashes) {
    ControlServer server(socket_path());
    server.handle("x", [](const nlohmann::json&) -> nlohmann::json {
        throw std::runtime_error("handler failed");
    });
    EXPECT_NE(server.dispatch("{not json").find("\"ok\":false"), std::string::npos);
    EXPECT_NE(server.dispatch("[1,2]").find("must be an object"), std::string::npos);
    EXPECT_NE(server.dispatch(R"({"command":"x"})").find("handler failed"), std::string::npos);
}

TEST(ControlServer, HeldRequestDoesNotBlockOtherRequests) {
    ControlServer server(socket_path());
    std::mutex mutex;
    std::condition_variable cv;
    std::optional<PendingReply> held;
    std::thread::id handler_thread, completion_thread;
    server.handle_async("slow", [&](ControlRequest&, PendingReply reply) {
        std::lock_guard lock(mutex);
        handler_thread = std::this_thread::get_id();
        held = std::move(reply);
        cv.notify_all();
    });
    server.handle("echo", [](const nlohmann::json& r) { return r["value"]; });
    server.start();

    std::optional<nlohmann::json> slow_reply;
    std::thread client([&] { slow_reply = control_request(socket_path(), {{"command", "slow"}}); });
    {
        std::unique_lock lock(mutex);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return held.has_value(); }));
    }
    // The control thread is free while "slow" is held.
    EXPECT_EQ(control_request(socket_path(), {{"command", "echo"}, {"value", 7}}), 7);
    EXPECT_FALSE(slow_reply.has_value());

    // Answered from another thread; completions can also be posted back.
    std::thread worker([&] {
        server.post([&] { completion_thread = std::this_thread::get_id(); });
        held->ok({{"done", true}});
        held->ok({{"done", false}});  // only the first answer counts
    });
    worker.join();
    client.join();
    ASSERT_TRUE(slow_reply.has_value());
    EXPECT_EQ((*slow_reply)["done"], true);
    EXPECT_EQ(completion_thread, handler_thread);
}

TEST(ControlServer, HeldRequestDroppedWithoutAnAnswerGetsAnError) {
    ControlServer server(socket_path());
    server.handle_async("lost", [](ControlRequest&, PendingReply) {});
    server.handle_async(
        "throws", [](ControlRequest&, PendingReply) { throw std::runtime_error("bad arguments"); });
    server.start();
    try {
        control_request(socket_path(), {{"command", "lost"}});
        FAIL();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("without an answer"), std::string::npos) << e.what();
    }
    try {
        control_request(socket_path(), {{"command", "throws"}});
        FAIL();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("bad arguments"), std::string::npos) << e.what();
    }
}

TEST(ControlServer, AdminCommandsAreRootsAndQueriesTheGroupsToo) {
    ControlServer server(socket_path(), {.query_group = 4242, .query_group_name = "nfqview"});
    server.handle("status", [](const nlohmann::json&) { return 1; });
    server.handle(
        "reload", [](const nlohmann::json&) { return 2; }, ControlAccess::Admin);
    const std::string status = R"({"command":"status"})";
    const std::string reload = R"({"command":"reload"})";

    EXPECT_NE(server.dispatch(reload, {.uid = 0}).find("\"ok\":true"), std::string::npos);
    ControlPeer member{.uid = 1000, .gid = 4242};
    EXPECT_NE(server.dispatch(status, member).find("\"ok\":true"), std::string::npos);
    const std::string refused = server.dispatch(reload, member);
    EXPECT_NE(refused.find("permission denied: uid 1000"), std::string::npos) << refused;
    EXPECT_NE(refused.find("only root"), std::string::npos) << refused;
    ControlPeer supplementary{.uid = 1000, .gid = 100, .groups = {27, 4242}};
    EXPECT_NE(server.dispatch(status, supplementary).find("\"ok\":true"), std::string::npos);
    ControlPeer stranger{.uid = 1000, .gid = 100, .groups = {27}};
    const std::string denied = server.dispatch(status, stranger);
    EXPECT_NE(denied.find("members of group nfqview"), std::string::npos) << denied;

    ControlServer closed(socket_path() + ".2");
    closed.handle("status", [](const nlohmann::json&) { return 1; });
    const std::string nobody = closed.dispatch(status, stranger);
    EXPECT_NE(nobody.find("[daemon] control_group"), std::string::npos) << nobody;
}

// The credentials the kernel reports for a real connection (SO_PEERCRED,
// SO_PEERGROUPS) are what is checked: a child process drops to another user.
TEST(ControlServer, ChecksTheKernelsCredentialsOfTheCaller) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
    const gid_t group = 4242;
    ControlServer server(socket_path(), {.query_group = group, .query_group_name = "nfqview"});
    server.handle("status", [](const nlohmann::json&) { return "fine"; });
    server.handle(
        "reload", [](const nlohmann::json&) { return 2; }, ControlAccess::Admin);
    server.start();
    struct stat st {};
    ASSERT_EQ(stat(socket_path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0660u);
    EXPECT_EQ(st.st_gid, group);

    // Runs `command` as uid 65534 with the given groups; returns what it got.
    const std::string path = socket_path();  // the child's pid is another
    auto ask_as = [&](gid_t gid, std::vector<gid_t> groups, const std::string& command) {
        return test::output_of_child([&]() -> std::string {
            if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 ||
                setuid(65534) != 0)
                return "cannot switch user";
            try {
                return control_request(path, {{"command", command}}).dump();
            } catch (const std::exception& e) {
                return e.what();
            }
        });
    };
    EXPECT_EQ(ask_as(group, {}, "status"), "\"fine\"");
    EXPECT_EQ(ask_as(100, {group}, "status"), "\"fine\"");  // a supplementary group
    EXPECT_NE(ask_as(group, {}, "reload").find("permission denied: uid 65534"), std::string::npos);
    // Outside the group the socket file's mode already keeps it out.
    EXPECT_NE(ask_as(100, {}, "status").find("cannot reach"), std::string::npos);
}

TEST(ControlServer, StuckClientsDoNotHoldUpOthers) {
    ControlServer server(socket_path());
    server.handle("echo", [](const nlohmann::json& r) { return r["value"]; });
    server.handle("big", [](const nlohmann::json&) { return std::string(8u << 20, 'x'); });
    server.start();
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, socket_path().c_str());
    auto connect_raw = [&] {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        return fd;
    };
    std::vector<int> stuck;
    // Silent clients, one with half a request, one that never reads its
    // 8 MiB answer: served one after another with a 5 s bound each, the echo
    // below would wait over a minute.
    for (int i = 0; i < 12; ++i)
        stuck.push_back(connect_raw());
    int half = connect_raw();
    ASSERT_EQ(write(half, "{\"comm", 6), 6);
    int greedy = connect_raw();
    const std::string big = "{\"command\":\"big\"}\n";
    ASSERT_EQ(write(greedy, big.data(), big.size()), ssize_t(big.size()));
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(control_request(socket_path(), {{"command", "echo"}, {"value", 5}},
                              std::chrono::seconds(4)),
              5);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
    for (int fd : stuck)
        close(fd);
    close(half);
    close(greedy);
}

TEST(ControlServer, FilesComeAsDescriptorsWithTheRequest) {
    ControlServer server(socket_path());
    server.handle_async("sizes", [](ControlRequest& request, PendingReply reply) {
        nlohmann::json sizes = nlohmann::json::array();
        for (const UniqueFd& fd : request.files) {
            struct stat st {};
            fstat(fd.get(), &st);
            sizes.push_back(st.st_size);
        }
        reply.ok({{"sizes", sizes}, {"uid", request.peer.uid}});
    });
    server.start();
    UniqueFd a(memfd_create("a", MFD_CLOEXEC)), b(memfd_create("b", MFD_CLOEXEC));
    ASSERT_EQ(ftruncate(a.get(), 1234), 0);
    ASSERT_EQ(ftruncate(b.get(), 99), 0);
    nlohmann::json reply = control_request(socket_path(), {{"command", "sizes"}},
                                           std::chrono::seconds(10), {a.get(), b.get()});
    EXPECT_EQ(reply["sizes"], nlohmann::json({1234, 99}));
    EXPECT_EQ(reply["uid"], geteuid());
}

TEST(ControlServer, RefusesToTakeOverALiveSocket) {
    ControlServer server(socket_path());
    server.start();
    EXPECT_THROW(ControlServer second(socket_path()), std::runtime_error);
}

TEST(ControlClient, ReportsAnAbsentDaemon) {
    EXPECT_THROW(control_request("/tmp/nfqscan-no-such.sock", {{"command", "status"}}),
                 std::runtime_error);
}

}  // namespace
}  // namespace nfqscan
