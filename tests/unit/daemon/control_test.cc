#include <gtest/gtest.h>
#include <unistd.h>

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
