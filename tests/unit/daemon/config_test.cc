#include <gtest/gtest.h>

#include "nfqscan/config.h"

namespace nfqscan {
namespace {

// The error must name the file, the line and the key.
void expect_error(const std::string& text, uint32_t line, const std::string& key,
                  const std::string& fragment) {
    try {
        parse_config(text, "test.toml");
        FAIL() << "accepted:\n" << text;
    } catch (const ConfigError& e) {
        EXPECT_EQ(e.file(), "test.toml");
        EXPECT_EQ(e.line(), line) << e.what();
        EXPECT_EQ(e.key(), key) << e.what();
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("test.toml:" + std::to_string(line)),
                  std::string::npos)
            << e.what();
    }
}

TEST(Config, ShippedDefaultFileLoadsAndMatchesDefaults) {
    Config c = load_config("rules/nfqscan.toml");
    Config d = Config::defaults();
    EXPECT_EQ(c.daemon.queues.first, 0);
    EXPECT_EQ(c.daemon.queues.last, 1);
    EXPECT_EQ(c.marks.release, d.marks.release);
    EXPECT_EQ(c.marks.inject, d.marks.inject);
    EXPECT_EQ(c.flows.max_flows, d.flows.max_flows);
    EXPECT_EQ(c.ports.lookup(80), Service::Http);
    EXPECT_EQ(c.ports.lookup(110), Service::Pop3);
    EXPECT_EQ(c.ports.lookup(2222), Service::None);
}

TEST(Config, EmptyFileGivesDefaults) {
    Config c = parse_config("", "empty.toml");
    EXPECT_EQ(c.ports.lookup(25), Service::Smtp);
    EXPECT_TRUE(c.queue.gso);
}

TEST(Config, ValuesAreRead) {
    Config c = parse_config(R"(
[daemon]
queues = "4-7"
log_level = "debug"
[flows]
max_flows = 1000
[protocols.pop3]
ports = [110, 1110]
)",
                            "t.toml");
    EXPECT_EQ(c.daemon.queues.first, 4);
    EXPECT_EQ(c.daemon.queues.count(), 4u);
    EXPECT_EQ(c.daemon.log_level, "debug");
    EXPECT_EQ(c.flows.max_flows, 1000u);
    EXPECT_EQ(c.ports.lookup(1110), Service::Pop3);
}

TEST(Config, UnknownKeyNamesFileLineAndKey) {
    expect_error("[daemon]\nqueues = \"0-1\"\n\nqueue_count = 3\n", 4, "daemon.queue_count",
                 "unknown key");
}

TEST(Config, UnknownSectionIsAnError) {
    expect_error("[daemon]\n[deamon]\nqueues = \"1\"\n", 2, "deamon", "unknown key");
}

TEST(Config, UnknownProtocolIsAnError) {
    expect_error("[protocols.gopher]\nports = [70]\n", 1, "protocols.gopher", "unknown key");
}

TEST(Config, BadValuesNameTheirLine) {
    expect_error("[flows]\nmax_flows = -5\n", 2, "flows.max_flows", "integer");
    expect_error("[flows]\nmax_flows = \"many\"\n", 2, "flows.max_flows", "integer");
    expect_error("[queue]\ngso = 1\n", 2, "queue.gso", "true or false");
    expect_error("[daemon]\nqueues = \"3-1\"\n", 2, "daemon.queues", "N <= M");
    expect_error("[daemon]\nqueues = 2\n", 2, "daemon.queues", "string");
    expect_error("[daemon]\nlog_level = \"loud\"\n", 2, "daemon.log_level", "one of");
    expect_error("[protocols.http]\nports = [80, 70000]\n", 2, "protocols.http.ports", "65535");
    expect_error("daemon = 5\n", 1, "daemon", "table");
}

TEST(Config, CrossFieldRules) {
    expect_error("[marks]\nrelease = 1\ninject = 3\n", 3, "marks.inject", "share bits");
    expect_error("[protocols.http]\nports = [80]\n[protocols.smtp]\nports = [80]\n", 4,
                 "protocols.smtp.ports", "already listed for http");
}

TEST(Config, SyntaxErrorNamesTheLine) {
    expect_error("[daemon]\nqueues = \"0-1\n", 2, "syntax", "");
}

TEST(Config, MissingFileIsAnError) {
    EXPECT_THROW(load_config("/nonexistent/nfqscan.toml"), ConfigError);
}

TEST(QueueRange, ParsesSingleAndRange) {
    EXPECT_EQ(QueueRange::parse("3").count(), 1u);
    EXPECT_EQ(QueueRange::parse("0-3").last, 3);
    EXPECT_THROW(QueueRange::parse(""), std::invalid_argument);
    EXPECT_THROW(QueueRange::parse("a-b"), std::invalid_argument);
    EXPECT_THROW(QueueRange::parse("70000"), std::invalid_argument);
    EXPECT_THROW(QueueRange::parse("0-100"), std::invalid_argument);
}

}  // namespace
}  // namespace nfqscan
