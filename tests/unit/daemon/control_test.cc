#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

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
    server.handle_async("slow", [&](const nlohmann::json&, PendingReply reply) {
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
    server.handle_async("lost", [](const nlohmann::json&, PendingReply) {});
    server.handle_async("throws", [](const nlohmann::json&, PendingReply) {
        throw std::runtime_error("bad arguments");
    });
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
