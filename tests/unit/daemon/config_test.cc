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

TEST(ScanConfig, ShippedFileMatchesLibraryDefaultsAndFindsTheShippedRules) {
    Config c = load_config("rules/nfqscan.toml");
    ScanConfig d;
    EXPECT_EQ(c.scan.engine, ScanConfig::Backend::InProcess);
    EXPECT_EQ(c.scan.clamd_address, d.clamd_address);
    EXPECT_EQ(c.scan.limits.max_content_size, d.limits.max_content_size);
    EXPECT_EQ(c.scan.limits.max_scan_size, d.limits.max_scan_size);
    EXPECT_EQ(c.scan.limits.max_layers, d.limits.max_layers);
    EXPECT_EQ(c.scan.limits.max_files, d.limits.max_files);
    EXPECT_EQ(c.scan.limits.max_scan_time_ms, d.limits.max_scan_time_ms);
    EXPECT_EQ(c.scan.pool_threads, d.pool_threads);
    EXPECT_EQ(c.scan.queue_length, d.queue_length);
    EXPECT_EQ(c.scan.isolation, d.isolation);
    // Relative folders resolve beside the file: rules/clamav, rules/yara.
    EXPECT_EQ(c.scan.clamav_db_dirs, (std::vector<std::string>{"/var/lib/clamav", "rules/clamav"}));
    EXPECT_EQ(c.scan.yara_rule_dirs, (std::vector<std::string>{"rules/yara"}));
    ASSERT_EQ(c.scan.profiles.count("default"), 1u);
    EXPECT_EQ(c.scan.profiles["default"].mode, ScanProfile::Mode::All);
}

TEST(ScanConfig, EmptyFileLooksForRulesBesideIt) {
    Config c = parse_config("", "/etc/nfqscan/nfqscan.toml");
    EXPECT_EQ(c.scan.clamav_db_dirs,
              (std::vector<std::string>{"/var/lib/clamav", "/etc/nfqscan/clamav"}));
    EXPECT_EQ(c.scan.yara_rule_dirs, (std::vector<std::string>{"/etc/nfqscan/yara"}));
    EXPECT_TRUE(c.scan.temp_dir.empty());
}

TEST(ScanConfig, ValuesAreReadAndRelativeFoldersResolved) {
    Config c = parse_config(R"(
[scan]
engine = "clamd"
clamd_address = "127.0.0.1:3310"
clamd_connect_timeout_ms = 250
clamav_db_dirs = ["sigs", "/opt/clamav"]
yara_rule_dirs = ["../shared/yara"]
temp_dir = "tmp"
pool_threads = 3
queue_length = 10
isolation = "thread"
[scan.limits]
max_content_size = "16M"
max_scan_size = 100000000
max_layers = 5
max_files = 50
max_scan_time_ms = 2000
[scan.profiles.mail]
mode = "listed"
extensions = [".exe", "zip"]
mime_types = ["application/*"]
[scan.profiles.web]
mode = "all"
)",
                            "/etc/nfq/conf/test.toml");
    EXPECT_EQ(c.scan.engine, ScanConfig::Backend::Clamd);
    EXPECT_EQ(c.scan.clamd_address, "127.0.0.1:3310");
    EXPECT_EQ(c.scan.clamd_connect_timeout_ms, 250u);
    EXPECT_EQ(c.scan.clamav_db_dirs,
              (std::vector<std::string>{"/etc/nfq/conf/sigs", "/opt/clamav"}));
    EXPECT_EQ(c.scan.yara_rule_dirs, (std::vector<std::string>{"/etc/nfq/shared/yara"}));
    EXPECT_EQ(c.scan.temp_dir, "/etc/nfq/conf/tmp");
    EXPECT_EQ(c.scan.pool_threads, 3u);
    EXPECT_EQ(c.scan.queue_length, 10u);
    EXPECT_EQ(c.scan.isolation, ScanConfig::Isolation::Thread);
    EXPECT_EQ(c.scan.limits.max_content_size, 16ull << 20);
    EXPECT_EQ(c.scan.limits.max_scan_size, 100000000u);
    EXPECT_EQ(c.scan.limits.max_layers, 5u);
    EXPECT_EQ(c.scan.limits.max_files, 50u);
    EXPECT_EQ(c.scan.limits.max_scan_time_ms, 2000u);
    ASSERT_EQ(c.scan.profiles.size(), 2u);
    const ScanProfile& mail = c.scan.profiles["mail"];
    EXPECT_EQ(mail.mode, ScanProfile::Mode::Listed);
    EXPECT_EQ(mail.extensions, (std::vector<std::string>{"exe", "zip"}));
    EXPECT_EQ(mail.mime_types, (std::vector<std::string>{"application/*"}));
    EXPECT_EQ(c.scan.profiles["web"].mode, ScanProfile::Mode::All);
}

TEST(ScanConfig, SizesTakeBinarySuffixes) {
    auto size = [](const std::string& value) {
        return parse_config("[scan.limits]\nmax_scan_size = " + value + "\n", "t.toml")
            .scan.limits.max_scan_size;
    };
    EXPECT_EQ(size("\"512K\""), 512u << 10);
    EXPECT_EQ(size("\"64 MiB\""), 64ull << 20);
    EXPECT_EQ(size("\"1G\""), 1ull << 30);
    EXPECT_EQ(size("\"2048\""), 2048u);
    EXPECT_EQ(size("4_096"), 4096u);
}

