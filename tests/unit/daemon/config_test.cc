#include <gtest/gtest.h>

#include <filesystem>

#include "../scan/scan_test_support.h"
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
    EXPECT_EQ(c.marks.engine, d.marks.engine);
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

TEST(Config, ControlGroupMustExist) {
    expect_error("[daemon]\ncontrol_group = \"no-such-group-nfq\"\n", 2, "daemon.control_group",
                 "no group named");
    EXPECT_EQ(parse_config("[daemon]\ncontrol_group = \"root\"\n", "t.toml").daemon.control_group,
              "root");
}

TEST(Config, MetricsListenIsOffOrAnAddressAndPort) {
    EXPECT_EQ(parse_config("", "t.toml").daemon.metrics_listen, "");
    EXPECT_EQ(parse_config("[daemon]\nmetrics_listen = \"127.0.0.1:9464\"\n", "t.toml")
                  .daemon.metrics_listen,
              "127.0.0.1:9464");
    EXPECT_EQ(
        parse_config("[daemon]\nmetrics_listen = \"[::1]:9464\"\n", "t.toml").daemon.metrics_listen,
        "[::1]:9464");
    expect_error("[daemon]\n\nmetrics_listen = \"localhost:9464\"\n", 3, "daemon.metrics_listen",
                 "not an IPv4 address");
    expect_error("[daemon]\nmetrics_listen = \"127.0.0.1\"\n", 2, "daemon.metrics_listen",
                 "address:port");
    expect_error("[daemon]\nmetrics_listen = \"[::1]:0\"\n", 2, "daemon.metrics_listen", "port");
    expect_error("[daemon]\nmetrics_listen = 9464\n", 2, "daemon.metrics_listen", "string");
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
    expect_error("[marks]\nrelease = 1\ninject = 2\nengine = 6\n", 4, "marks.engine", "share bits");
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
    EXPECT_EQ(c.scan.cache_entries, 100000u);
    EXPECT_EQ(c.scan.cache_entries, d.cache_entries);
    EXPECT_EQ(c.scan.reload, ScanConfig::ReloadMode::Concurrent);
    EXPECT_EQ(c.scan.reload, d.reload);
    EXPECT_EQ(c.scan.watch_signatures, d.watch_signatures);
    EXPECT_EQ(c.scan.self_check_s, 600u);
    EXPECT_EQ(c.scan.self_check_s, d.self_check_s);
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
cache_entries = 0
reload = "blocking"
watch_signatures = false
self_check_s = 0
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
    EXPECT_EQ(c.scan.cache_entries, 0u);
    EXPECT_EQ(c.scan.reload, ScanConfig::ReloadMode::Blocking);
    EXPECT_FALSE(c.scan.watch_signatures);
    EXPECT_EQ(c.scan.self_check_s, 0u);
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
    Config c = parse_config(
        "[stream]\nhold_limit = \"8M\"\nrelay_limit = 2097152\n[scan.limits]\n"
        "max_content_size = \"1M\"\n",
        "s.toml");
    EXPECT_EQ(c.stream.hold_limit, 8u << 20);
    EXPECT_EQ(c.stream.relay_limit, 2u << 20);
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
    expect_error("[scan]\n\ncache_entries = -1\n", 3, "scan.cache_entries", "0 to 10000000");
    expect_error("[scan]\ncache_entries = 10000001\n", 2, "scan.cache_entries", "0 to");
    expect_error("[scan]\nisolation = \"fork\"\n", 2, "scan.isolation", "process");
    expect_error("[scan]\nreload = \"lazy\"\n", 2, "scan.reload", "concurrent, blocking");
    expect_error("[scan]\nwatch_signatures = 1\n", 2, "scan.watch_signatures", "true or false");
    expect_error("[scan]\n\nself_check_s = -5\n", 3, "scan.self_check_s", "0 to 604800");
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

TEST(ConfigPolicy, ShippedFileHasTheLibraryDefaults) {
    Config c = load_config("rules/nfqscan.toml");
    const ProtocolPolicy d;
    for (size_t i = 1; i < kServiceCount; ++i) {
        const ProtocolPolicy& p = c.protocols[i].policy;
        EXPECT_TRUE(p.scan) << kServiceNames[i];
        EXPECT_EQ(p.on_virus, Action::Block) << kServiceNames[i];
        EXPECT_EQ(p.on_policy, Action::Block) << kServiceNames[i];
        EXPECT_EQ(p.fallback, ProtocolPolicy::default_fallbacks()) << kServiceNames[i];
        EXPECT_TRUE(p.allow_hosts.empty());
        EXPECT_TRUE(p.allow_urls.empty());
        EXPECT_EQ(p.trickle_after_s, d.trickle_after_s);
        EXPECT_EQ(p.allowlist_release, d.allowlist_release);
    }
    EXPECT_EQ(c.daemon.messages_dir, "rules/messages");
    ASSERT_TRUE(c.messages);
    EXPECT_TRUE(c.messages->has("http-block"));
    EXPECT_TRUE(c.messages->has("mail-virus-notice"));
    EXPECT_TRUE(c.messages->has("ftp-drop"));
}

TEST(ConfigPolicy, ProtocolKeysAreRead) {
    Config c = parse_config(R"(
[protocols.http]
ports = [80]
scan = true
profile = "web"
on_virus = "block"
on_policy = "pass"
allow_hosts = ["Updates.Example.com", ".cdn.example.net", "[2001:db8::1]"]
allow_urls = ["http://example.com/pub/"]
trickle_after_s = 20
allowlist_release = false
[protocols.http.fallback]
default = "block"
engine-not-ready = "pass"
[protocols.smtp]
scan = false
on_virus = "pass"
[protocols.smtp.fallback]
encrypted = "block"
[scan.profiles.web]
mode = "all"
)",
                            "t.toml");
    const ProtocolPolicy& http = c.protocols[size_t(Service::Http)].policy;
    EXPECT_TRUE(http.scan);
    EXPECT_EQ(http.profile, "web");
    EXPECT_EQ(http.on_virus, Action::Block);
    EXPECT_EQ(http.on_policy, Action::Pass);
    EXPECT_EQ(http.allow_hosts,
              (std::vector<std::string>{"updates.example.com", ".cdn.example.net", "2001:db8::1"}));
    EXPECT_EQ(http.allow_urls, (std::vector<std::string>{"http://example.com/pub/"}));
    EXPECT_EQ(http.trickle_after_s, 20u);
    EXPECT_FALSE(http.allowlist_release);
    EXPECT_TRUE(http.allowlisted("updates.example.com:80", ""));
    // default = block applies to every category not listed.
    for (size_t i = 0; i < kCategoryCount; ++i) {
        const Category cat = static_cast<Category>(i);
        EXPECT_EQ(http.fallback_for(cat),
                  cat == Category::EngineNotReady ? Action::Pass : Action::Block)
            << category_name(cat);
    }
    const ProtocolPolicy& smtp = c.protocols[size_t(Service::Smtp)].policy;
    EXPECT_FALSE(smtp.scan);
    EXPECT_EQ(smtp.on_virus, Action::Pass);
    // Without default, unlisted categories keep their defaults.
    std::array<Action, kCategoryCount> want = ProtocolPolicy::default_fallbacks();
    want[size_t(Category::Encrypted)] = Action::Block;
    EXPECT_EQ(smtp.fallback, want);
    EXPECT_EQ(c.protocols[size_t(Service::Pop3)].policy.fallback,
              ProtocolPolicy::default_fallbacks());
}

