// The detection log: one JSON line per event, read back from the end with a
// bound on how much is read.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "nfqscan/scan_event_log.h"
#include "scan_test_support.h"

namespace nfqscan {
namespace {

ScanEvent event(int i) {
    ScanEvent e;
    e.flow = "192.0.2.1:4000" + std::to_string(i) + " -> 198.51.100.2:25";
    e.protocol = "smtp";
    e.object = "mail " + std::to_string(i);
    e.verdict = ScanVerdict::infected({ScanEngineKind::ClamAV, "NfqScan.Test.EICAR.UNOFFICIAL",
                                       "mail/eicar.com", ThreatCategory::Virus});
    e.action = "replace";
    return e;
}

TEST(EventLog, AppendsOneJsonLinePerEvent) {
    test::TempDir dir;
    const std::string path = dir.file("events.jsonl");
    EventLog log(path);
    for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(log.append(event(i)));
    EXPECT_EQ(log.written(), 5u);

    const std::vector<std::string> lines = read_last_events(path, 3);
    ASSERT_EQ(lines.size(), 3u);
    for (size_t k = 0; k < lines.size(); ++k) {
        const nlohmann::json j = nlohmann::json::parse(lines[k]);
        EXPECT_EQ(j["object"], "mail " + std::to_string(k + 2));
        EXPECT_EQ(j["protocol"], "smtp");
        EXPECT_EQ(j["action"], "replace");
        EXPECT_EQ(j["verdict"], "infected");
        EXPECT_EQ(j["name"], "NfqScan.Test.EICAR.UNOFFICIAL");
        EXPECT_EQ(j["layer"], "mail/eicar.com");
        EXPECT_EQ(j["engine"], "clamav");
        EXPECT_TRUE(j.contains("elapsed_ms"));
        EXPECT_TRUE(j["time"].get<std::string>().ends_with("Z"));
    }
    EXPECT_EQ(read_last_events(path, 100).size(), 5u);
}

TEST(EventLog, ErrorFallbacksAreLoggedToo) {
    test::TempDir dir;
    EventLog log(dir.file("e.jsonl"));
    ScanEvent e = event(0);
    e.verdict = ScanVerdict::failed(ScanError::Encrypted, "Heuristics.Encrypted.Zip", "mail/a.zip");
    e.action = "pass";
    ASSERT_TRUE(log.append(e));
    const nlohmann::json j = nlohmann::json::parse(read_last_events(log.path(), 1).at(0));
    EXPECT_EQ(j["verdict"], "error");
    EXPECT_EQ(j["category"], "encrypted");
    EXPECT_EQ(j["reason"], "Heuristics.Encrypted.Zip");
    EXPECT_EQ(j["action"], "pass");
}

TEST(EventLog, ReadIsBoundedAndDropsTheCutLine) {
    test::TempDir dir;
    EventLog log(dir.file("e.jsonl"));
    for (int i = 0; i < 100; ++i)
        log.append(event(i));
    const size_t line_size = format_scan_event(event(50)).size() + 1;
    // Room for 2.5 lines: the half line at the start is dropped.
    const auto lines = read_last_events(log.path(), 10, line_size * 5 / 2);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(nlohmann::json::parse(lines[1])["object"], "mail 99");
}

TEST(EventLog, UnfinishedLastLineAndMissingFile) {
    test::TempDir dir;
    test::write_file(dir.file("e.jsonl"), "{\"a\":1}\n{\"a\":2}\n{\"a\":");
    const auto lines = read_last_events(dir.file("e.jsonl"), 10);
    EXPECT_EQ(lines, (std::vector<std::string>{"{\"a\":1}", "{\"a\":2}"}));
    EXPECT_TRUE(read_last_events(dir.file("absent.jsonl"), 10).empty());
}

TEST(EventLog, InvalidUtf8FromTheWireStillMakesALine) {
    test::TempDir dir;
    EventLog log(dir.file("e.jsonl"));
    ScanEvent e = event(0);
    e.object = "bad\xff\xfe name";
    EXPECT_TRUE(log.append(e));
    EXPECT_NO_THROW(nlohmann::json::parse(read_last_events(log.path(), 1).at(0)));
}

TEST(EventLog, ReopenFollowsARotatedFile) {
    test::TempDir dir;
    const std::string path = dir.file("e.jsonl");
    EventLog log(path);
    log.append(event(1));
    std::filesystem::rename(path, path + ".1");
    log.reopen();
    log.append(event(2));
    EXPECT_EQ(read_last_events(path, 10).size(), 1u);
    EXPECT_EQ(read_last_events(path + ".1", 10).size(), 1u);
}

}  // namespace
}  // namespace nfqscan