TEST(StreamConfig, SizesAreReadAndCheckedByKey) {
    Config c = parse_config("[stream]\nhold_limit = \"8M\"\nrelay_limit = 1048576\n", "s.toml");
    EXPECT_EQ(c.stream.hold_limit, 8u << 20);
    EXPECT_EQ(c.stream.relay_limit, 1u << 20);
    EXPECT_EQ(c.stream.pending_limit, StreamConfig{}.pending_limit);
    expect_error("[stream]\nrelay_limit = \"1K\"\n", 2, "stream.relay_limit", "size");
    expect_error("[stream]\n\nhold_limit = \"lots\"\n", 3, "stream.hold_limit", "size");
    expect_error("[stream]\nretained_limit = \"8M\"\n", 2, "stream.retained_limit", "unknown key");
    EXPECT_EQ(parse_config("[stream]\noverflow = \"drop\"\nmemory_limit = \"2G\"\n", "s.toml")
                  .stream.overflow,
              StreamConfig::Overflow::Drop);
    expect_error("[stream]\noverflow = \"reset\"\n", 2, "stream.overflow", "bypass, drop");
    expect_error("[stream]\nmemory_limit = \"512K\"\n", 2, "stream.memory_limit", "size");
    EXPECT_EQ(StreamConfig{}.relay_device, "nfqscan0");
    EXPECT_EQ(parse_config("[stream]\nrelay_device = \"\"\n", "s.toml").stream.relay_device, "");
    EXPECT_EQ(parse_config("[stream]\nrelay_device = \"relay7\"\n", "s.toml").stream.relay_device,
              "relay7");
    expect_error("[stream]\n\nrelay_device = \"a-name-far-too-long\"\n", 3, "stream.relay_device",
                 "interface name");
    expect_error("[stream]\nrelay_device = \"no/slash\"\n", 2, "stream.relay_device",
                 "interface name");
    expect_error("[stream]\nrelay_device = 5\n", 2, "stream.relay_device", "interface name");
}

TEST(ScanConfig, ErrorsNameFileLineAndKey) {
    expect_error("[scan]\nengine = \"inprocess\"\nengines = 2\n", 3, "scan.engines", "unknown key");
    expect_error("[scan]\nengine = \"clamav\"\n", 2, "scan.engine", "one of inprocess, clamd");
    expect_error("[scan]\nclamd_address = \"localhost\"\n", 2, "scan.clamd_address", "host:port");
    expect_error("[scan]\nclamd_address = \"host:99999\"\n", 2, "scan.clamd_address", "host:port");
    expect_error("[scan]\nyara_rule_dirs = \"rules/yara\"\n", 2, "scan.yara_rule_dirs",
                 "array of strings");
    expect_error("[scan]\nclamav_db_dirs = [\"a\",\n  7]\n", 3, "scan.clamav_db_dirs",
                 "non-empty strings");
    expect_error("[scan]\npool_threads = 1000\n", 2, "scan.pool_threads", "0 to 256");
    expect_error("[scan]\nqueue_length = 0\n", 2, "scan.queue_length", "1 to");
    expect_error("[scan]\nisolation = \"fork\"\n", 2, "scan.isolation", "process");
    expect_error("[scan]\ntemp_dir = 3\n", 2, "scan.temp_dir", "string");
    expect_error("[scan]\nlimits = 5\n", 2, "scan.limits", "table");
}

TEST(ScanConfig, LimitErrorsNameFileLineAndKey) {
    expect_error("[scan.limits]\nmax_layer = 3\n", 2, "scan.limits.max_layer", "unknown key");
    expect_error("[scan.limits]\nmax_content_size = \"32Q\"\n", 2, "scan.limits.max_content_size",
                 "size");
    expect_error("[scan.limits]\nmax_content_size = -1\n", 2, "scan.limits.max_content_size",
                 "size");
    expect_error("[scan.limits]\nmax_scan_size = \"5G\"\n", 2, "scan.limits.max_scan_size", "size");
    expect_error("[scan.limits]\nmax_layers = 0\n", 2, "scan.limits.max_layers", "1 to 100");
    expect_error("[scan.limits]\nmax_files = 0\n", 2, "scan.limits.max_files", "integer");
    expect_error("[scan.limits]\n\nmax_scan_time_ms = 1.5\n", 3, "scan.limits.max_scan_time_ms",
                 "integer");
}

TEST(ScanConfig, ProfileErrorsNameFileLineAndKey) {
    expect_error("[scan.profiles.mail]\nmode = \"some\"\n", 2, "scan.profiles.mail.mode",
                 "one of all, listed");
    expect_error("[scan.profiles.mail]\nmode = \"listed\"\n", 2, "scan.profiles.mail.mode",
                 "needs extensions or mime_types");
    expect_error("[scan.profiles.mail]\nmode = \"listed\"\nmime_types = [\"zip\"]\n", 3,
                 "scan.profiles.mail.mime_types", "type/subtype");
    expect_error("[scan.profiles.mail]\nextensions = [\"tar/gz\"]\n", 2,
                 "scan.profiles.mail.extensions", "name suffix");
    expect_error("[scan.profiles.mail]\nmode = \"all\"\nmodes = 1\n", 3, "scan.profiles.mail.modes",
                 "unknown key");
    expect_error("[scan.profiles]\nmail = \"listed\"\n", 2, "scan.profiles.mail", "table");
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