TEST(ConfigPolicy, DefaultProfileNeedsNoTable) {
    EXPECT_EQ(parse_config("[protocols.ftp]\nprofile = \"default\"\n", "t.toml")
                  .protocols[size_t(Service::Ftp)]
                  .policy.profile,
              "default");
}

TEST(ConfigPolicy, ErrorsNameFileLineAndKey) {
    expect_error("[protocols.http]\non_virus = \"drop\"\n", 2, "protocols.http.on_virus",
                 "one of block, pass");
    expect_error("[protocols.imap]\n\non_policy = true\n", 3, "protocols.imap.on_policy",
                 "one of replace, strip, pass");
    expect_error("[protocols.pop3]\non_virus = \"reject\"\n", 2, "protocols.pop3.on_virus",
                 "one of replace, strip, pass");
    expect_error("[protocols.smtp]\non_virus = \"block\"\n", 2, "protocols.smtp.on_virus",
                 "one of replace, strip, reject, drop, pass");
    expect_error("[protocols.http]\nstarttls = \"strip\"\n", 2, "protocols.http.starttls",
                 "only the mail protocols");
    expect_error("[protocols.http]\nnotify_sender_on_virus = true\n", 2,
                 "protocols.http.notify_sender_on_virus", "only the mail protocols");
    expect_error("[protocols.imap]\nnotify_sender_on_virus = \"yes\"\n", 2,
                 "protocols.imap.notify_sender_on_virus", "true or false");
    expect_error("[protocols.smtp]\nstarttls = \"off\"\n", 2, "protocols.smtp.starttls",
                 "one of allow, strip, block");
    expect_error("[protocols.pop3]\nscan = \"yes\"\n", 2, "protocols.pop3.scan", "true or false");
    expect_error("[protocols.smtp.fallback]\ntimeout = \"pass\"\nencrypt = \"block\"\n", 3,
                 "protocols.smtp.fallback.encrypt",
                 "unknown key; the keys are default, content-size, decompress-layer");
    expect_error("[protocols.smtp.fallback]\ndefault = \"reject\"\n", 2,
                 "protocols.smtp.fallback.default", "one of block, pass");
    expect_error("[protocols.http.fallback]\npartial = \"drop\"\n", 2,
                 "protocols.http.fallback.partial", "one of block, pass");
    expect_error("[protocols.http]\nfallback = \"pass\"\n", 2, "protocols.http.fallback", "table");
    expect_error("[protocols.http]\nscan_profile = \"web\"\n", 2, "protocols.http.scan_profile",
                 "unknown key");
}

