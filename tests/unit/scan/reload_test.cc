// Engine sets are replaced as a whole: a good reload takes effect for the next
// scan, a broken rule or signature file is reported with file and line and
// leaves the running set in place.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::describe;
namespace fs = std::filesystem;

constexpr std::string_view kNewRule = R"(rule NfqScan_Reload_Test
{
    meta:
        category = "policy"
    strings:
        $a = "RELOAD-MARKER-0c1d"
    condition:
        $a
}
)";

// Line 4 has the error: a hex string with a non-hex digit.
constexpr std::string_view kBrokenRule = R"(rule Broken
{
    strings:
        $a = { 4G 41 }
    condition:
        $a
}
)";

struct RulesFixture : testing::Test {
    RulesFixture() {
        fs::create_directories(yara_dir);
        fs::create_directories(clamav_dir);
        fs::copy_file(test::source_root() + "/rules/yara/nfqscan-test.yar",
                      yara_dir + "/nfqscan-test.yar");
        fs::copy_file(test::source_root() + "/rules/clamav/nfqscan-test.ndb",
                      clamav_dir + "/nfqscan-test.ndb");
        config.clamav_db_dirs = {clamav_dir};
        config.yara_rule_dirs = {yara_dir};
        config.pool_threads = 1;
    }
    ScanVerdict scan_marker() {
        return service.scan(ScanObject::copy_of("... RELOAD-MARKER-0c1d ...", "m.txt"));
    }

    test::TempDir tmp;
    std::string yara_dir = tmp.file("yara"), clamav_dir = tmp.file("clamav");
    ScanConfig config = test::shipped_rules_config();
    ScanService service{config};
};

TEST_F(RulesFixture, NewYaraRuleTakesEffectAfterReload) {
    const ReloadResult first = service.reload(config);
    ASSERT_TRUE(first.ok) << first.error;
    EXPECT_EQ(first.engines.generation, 1u);
    EXPECT_TRUE(scan_marker().is_clean());

    test::write_file(yara_dir + "/reload.yar", kNewRule);
    const ReloadResult second = service.reload(config);
    ASSERT_TRUE(second.ok) << second.error;
    EXPECT_EQ(second.engines.generation, 2u);
    EXPECT_EQ(second.engines.yara_rules, first.engines.yara_rules + 1);

    const ScanVerdict v = scan_marker();
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.signature, "NfqScan_Reload_Test");
    EXPECT_EQ(v.detection.category, ThreatCategory::Policy);
}

TEST_F(RulesFixture, BrokenYaraFileIsReportedAndTheOldRulesKeepWorking) {
    test::write_file(yara_dir + "/reload.yar", kNewRule);
    ASSERT_TRUE(service.reload(config).ok);

    const std::string broken = yara_dir + "/zz-broken.yar";
    test::write_file(broken, kBrokenRule);
    const ReloadResult r = service.reload(config);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.file, broken);
    EXPECT_EQ(r.line, 4u);
    EXPECT_NE(r.error.find(broken + ":4:"), std::string::npos) << r.error;
    EXPECT_EQ(r.engines.generation, 1u);  // still the running set
    EXPECT_EQ(service.engines_info()->generation, 1u);

    EXPECT_TRUE(scan_marker().is_infected());
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.html")).is_infected());

    const nlohmann::json j = r;
    EXPECT_EQ(j["ok"], false);
    EXPECT_EQ(j["line"], 4);
}

// reload = "blocking": the old set is freed before the new one is built, so
// a broken update leaves no engines (engine-not-ready) until it is fixed.
TEST_F(RulesFixture, BlockingReloadWithABrokenFileLeavesNoEnginesUntilFixed) {
    config.reload = ScanConfig::ReloadMode::Blocking;
    ASSERT_TRUE(service.reload(config).ok);
    test::write_file(yara_dir + "/reload.yar", kNewRule);
    const ReloadResult good = service.reload(config);
    ASSERT_TRUE(good.ok) << good.error;
    EXPECT_EQ(good.engines.generation, 2u);
    EXPECT_TRUE(scan_marker().is_infected());

    const std::string broken = yara_dir + "/zz-broken.yar";
    test::write_file(broken, kBrokenRule);
    const ReloadResult r = service.reload(config);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.file, broken);
    EXPECT_FALSE(service.ready());
    EXPECT_FALSE(service.engines_info());
    const ScanVerdict v = scan_marker();
    ASSERT_TRUE(v.is_error()) << describe(v);
    EXPECT_EQ(v.error, ScanError::EngineNotReady);

    fs::remove(broken);
    const ReloadResult fixed = service.reload(config);
    ASSERT_TRUE(fixed.ok) << fixed.error;
    EXPECT_EQ(fixed.engines.generation, 3u);
    EXPECT_TRUE(scan_marker().is_infected());
}

