// Scanner processes (process isolation): verdicts come back from child
// processes that share the engines; a scanner that crashes or hangs costs its
// object an error verdict and is replaced; a reload replaces the scanners,
// and a scan in flight finishes on the old ones. Also the wire format.
#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "../../../src/scan/engine_set.h"
#include "../../../src/scan/scan_metrics.h"
#include "../../../src/scan/scanner_process.h"
#include "../../../src/scan/scanner_wire.h"
#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::describe;
using Misbehaviour = ScannerProcess::Misbehaviour;

bool alive(int pid) {
    return ::kill(pid, 0) == 0;
}

// Waits until a killed process has died (a zombie until its parent reaps it).
bool dead_soon(int pid) {
    for (int i = 0; i < 300; ++i) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        if (!std::getline(stat, line)) return true;
        const size_t paren = line.rfind(')');
        if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z')
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

// Waits for retired scanners to be reaped (the retirer thread does it).
bool gone_soon(int pid) {
    for (int i = 0; i < 300 && alive(pid); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return !alive(pid);
}

// Scanners forked while one of these lives misbehave on `name`.
struct MisbehaveOn {
    MisbehaveOn(std::string name, Misbehaviour how) {
        ScannerProcess::misbehave_on_object_for_tests(std::move(name), how);
    }
    ~MisbehaveOn() { ScannerProcess::misbehave_on_object_for_tests({}, Misbehaviour::Crash); }
};

ScanService& loaded(ScanService& service, const ScanConfig& config) {
    const ReloadResult r = service.reload(config);
    EXPECT_TRUE(r.ok) << r.error;
    return service;
}

TEST(ScannerWire, RequestAndReplyRoundTrip) {
    const ScannerRequest request{12345, "mail.eml", "message/rfc822", "smtp"};
    const std::vector<uint8_t> r = encode(request);
    const auto back = decode_request({reinterpret_cast<const char*>(r.data()), r.size()});
    ASSERT_TRUE(back);
    EXPECT_EQ(back->size, 12345u);
    EXPECT_EQ(back->name, "mail.eml");
    EXPECT_EQ(back->mime_type, "message/rfc822");
    EXPECT_EQ(back->profile, "smtp");

    ScannerReply reply;
    reply.verdict = ScanVerdict::infected(
        {ScanEngineKind::Yara, "Spam_Rule", "mail.eml/a.zip/b.txt", ThreatCategory::Spam});
    reply.verdict.elapsed = std::chrono::microseconds(777);
    reply.clamav = {1, 0, 0, 100, 50};
    reply.yara = {3, 1, 0, 300, 20};
    const std::vector<uint8_t> m = encode(reply);
    const auto got = decode_reply({reinterpret_cast<const char*>(m.data()), m.size()});
    ASSERT_TRUE(got);
    EXPECT_TRUE(got->verdict.is_infected());
    EXPECT_EQ(got->verdict.detection.engine, ScanEngineKind::Yara);
    EXPECT_EQ(got->verdict.detection.signature, "Spam_Rule");
    EXPECT_EQ(got->verdict.detection.layer_path, "mail.eml/a.zip/b.txt");
    EXPECT_EQ(got->verdict.detection.category, ThreatCategory::Spam);
    EXPECT_EQ(got->verdict.elapsed.count(), 777);
    EXPECT_EQ(got->yara.scans, 3u);
    EXPECT_EQ(got->clamav.bytes, 100u);

    const nlohmann::json a = reply.verdict, b = got->verdict;
    EXPECT_EQ(a, b);
}

TEST(ScannerWire, ShortOrTrailingBytesAreRejected) {
    ScannerReply reply;
    reply.verdict = ScanVerdict::failed(ScanError::Encrypted, "Heuristics.Encrypted.Zip", "a.zip");
    std::vector<uint8_t> m = encode(reply);
    auto view = [](const std::vector<uint8_t>& v, size_t n) {
        return std::string_view(reinterpret_cast<const char*>(v.data()), n);
    };
    ASSERT_TRUE(decode_reply(view(m, m.size())));
    EXPECT_FALSE(decode_reply(view(m, m.size() - 1)));
    m.push_back(0);
    EXPECT_FALSE(decode_reply(view(m, m.size())));
    EXPECT_FALSE(decode_request("abc"));
    // An out-of-range enum is not a verdict.
    std::vector<uint8_t> bad = encode(reply);
    bad[0] = 9;
    EXPECT_FALSE(decode_reply(view(bad, bad.size())));
}

TEST(ScannerProcesses, VerdictsComeFromScannerProcesses) {
    ScanConfig config = test::shipped_rules_config();
    config.pool_threads = 2;
    ScanService service(config);
    loaded(service, config);

    const ScanStats stats = service.stats();
    EXPECT_EQ(stats.isolation, "process");
    ASSERT_EQ(stats.scanner_pids.size(), 2u);
    for (int pid : stats.scanner_pids) {
        EXPECT_NE(pid, ::getpid());
        EXPECT_TRUE(alive(pid));
    }

    const ScanVerdict v = service.scan(test::corpus_object("eicar.zip"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.layer_path, "eicar.zip/eicar.com");
    EXPECT_GT(service.stats().clamav.scans, 0u);  // counted in the scanner, summed here
    EXPECT_GT(service.stats().yara.scans, 0u);
}

TEST(ScannerProcesses, ThreadIsolationScansInThisProcess) {
    ScanConfig config = test::shipped_rules_config();
    config.isolation = ScanConfig::Isolation::Thread;
    config.pool_threads = 1;
    ScanService service(config);
    loaded(service, config);
    EXPECT_EQ(service.stats().isolation, "thread");
    EXPECT_TRUE(service.stats().scanner_pids.empty());
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.zip")).is_infected());
}

TEST(ScannerProcesses, CrashIsAnErrorVerdictAndTheScannerIsReplaced) {
    MisbehaveOn crash("crash-me.bin", Misbehaviour::Crash);
    ScanConfig config = test::shipped_rules_config();
    config.pool_threads = 1;
    ScanService service(config);
    loaded(service, config);
    const std::vector<int> before = service.stats().scanner_pids;
    ASSERT_EQ(before.size(), 1u);

    // Through the pool, as a queue worker submits it.
    auto sink = std::make_shared<test::TestSink>();
    std::optional<ScanVerdict> verdict;
    ASSERT_TRUE(service.submit(ScanObject::copy_of("anything", "crash-me.bin"), sink,
                               [&](ScanVerdict v) { verdict = std::move(v); }));
    ASSERT_TRUE(sink->run_until([&] { return verdict.has_value(); }));
    ASSERT_TRUE(verdict->is_error()) << describe(*verdict);
    EXPECT_EQ(verdict->error, ScanError::Corrupt);
    EXPECT_NE(verdict->reason.find("signal 11"), std::string::npos) << verdict->reason;
    EXPECT_EQ(verdict->layer_path, "crash-me.bin");

    const ScanStats stats = service.stats();
    EXPECT_EQ(stats.scanner_restarts, 1u);
    EXPECT_EQ(stats.errors[static_cast<size_t>(ScanError::Corrupt)], 1u);
    ASSERT_EQ(stats.scanner_pids.size(), 1u);
    EXPECT_NE(stats.scanner_pids[0], before[0]);
    EXPECT_FALSE(alive(before[0]));  // reaped, not a zombie

    // The replacement judges the next objects.
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.com")).is_infected());
    EXPECT_TRUE(service.scan(test::corpus_object("clean.zip")).is_clean());
}

TEST(ScannerProcesses, ScannerKilledWhileIdleIsReplacedWithoutAnErrorVerdict) {
    ScanConfig config = test::shipped_rules_config();
    config.pool_threads = 1;
    ScanService service(config);
    loaded(service, config);
    const int pid = service.stats().scanner_pids.at(0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(dead_soon(pid));
    // The object did nothing wrong: it goes to a new scanner.
    const ScanVerdict v = service.scan(test::corpus_object("eicar.zip"));
    EXPECT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(service.stats().scanner_restarts, 1u);
    EXPECT_NE(service.stats().scanner_pids.at(0), pid);
}

TEST(ScannerProcesses, HungScannerIsKilledAndTheVerdictIsTimeout) {
    MisbehaveOn hang("hang.bin", Misbehaviour::Hang);
    const ScanConfig config = test::shipped_rules_config();
    EngineSet::Built built = EngineSet::build(config, 1);
    ASSERT_TRUE(built.set);
    ScanMetrics metrics;
    ScannerGroup group(*built.set, 1, metrics, std::chrono::milliseconds(300));
    const int pid = group.pids().at(0);

    const auto start = std::chrono::steady_clock::now();
    const ScanVerdict v = group.scan(ScanObject::copy_of("x", "hang.bin"));
    ASSERT_TRUE(v.is_error()) << describe(v);
    EXPECT_EQ(v.error, ScanError::Timeout);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
    EXPECT_FALSE(alive(pid));
    EXPECT_TRUE(group.scan(test::corpus_object("eicar.com")).is_infected());
}

TEST(ScannerProcesses, ReloadReplacesTheScannersAndScansInFlightFinishOnTheOldOnes) {
    namespace fs = std::filesystem;
    MisbehaveOn slow("slow-marker.txt", Misbehaviour::Slow);
    test::TempDir tmp;
    const std::string yara_dir = tmp.file("yara");
    fs::create_directories(yara_dir);
    fs::copy_file(test::source_root() + "/rules/yara/nfqscan-test.yar",
                  yara_dir + "/nfqscan-test.yar");
    ScanConfig config = test::shipped_rules_config();
    config.yara_rule_dirs = {yara_dir};
    config.pool_threads = 2;
    ScanService service(config);
    loaded(service, config);
    const std::vector<int> old_pids = service.stats().scanner_pids;
    ASSERT_EQ(old_pids.size(), 2u);

    // In flight on the first engines for a second.
    const std::string marker = "... RELOAD-MARKER-7e2a ...";
    auto sink = std::make_shared<test::TestSink>();
    std::optional<ScanVerdict> in_flight;
    ASSERT_TRUE(service.submit(ScanObject::copy_of(marker, "slow-marker.txt"), sink,
                               [&](ScanVerdict v) { in_flight = std::move(v); }));
    // A pool thread has taken it (and the engines of the moment with it).
    for (int i = 0; i < 500 && service.stats().queue_wait.count() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(service.stats().queue_wait.count(), 1u);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));

    test::write_file(yara_dir + "/reload.yar", R"(rule NfqScan_Reload_Marker
{
    meta:
        category = "policy"
    strings:
        $a = "RELOAD-MARKER-7e2a"
    condition:
        $a
}
)");
    const ReloadResult second = service.reload(config);
    ASSERT_TRUE(second.ok) << second.error;
    const std::vector<int> new_pids = service.stats().scanner_pids;
    ASSERT_EQ(new_pids.size(), 2u);
    for (int pid : new_pids)
        EXPECT_EQ(std::count(old_pids.begin(), old_pids.end(), pid), 0);

    // New objects get the new rule ...
    const ScanVerdict fresh = service.scan(ScanObject::copy_of(marker, "m.txt"));
    ASSERT_TRUE(fresh.is_infected()) << describe(fresh);
    EXPECT_EQ(fresh.detection.signature, "NfqScan_Reload_Marker");

    // ... the one in flight finished on the old scanners, without it.
    ASSERT_TRUE(sink->run_until([&] { return in_flight.has_value(); }));
    EXPECT_TRUE(in_flight->is_clean()) << describe(*in_flight);
    for (int pid : old_pids)
        EXPECT_TRUE(gone_soon(pid)) << pid;
    for (int pid : new_pids)
        EXPECT_TRUE(alive(pid));
}

TEST(ScannerProcesses, ScannersEndWithTheService) {
    std::vector<int> pids;
    {
        ScanConfig config = test::shipped_rules_config();
        config.pool_threads = 2;
        ScanService service(config);
        loaded(service, config);
        pids = service.stats().scanner_pids;
        ASSERT_EQ(pids.size(), 2u);
    }
    for (int pid : pids)
        EXPECT_FALSE(alive(pid));
}

}  // namespace
}  // namespace nfqscan