TEST(ConfigPolicy, ProfileMustNameAScanProfile) {
    expect_error(
        "[protocols.smtp]\nports = [25]\nprofile = \"mial\"\n[scan.profiles.mail]\nmode = "
        "\"all\"\n",
        3, "protocols.smtp.profile",
        "no scan profile \"mial\": must name a [scan.profiles] "
        "table (default, mail)");
    expect_error("[protocols.http]\nprofile = \"\"\n", 2, "protocols.http.profile", "empty");
}

TEST(ConfigPolicy, HttpOnlyKeysElsewhereAreErrors) {
    expect_error("[protocols.smtp]\nports = [25]\nallow_hosts = [\"example.com\"]\n", 3,
                 "protocols.smtp.allow_hosts", "only [protocols.http]");
    expect_error("[protocols.ftp]\nallow_urls = [\"http://a/\"]\n", 2, "protocols.ftp.allow_urls",
                 "only [protocols.http]");
    expect_error("[protocols.imap]\ntrickle_after_s = 5\n", 2, "protocols.imap.trickle_after_s",
                 "only [protocols.http]");
    expect_error("[protocols.pop3]\nallowlist_release = false\n", 2,
                 "protocols.pop3.allowlist_release", "only [protocols.http]");
}

TEST(ConfigPolicy, AllowlistEntriesAreChecked) {
    expect_error("[protocols.http]\nallow_hosts = [\"ok.example\",\n  \"*.example.com\"]\n", 3,
                 "protocols.http.allow_hosts", "suffixes starting with a dot");
    expect_error("[protocols.http]\nallow_hosts = [\"example.com:80\"]\n", 2,
                 "protocols.http.allow_hosts", "no scheme, port");
    expect_error("[protocols.http]\nallow_hosts = [\"http://example.com\"]\n", 2,
                 "protocols.http.allow_hosts", "no scheme");
    expect_error("[protocols.http]\nallow_urls = [\"example.com/pub\"]\n", 2,
                 "protocols.http.allow_urls", "http://");
    expect_error("[protocols.http]\nallow_urls = [\"https://example.com/\"]\n", 2,
                 "protocols.http.allow_urls", "HTTPS is not inspected");
    expect_error("[protocols.http]\nallow_urls = [\"http:///pub\"]\n", 2,
                 "protocols.http.allow_urls", "URL prefixes");
    expect_error("[protocols.http]\ntrickle_after_s = -1\n", 2, "protocols.http.trickle_after_s",
                 "0 to 3600");
    expect_error("[protocols.http]\nallow_hosts = []\nallowlist_release = \"yes\"\n", 3,
                 "protocols.http.allowlist_release", "true or false");
}