TEST_F(RulesFixture, BrokenClamAVSignatureIsReportedWithFileAndLine) {
    ASSERT_TRUE(service.reload(config).ok);
    const std::string bad = clamav_dir + "/local.ndb";
    test::write_file(bad, "Good.Sig:0:*:414243444546474849\nBad.Sig:0:*:zz\n");
    const ReloadResult r = service.reload(config);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.file, bad);
    EXPECT_EQ(r.line, 2u);
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.zip")).is_infected());
}

TEST_F(RulesFixture, FirstLoadFailureLeavesTheServiceNotReady) {
    test::write_file(yara_dir + "/zz-broken.yar", kBrokenRule);
    EXPECT_FALSE(service.reload(config).ok);
    EXPECT_FALSE(service.ready());
    const ScanVerdict v = service.scan(test::corpus_object("eicar.com"));
    ASSERT_TRUE(v.is_error());
    EXPECT_EQ(v.error, ScanError::EngineNotReady);
}

TEST_F(RulesFixture, MissingDirectoriesAreWarningsNotErrors) {
    config.clamav_db_dirs.push_back(tmp.file("absent-clamav"));
    config.yara_rule_dirs.push_back(tmp.file("absent-yara"));
    fs::create_directories(tmp.file("empty"));
    config.clamav_db_dirs.push_back(tmp.file("empty"));
    const ReloadResult r = service.reload(config);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.engines.warnings.size(), 3u) << nlohmann::json(r.engines).dump();
    EXPECT_EQ(r.engines.clamav_db_dirs, std::vector<std::string>{clamav_dir});
}

TEST_F(RulesFixture, EnginesInfoDescribesTheSet) {
    ASSERT_TRUE(service.reload(config).ok);
    const EnginesInfo info = *service.engines_info();
    EXPECT_EQ(info.backend, "inprocess");
    EXPECT_EQ(info.clamav_signatures, 2u);
    EXPECT_EQ(info.yara_rules, 3u);
    EXPECT_EQ(info.yara_rule_files, std::vector<std::string>{yara_dir + "/nfqscan-test.yar"});
    EXPECT_FALSE(info.clamav_version.empty());
    EXPECT_FALSE(info.yara_version.empty());
    const nlohmann::json j = info;
    EXPECT_EQ(j["clamav"]["signatures"], 2);
    EXPECT_EQ(j["yara"]["rules"], 3);
    EXPECT_TRUE(j.contains("loaded_at"));
}

TEST_F(RulesFixture, RulesSeeLayerNameTypeAndDepth) {
    test::write_file(yara_dir + "/layers.yar", R"(rule Text_Member_Of_An_Archive
{
    meta:
        category = "policy"
    condition:
        depth == 1 and filename == "f042.txt" and filetype == "CL_TYPE_TEXT_ASCII"
}
)");
    ASSERT_TRUE(service.reload(config).ok);
    const ScanVerdict v = service.scan(test::corpus_object("many-files.zip"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.signature, "Text_Member_Of_An_Archive");
    EXPECT_EQ(v.detection.layer_path, "many-files.zip/f042.txt");
}

TEST_F(RulesFixture, BackgroundReloadPostsItsResult) {
    auto sink = std::make_shared<test::TestSink>();
    std::optional<ReloadResult> result;
    ASSERT_TRUE(service.start_reload(config, sink, [&](ReloadResult r) { result = std::move(r); }));
    ASSERT_TRUE(sink->run_until([&] { return result.has_value(); }));
    EXPECT_TRUE(result->ok) << result->error;
    EXPECT_TRUE(service.ready());
}

TEST_F(RulesFixture, ScansInFlightKeepTheirSet) {
    ASSERT_TRUE(service.reload(config).ok);
    // Reload repeatedly while scanning from another thread: every scan sees
    // one complete set (EICAR is always found), never a half-swapped one.
    std::atomic<bool> stop{false};
    std::atomic<int> misses{0}, scans{0};
    std::thread scanner([&] {
        const ScanObject eicar = test::corpus_object("eicar.zip");
        while (!stop) {
            if (!service.scan(eicar).is_infected()) ++misses;
            ++scans;
        }
    });
    for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(service.reload(config).ok);
    stop = true;
    scanner.join();
    EXPECT_EQ(misses, 0) << "of " << scans;
    EXPECT_EQ(service.engines_info()->generation, 6u);
}

}  // namespace
}  // namespace nfqscan
