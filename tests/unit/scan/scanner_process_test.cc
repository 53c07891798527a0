// Scanner processes (process isolation): verdicts come back from child
// processes that share the engines; a scanner that crashes or hangs costs its
// object an error verdict and is replaced; a reload replaces the scanners,
// and a scan in flight finishes on the old ones (then the new ones are forked
// again, without the old engines' pages). Also the wire format.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "../../../src/scan/engine_set.h"
#include "../../../src/scan/scan_metrics.h"
#include "../../../src/scan/scanner_process.h"
#include "../../../src/scan/scanner_sandbox.h"
#include "../../../src/scan/scanner_wire.h"
#include "nfqscan/object_buffer.h"
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
    const ScannerRequest request{12345, "mail.eml", "message/rfc822", "smtp", true};
    const std::vector<uint8_t> r = encode(request);
    const auto back = decode_request({reinterpret_cast<const char*>(r.data()), r.size()});
    ASSERT_TRUE(back);
    EXPECT_EQ(back->size, 12345u);
    EXPECT_TRUE(back->in_passed_fd);
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

std::shared_ptr<const ObjectBuffer> buffer_of(const std::string& bytes) {
    auto buffer = ObjectBuffer::make(32u << 20);
    EXPECT_EQ(buffer->append({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}),
              ObjectBuffer::Append::Ok);
    return buffer;
}

ScanObject corpus_in_buffer(const std::string& name) {
    return ScanObject::in_file(buffer_of(test::read_file(test::corpus_path(name))), name);
}

// What inspectors hand over: the scanner maps the object's memory file, and
// nothing is copied into its own memfd.
TEST(ScannerProcesses, ObjectBufferIsScannedFromTheHandedFile) {
    const ScanConfig config = test::shipped_rules_config();
    EngineSet::Built built = EngineSet::build(config, 1);
    ASSERT_TRUE(built.set);
    auto scanner = ScannerProcess::spawn(*built.set);
    const auto deadline = std::chrono::seconds(60);

    for (const char* name : {"eicar.com", "eicar.zip"}) {
        const ScannerProcess::Outcome out = scanner->scan(corpus_in_buffer(name), deadline);
        ASSERT_EQ(out.status, ScannerProcess::Outcome::Status::Done) << out.what;
        EXPECT_TRUE(out.reply.verdict.is_infected()) << name << ": " << describe(out.reply.verdict);
    }
    for (const char* name : {"clean.txt", "clean.zip", "clean-random.bin"}) {
        const ScannerProcess::Outcome out = scanner->scan(corpus_in_buffer(name), deadline);
        ASSERT_EQ(out.status, ScannerProcess::Outcome::Status::Done) << out.what;
        EXPECT_TRUE(out.reply.verdict.is_clean()) << name << ": " << describe(out.reply.verdict);
    }
    // A recycled file still holds EICAR past a shorter clean object: only the
    // object's own bytes are scanned.
    for (int i = 0; i < 3; ++i) {
        const ScannerProcess::Outcome infected =
            scanner->scan(corpus_in_buffer("eicar.com"), deadline);
        const ScannerProcess::Outcome clean =
            scanner->scan(ScanObject::in_file(buffer_of("clean"), "c.txt"), deadline);
        ASSERT_EQ(clean.status, ScannerProcess::Outcome::Status::Done) << clean.what;
        EXPECT_TRUE(infected.reply.verdict.is_infected());
        EXPECT_TRUE(clean.reply.verdict.is_clean()) << describe(clean.reply.verdict);
    }
    // An object grown well past the file's first size, EICAR at its end.
    std::string big(3 * ObjectBuffer::kInitialCapacity + 17, ' ');
    big += test::read_file(test::corpus_path("eicar.com"));
    const ScannerProcess::Outcome grown =
        scanner->scan(ScanObject::in_file(buffer_of(big), "big.txt"), deadline);
    ASSERT_EQ(grown.status, ScannerProcess::Outcome::Status::Done) << grown.what;
    EXPECT_TRUE(grown.reply.verdict.is_infected()) << describe(grown.reply.verdict);
    EXPECT_EQ(scanner->copied_bytes(), 0u);

    // Anything else is still copied into the scanner's memfd.
    const ScannerProcess::Outcome copied =
        scanner->scan(test::corpus_object("eicar.com"), deadline);
    ASSERT_EQ(copied.status, ScannerProcess::Outcome::Status::Done) << copied.what;
    EXPECT_TRUE(copied.reply.verdict.is_infected());
    EXPECT_GT(scanner->copied_bytes(), 0u);
    EXPECT_TRUE(alive(scanner->pid()));
}