TEST(ConfigPolicy, RelayLimitMustHoldTheLargestObject) {
    expect_error("[stream]\nrelay_limit = \"32M\"\n", 2, "stream.relay_limit",
                 "less than scan.limits.max_content_size (33554432 bytes) + 1 MiB");
    // Not given: the default is named, at the line of the key that broke it.
    expect_error("[scan.limits]\n\nmax_content_size = \"64M\"\n", 3, "stream.relay_limit",
                 "(the default) is less than");
    Config c = parse_config("[stream]\nrelay_limit = \"33M\"\n", "t.toml");
    EXPECT_EQ(c.stream.relay_limit, c.scan.limits.max_content_size + (1u << 20));
}

TEST(ConfigPolicy, MailKeys) {
    Config c = parse_config(
        "[protocols.smtp]\non_virus = \"reject\"\non_policy = \"drop\"\nstarttls = \"strip\"\n"
        "notify_sender_on_virus = true\nnotify_recipient_on_error_pass = true\n"
        "[protocols.pop3]\non_virus = \"strip\"\nstarttls = \"block\"\n"
        "notify_sender_on_virus = true\n"
        "[protocols.imap]\non_virus = \"pass\"\nnotify_sender_on_error_drop = true\n",
        "t.toml");
    const ProtocolPolicy& smtp = c.protocols[size_t(Service::Smtp)].policy;
    EXPECT_EQ(smtp.on_virus, Action::Block);
    EXPECT_EQ(smtp.mail_on_virus, MailBlock::Reject);
    EXPECT_EQ(smtp.mail_on_policy, MailBlock::Drop);
    EXPECT_EQ(smtp.starttls, StartTls::Strip);
    EXPECT_TRUE(smtp.notify_sender_on_virus);
    EXPECT_FALSE(smtp.notify_sender_on_error_drop);
    EXPECT_TRUE(smtp.notify_recipient_on_error_pass);
    const ProtocolPolicy& pop3 = c.protocols[size_t(Service::Pop3)].policy;
    EXPECT_EQ(pop3.mail_on_virus, MailBlock::Strip);
    EXPECT_EQ(pop3.starttls, StartTls::Block);
    EXPECT_TRUE(pop3.notify_sender_on_virus);
    EXPECT_FALSE(pop3.notify_sender_on_error_drop);
    const ProtocolPolicy& imap = c.protocols[size_t(Service::Imap)].policy;
    EXPECT_EQ(imap.on_virus, Action::Pass);
    EXPECT_EQ(imap.mail_on_virus, MailBlock::Replace);
    EXPECT_EQ(imap.starttls, StartTls::Allow);
    EXPECT_FALSE(imap.notify_sender_on_virus);
    EXPECT_TRUE(imap.notify_sender_on_error_drop);
}

TEST(ConfigMessages, FolderIsResolvedBesideTheFileAndLoaded) {
    test::TempDir dir;
    std::filesystem::create_directory(dir.file("texts"));
    test::write_file(dir.file("texts/http-block.html"), "<p>{{ detection }}</p>");
    test::write_file(dir.file("texts/mail-virus-notice.txt"), "{{ detection }}");
    Config c = parse_config("[daemon]\nmessages_dir = \"texts\"\n", dir.file("nfqscan.toml"));
    EXPECT_EQ(c.daemon.messages_dir, dir.file("texts"));
    MessageFields f;
    f.detection = "<x>";
    EXPECT_EQ(c.messages->render("http-block", f), "<p>&lt;x&gt;</p>");
}

TEST(ConfigMessages, BuiltinTextsWithoutAFolder) {
    // Absent key, no folder beside the file: the built-in texts.
    Config c = parse_config("", "/nonexistent/nfqscan.toml");
    EXPECT_EQ(c.daemon.messages_dir, "");
    ASSERT_TRUE(c.messages);
    EXPECT_TRUE(c.messages->has("http-block"));
    EXPECT_TRUE(
        parse_config("[daemon]\nmessages_dir = \"\"\n", "t.toml").messages->has("ftp-drop"));
    EXPECT_TRUE(Config::defaults().messages);
    // A folder that is named must exist.
    expect_error("[daemon]\nmessages_dir = \"/nonexistent/messages\"\n", 2, "daemon.messages_dir",
                 "is not a folder");
}

TEST(ConfigMessages, BrokenTemplateIsAConfigError) {
    test::TempDir dir;
    std::filesystem::create_directory(dir.file("messages"));
    test::write_file(dir.file("messages/http-block.html"), "<p>\n{{ virus }}</p>");
    try {
        parse_config("", dir.file("nfqscan.toml"));
        FAIL() << "accepted";
    } catch (const ConfigError& e) {
        EXPECT_EQ(e.file(), dir.file("messages/http-block.html"));
        EXPECT_EQ(e.line(), 2u);
        EXPECT_EQ(e.key(), "{{virus}}");
    }
}

TEST(NotifyConfig, ShippedFileAndEmptyFileHaveTheDefaults) {
    const NotifyConfig d;
    for (const Config& c : {load_config("rules/nfqscan.toml"), parse_config("", "empty.toml")}) {
        EXPECT_EQ(c.notify.relay, "");
        EXPECT_EQ(c.notify.from, "nfqscan@localhost");
        EXPECT_EQ(c.notify.error_pass_tag, "***UNCHECKED***");
        EXPECT_EQ(c.notify.per_sender_per_minute, 10u);
        EXPECT_EQ(c.notify.relay, d.relay);
        EXPECT_EQ(c.notify.from, d.from);
        EXPECT_EQ(c.notify.error_pass_tag, d.error_pass_tag);
        EXPECT_EQ(c.notify.per_sender_per_minute, d.per_sender_per_minute);
    }
}

TEST(NotifyConfig, KeysAreRead) {
    Config c = parse_config(R"(
[notify]
relay = "[2001:db8:2::2]:2526"
from = "postmaster@gw.example.net"
error_pass_tag = "[not scanned]"
per_sender_per_minute = 3
)",
                            "t.toml");
    EXPECT_EQ(c.notify.relay, "[2001:db8:2::2]:2526");
    EXPECT_EQ(c.notify.from, "postmaster@gw.example.net");
    EXPECT_EQ(c.notify.error_pass_tag, "[not scanned]");
    EXPECT_EQ(c.notify.per_sender_per_minute, 3u);
    EXPECT_EQ(parse_config("[notify]\nrelay = \"mail.example.net:25\"\n", "t.toml").notify.relay,
              "mail.example.net:25");
}