// Through the pool, as a queue worker submits an inspector's object; and with
// thread isolation, which reads the buffer's bytes in place.
TEST(ScannerProcesses, ObjectBufferThroughTheServiceInBothIsolations) {
    for (auto isolation : {ScanConfig::Isolation::Process, ScanConfig::Isolation::Thread}) {
        ScanConfig config = test::shipped_rules_config();
        config.isolation = isolation;
        config.pool_threads = 1;
        ScanService service(config);
        loaded(service, config);
        auto sink = std::make_shared<test::TestSink>();
        std::optional<ScanVerdict> infected, clean;
        ASSERT_TRUE(service.submit(corpus_in_buffer("eicar.zip"), sink,
                                   [&](ScanVerdict v) { infected = std::move(v); }));
        ASSERT_TRUE(service.submit(corpus_in_buffer("clean.txt"), sink,
                                   [&](ScanVerdict v) { clean = std::move(v); }));
        ASSERT_TRUE(sink->run_until([&] { return infected && clean; }));
        EXPECT_TRUE(infected->is_infected()) << describe(*infected);
        EXPECT_TRUE(clean->is_clean()) << describe(*clean);
    }
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
    const uint64_t completed_before = service.stats().completed;
    auto sink = std::make_shared<test::TestSink>();
    std::optional<ScanVerdict> in_flight;
    ASSERT_TRUE(service.submit(ScanObject::copy_of(marker, "slow-marker.txt"), sink,
                               [&](ScanVerdict v) { in_flight = std::move(v); }));
    // A pool thread has taken it (and the engines of the moment with it).
    for (int i = 0; i < 500 && service.stats().queue_wait.count() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(service.stats().queue_wait.count(), 1u);

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
    // Still running as the reload begins (the scanner sleeps a second on
    // it): the reload meets a scan in flight.
    ASSERT_EQ(service.stats().completed, completed_before);
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
    // Once the old engines are freed, the new scanners are forked again:
    // forked while the old engines were in memory, they kept those pages.
    for (int i = 0; i < 2000 && std::any_of(new_pids.begin(), new_pids.end(), alive); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (int pid : new_pids)
        EXPECT_FALSE(alive(pid)) << pid;
    std::vector<int> refreshed = service.stats().scanner_pids;
    for (int i = 0; i < 2000 && refreshed.size() < 2; ++i) {  // one may be forking
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        refreshed = service.stats().scanner_pids;
    }
    ASSERT_EQ(refreshed.size(), 2u);
    for (int pid : refreshed) {
        EXPECT_TRUE(alive(pid)) << pid;
        EXPECT_EQ(std::count(new_pids.begin(), new_pids.end(), pid), 0);
    }
    const ScanVerdict again = service.scan(ScanObject::copy_of(marker, "m.txt"));
    EXPECT_TRUE(again.is_infected()) << describe(again);
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

namespace nfqscan {
namespace {

// One field of /proc/PID/status ("Uid", "CapEff", ...), as written there.
std::string proc_status_field(int pid, const std::string& field) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind(field + ":", 0) == 0) {
            std::string value = line.substr(field.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    return "";
}

TEST(ScannerSandbox, ScannersRunConfinedFromTheirFirstObject) {
    if (geteuid() != 0) GTEST_SKIP() << "the user switch needs root";
    ScanConfig config = test::shipped_rules_config();
    config.pool_threads = 1;
    ScanService service(config);
    loaded(service, config);
    const std::vector<int> pids = service.stats().scanner_pids;
    ASSERT_EQ(pids.size(), 1u);
    const int pid = pids[0];
    // Confined before it takes a request; one scan makes sure it got there.
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.com")).is_infected());

    EXPECT_EQ(proc_status_field(pid, "Uid"), "65534\t65534\t65534\t65534");
    EXPECT_EQ(proc_status_field(pid, "Gid"), "65534\t65534\t65534\t65534");
    EXPECT_EQ(proc_status_field(pid, "Groups"), "");
    for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapAmb"})
        EXPECT_EQ(proc_status_field(pid, set), "0000000000000000") << set;
    EXPECT_EQ(proc_status_field(pid, "NoNewPrivs"), "1");
    EXPECT_EQ(proc_status_field(pid, "Seccomp"), "2");  // filter mode
    // /proc/PID/limits: "Max address space   <soft>   <hard>   bytes".
    auto hard_limit = [&](const std::string& name) {
        std::ifstream limits("/proc/" + std::to_string(pid) + "/limits");
        for (std::string line; std::getline(limits, line);)
            if (line.rfind(name, 0) == 0) {
                std::istringstream fields(line.substr(name.size()));
                std::string soft, hard;
                fields >> soft >> hard;
                return hard;
            }
        return std::string("?");
    };
    EXPECT_NE(hard_limit("Max address space"), "unlimited");
    EXPECT_NE(hard_limit("Max address space"), "?");
    EXPECT_EQ(hard_limit("Max file size"),
              std::to_string(config.limits.max_content_size + (1u << 20)));
    EXPECT_EQ(hard_limit("Max core file size"), "0");
    errno = 0;
    EXPECT_EQ(getpriority(PRIO_PROCESS, static_cast<id_t>(pid)), 10);

    // Archives still unpack (libclamav's temp files in /tmp, as nobody).
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.zip")).is_infected());
    EXPECT_TRUE(service.scan(test::corpus_object("clean.zip")).is_clean());
    EXPECT_EQ(service.stats().scanner_restarts, 0u);
}

// What an exploit in a parser would try, done by the scanner itself on an
// object of that name: each is killed (seccomp) or refused (uid, limits),
// never done; the service goes on with a replacement.
TEST(ScannerSandbox, WhatAnExploitWouldTryIsKilledOrRefused) {
    if (geteuid() != 0) GTEST_SKIP() << "the user switch needs root";
    struct Attempt {
        Misbehaviour how;
        bool killed;  // by the seccomp filter; otherwise refused and scanned on
    };
    for (const Attempt attempt :
         {Attempt{Misbehaviour::OpenNetlink, true}, Attempt{Misbehaviour::Exec, true},
          Attempt{Misbehaviour::WriteOutside, false}, Attempt{Misbehaviour::ReadShadow, false},
          Attempt{Misbehaviour::RaiseLimit, false}}) {
        SCOPED_TRACE(static_cast<int>(attempt.how));
        MisbehaveOn exploit("exploit.bin", attempt.how);
        ScanConfig config = test::shipped_rules_config();
        config.pool_threads = 1;
        ScanService service(config);
        loaded(service, config);
        const ScanVerdict verdict = service.scan(ScanObject::copy_of("harmless", "exploit.bin"));
        EXPECT_EQ(verdict.reason.find("exit status 42"), std::string::npos) << verdict.reason;
        if (attempt.killed) {
            ASSERT_TRUE(verdict.is_error()) << describe(verdict);
            EXPECT_NE(verdict.reason.find("signal 31"), std::string::npos) << verdict.reason;
            EXPECT_EQ(service.stats().scanner_restarts, 1u);
        } else {
            EXPECT_TRUE(verdict.is_clean()) << describe(verdict);
            EXPECT_EQ(service.stats().scanner_restarts, 0u);
        }
        EXPECT_FALSE(std::filesystem::exists("/etc/nfqscan-scanner-escape"));
        EXPECT_TRUE(service.scan(test::corpus_object("eicar.com")).is_infected());
    }
}

TEST(ScannerSandbox, WithoutAUserTheDaemonsUidStaysAndCapabilitiesGo) {
    ScanConfig config = test::shipped_rules_config();
    config.pool_threads = 1;
    config.scanner_user = "";
    ScanService service(config);
    loaded(service, config);
    const int pid = service.stats().scanner_pids.at(0);
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.com")).is_infected());
    const std::string uid = std::to_string(geteuid());
    EXPECT_EQ(proc_status_field(pid, "Uid").substr(0, uid.size() + 1), uid + "\t");
    EXPECT_EQ(proc_status_field(pid, "CapEff"), "0000000000000000");
    EXPECT_EQ(proc_status_field(pid, "Seccomp"), "2");
}

TEST(ScannerSandbox, AnUnknownUserIsAnErrorNotAnUnconfinedScanner) {
    if (geteuid() != 0) GTEST_SKIP() << "users are looked up only when running as root";
    ScanConfig config = test::shipped_rules_config();
    config.scanner_user = "no-such-user-nfqscan";
    EXPECT_THROW(ScannerSandbox::for_config(config), std::runtime_error);
}

}  // namespace
}  // namespace nfqscan