TEST(NotifyConfig, ErrorsNameFileLineAndKey) {
    expect_error("[notify]\nfrom = \"a@b.c\"\nrelay = \"mail.example.net\"\n", 3, "notify.relay",
                 "host:port");
    expect_error("[notify]\nrelay = \"mail.example.net:0\"\n", 2, "notify.relay", "port");
    expect_error("[notify]\nrelay = \"[mail]:25\"\n", 2, "notify.relay", "IPv6");
    expect_error("[notify]\nrelay = 25\n", 2, "notify.relay", "string");
    expect_error("[notify]\n\nfrom = \"Scanner <scanner@example.net>\"\n", 3, "notify.from",
                 "plain address");
    expect_error("[notify]\nfrom = \"\"\n", 2, "notify.from", "empty");
    expect_error("[notify]\nerror_pass_tag = \"a\\r\\nBcc: x@y\"\n", 2, "notify.error_pass_tag",
                 "one line");
    expect_error("[notify]\nper_sender_per_minute = 0\n", 2, "notify.per_sender_per_minute",
                 "integer from 1 to 1000");
    expect_error("[notify]\nper_sender_per_minute = 1001\n", 2, "notify.per_sender_per_minute",
                 "integer");
    expect_error("[notify]\nrelay = \"\"\nrate = 5\n", 3, "notify.rate", "unknown key");
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

namespace nfqscan {
namespace {

// Found by tests/fuzz/config_fuzz: a float where an integer belongs was
// converted (out of range: undefined) instead of refused.
TEST(Config, AFloatWhereAnIntegerBelongsIsAnError) {
    EXPECT_THROW(parse_config("[flows]\nmax_flows = 8445.720e36\n", "f.toml"), ConfigError);
    EXPECT_THROW(parse_config("[flows]\nmax_flows = 1000.0\n", "f.toml"), ConfigError);
    EXPECT_THROW(parse_config("[protocols.http]\nports = [80.0]\n", "f.toml"), ConfigError);
}

TEST(ConfigSpam, SpamKeysAreRead) {
    Config c = parse_config(
        "[spam]\nengine = \"rspamd\"\nrspamd_url = \"http://10.0.0.1:11333\"\nthreshold = 7.5\n"
        "timeout_ms = 2000\ntag = \"{Spam?}\"\n"
        "[protocols.smtp]\non_spam = \"forward\"\nspam_forward_to = \"spam@example.com\"\n"
        "[protocols.imap]\non_spam = \"accept\"\n",
        "test.toml");
    EXPECT_EQ(c.spam.engine, SpamConfig::Engine::Rspamd);
    EXPECT_EQ(c.spam.rspamd_url, "http://10.0.0.1:11333");
    EXPECT_EQ(c.spam.threshold, 7.5);
    EXPECT_EQ(c.spam.timeout_ms, 2000u);
    const ProtocolPolicy& smtp = c.protocols[size_t(Service::Smtp)].policy;
    EXPECT_EQ(smtp.on_spam, SpamAction::Forward);
    EXPECT_EQ(smtp.spam_forward_to, "<spam@example.com>");
    EXPECT_TRUE(smtp.spam_engine);
    EXPECT_EQ(smtp.spam_tag, "{Spam?}");
    EXPECT_EQ(c.protocols[size_t(Service::Imap)].policy.on_spam, SpamAction::Accept);
    EXPECT_EQ(c.protocols[size_t(Service::Pop3)].policy.on_spam, SpamAction::Tag) << "default";
    Config d = parse_config("", "test.toml");
    EXPECT_EQ(d.spam.engine, SpamConfig::Engine::None);
    EXPECT_FALSE(d.protocols[size_t(Service::Smtp)].policy.spam_engine);
    EXPECT_EQ(d.protocols[size_t(Service::Smtp)].policy.spam_tag, "[SPAM]");
}

TEST(ConfigSpam, BadSpamKeysNameFileLineAndKey) {
    expect_error("[protocols.pop3]\n\non_spam = \"reject\"\n", 3, "protocols.pop3.on_spam",
                 "already counts the messages");
    expect_error("[protocols.imap]\non_spam = \"forward\"\n", 2, "protocols.imap.on_spam",
                 "must be accept or tag");
    expect_error("[protocols.smtp]\non_spam = \"bounce\"\n", 2, "protocols.smtp.on_spam",
                 "accept, tag, reject, drop, forward");
    expect_error("[protocols.smtp]\non_spam = \"forward\"\n", 2, "protocols.smtp.on_spam",
                 "needs spam_forward_to");
    expect_error("[protocols.smtp]\nspam_forward_to = \"Spam <s@x>\"\n", 2,
                 "protocols.smtp.spam_forward_to", "plain address");
    expect_error("[protocols.pop3]\nspam_forward_to = \"s@x.org\"\n", 2,
                 "protocols.pop3.spam_forward_to", "only [protocols.smtp]");
    expect_error("[protocols.http]\non_spam = \"tag\"\n", 2, "protocols.http.on_spam",
                 "only the mail protocols");
    expect_error("[spam]\nengine = \"spamd\"\n", 2, "spam.engine", "none, rspamd");
    expect_error("[spam]\nrspamd_url = \"127.0.0.1:11333\"\n", 2, "spam.rspamd_url", "/checkv2");
    expect_error("[spam]\nthreshold = -1\n", 2, "spam.threshold", "from 0");
    expect_error("[spam]\ntimeout_ms = 5\n", 2, "spam.timeout_ms", "from 100");
    expect_error("[spam]\ntag = \"a\\nb\"\n", 2, "spam.tag", "one line");
}

}  // namespace
}  // namespace nfqscan
