// The quarantine store and its thread (include/nfqscan/quarantine.h): atomic
// writes, limits, corrupt metadata, ids that try to leave the folder.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nfqscan/config.h"
#include "nfqscan/quarantine.h"

namespace nfqscan {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "nfqscan-quarantine-XXXXXX").string();
        path_ = mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

std::span<const uint8_t> bytes_of(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string read_fd(int fd) {
    std::string out;
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;)
        out.append(buffer, size_t(n));
    return out;
}

QuarantineEntry entry(const std::string& id, Clock::time_point time,
                      const std::string& protocol = "smtp") {
    QuarantineEntry e;
    e.id = id;
    e.time = time;
    e.protocol = protocol;
    e.flow = "192.0.2.1:40000 -> 198.51.100.2:25";
    e.direction = "upload";
    e.object = "message";
    e.sender = "<a@example.org>";
    e.recipients = {"b@example.org", "c@example.org"};
    e.subject = "hello";
    e.verdict = {{"verdict", "infected"}, {"name", "Eicar-Test-Signature"}, {"category", "virus"}};
    e.action = "reject";
    e.event_id = id;
    return e;
}

QuarantineConfig config_for(const TempDir& dir, uint64_t max_size = 1 << 20,
                            uint32_t max_age_days = 30) {
    QuarantineConfig c;
    c.dir = dir.path() + "/q";
    c.max_size = max_size;
    c.max_age_days = max_age_days;
    return c;
}

const Clock::time_point kT0 = Clock::time_point(std::chrono::milliseconds(1'765'000'000'000));

TEST(QuarantineStore, KeepsBytesAndMetadataReadableByTheOwnerOnly) {
    TempDir tmp;
    QuarantineStore store(config_for(tmp));
    const std::string bytes("From: a\r\n\r\nX5O!P%@AP\r\n.leading dot\r\n", 38);
    ASSERT_EQ(store.put(entry("abc-0-1", kT0), bytes_of(bytes), kT0), "");
    EXPECT_EQ(store.entries(), 1u);
    EXPECT_EQ(store.bytes(), bytes.size());
    const fs::path dir = tmp.path() + "/q";
    EXPECT_EQ(read_file(dir / "abc-0-1.data"), bytes);
    for (const char* name : {"abc-0-1.data", "abc-0-1.json"}) {
        struct stat st {};
        ASSERT_EQ(stat((dir / name).c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
    }
    struct stat st {};
    ASSERT_EQ(stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    // No temporary file is left.
    for (const auto& f : fs::directory_iterator(dir))
        EXPECT_FALSE(f.path().filename().string().starts_with(".tmp-")) << f.path();

    QuarantineEntry e = store.show("abc-0-1");
    EXPECT_EQ(e.size, bytes.size());
    EXPECT_EQ(e.sender, "<a@example.org>");
    EXPECT_EQ(e.recipients, (std::vector<std::string>{"b@example.org", "c@example.org"}));
    EXPECT_EQ(e.subject, "hello");
    EXPECT_EQ(e.verdict["name"], "Eicar-Test-Signature");
    EXPECT_EQ(e.time, kT0);
    int fd = store.open_data("abc-0-1");
    EXPECT_EQ(read_fd(fd), bytes);
    close(fd);
}

TEST(QuarantineStore, ReopenedStoreFindsItsEntriesAndCleansUnfinishedWrites) {
    TempDir tmp;
    {
        QuarantineStore store(config_for(tmp));
        ASSERT_EQ(store.put(entry("one", kT0), bytes_of("first"), kT0), "");
        ASSERT_EQ(store.put(entry("two", kT0 + 1s), bytes_of("second!"), kT0 + 1s), "");
    }
    const fs::path dir = tmp.path() + "/q";
    // A crash in the middle of a write: a temporary, and data whose metadata
    // never came.
    std::ofstream(dir / ".tmp-three.data") << "partial";
    std::ofstream(dir / "four.data") << "no metadata";
    QuarantineStore store(config_for(tmp));
    EXPECT_EQ(store.entries(), 2u);
    EXPECT_EQ(store.bytes(), 5u + 7u);
    EXPECT_FALSE(fs::exists(dir / ".tmp-three.data"));
    EXPECT_FALSE(fs::exists(dir / "four.data"));
    auto listed = store.list("", std::nullopt, 100);
    ASSERT_EQ(listed.size(), 2u);
    EXPECT_EQ(listed[0].id, "two");  // newest first
    EXPECT_EQ(listed[1].id, "one");
}

TEST(QuarantineStore, AnIdIsNeverOverwritten) {
    TempDir tmp;
    QuarantineStore store(config_for(tmp));
    ASSERT_EQ(store.put(entry("same", kT0), bytes_of("first"), kT0), "");
    EXPECT_NE(store.put(entry("same", kT0), bytes_of("second"), kT0), "");
    EXPECT_EQ(read_file(tmp.path() + "/q/same.data"), "first");
}

TEST(QuarantineStore, MaxSizeRemovesTheOldestFirst) {
    TempDir tmp;
    QuarantineStore store(config_for(tmp, 1 << 20));
    const std::string chunk(400 << 10, 'x');
    ASSERT_EQ(store.put(entry("a", kT0), bytes_of(chunk), kT0), "");
    ASSERT_EQ(store.put(entry("b", kT0 + 1s), bytes_of(chunk), kT0 + 1s), "");
    EXPECT_EQ(store.evicted(), 0u);
    ASSERT_EQ(store.put(entry("c", kT0 + 2s), bytes_of(chunk), kT0 + 2s), "");
    EXPECT_EQ(store.evicted(), 1u);
    EXPECT_EQ(store.entries(), 2u);
    EXPECT_THROW(store.show("a"), std::runtime_error);
    EXPECT_FALSE(fs::exists(tmp.path() + "/q/a.data"));
    EXPECT_FALSE(fs::exists(tmp.path() + "/q/a.json"));
    EXPECT_NO_THROW(store.show("b"));
    EXPECT_LE(store.bytes(), uint64_t(1 << 20));
    // Bigger than the whole quarantine: refused, nothing evicted for it.
    const std::string huge((1 << 20) + 1, 'y');
    EXPECT_NE(store.put(entry("d", kT0 + 3s), bytes_of(huge), kT0 + 3s), "");
    EXPECT_EQ(store.entries(), 2u);
}

TEST(QuarantineStore, MaxAgeRemovesOldEntries) {
    TempDir tmp;
    QuarantineStore store(config_for(tmp, 1 << 20, 2));
    ASSERT_EQ(store.put(entry("old", kT0), bytes_of("old"), kT0), "");
    ASSERT_EQ(store.put(entry("new", kT0 + 36h), bytes_of("new"), kT0 + 36h), "");
    store.expire(kT0 + 47h);
    EXPECT_EQ(store.entries(), 2u);
    store.expire(kT0 + 49h);
    EXPECT_EQ(store.entries(), 1u);
    EXPECT_EQ(store.evicted(), 1u);
    EXPECT_NO_THROW(store.show("new"));
}

TEST(QuarantineStore, ListFiltersByProtocolAndTime) {
    TempDir tmp;
    QuarantineStore store(config_for(tmp));
    ASSERT_EQ(store.put(entry("m1", kT0, "smtp"), bytes_of("1"), kT0), "");
    ASSERT_EQ(store.put(entry("h1", kT0 + 1s, "http"), bytes_of("2"), kT0 + 1s), "");
    ASSERT_EQ(store.put(entry("m2", kT0 + 2s, "smtp"), bytes_of("3"), kT0 + 2s), "");
    auto smtp = store.list("smtp", std::nullopt, 100);
    ASSERT_EQ(smtp.size(), 2u);
    EXPECT_EQ(smtp[0].id, "m2");
    auto recent = store.list("", kT0 + 1s, 100);
    ASSERT_EQ(recent.size(), 2u);
    EXPECT_EQ(recent[1].id, "h1");
    EXPECT_EQ(store.list("", std::nullopt, 1).size(), 1u);
}

TEST(QuarantineStore, IdsThatTryToLeaveTheFolderAreRefused) {
    TempDir tmp;
    QuarantineStore store(config_for(tmp));
    std::ofstream(tmp.path() + "/secret.data") << "not yours";
    std::ofstream(tmp.path() + "/secret.json") << "{}";
    for (const char* id :
         {"../secret", "..", ".", "", "a/b", "/etc/passwd", "x.json", "a\nb", "a b", "%2e%2e"}) {
        EXPECT_FALSE(valid_quarantine_id(id)) << id;
        EXPECT_THROW(store.show(id), std::runtime_error) << id;
        EXPECT_THROW(store.open_data(id), std::runtime_error) << id;
        EXPECT_THROW(store.remove(id), std::runtime_error) << id;
        EXPECT_NE(store.put(entry(id, kT0), bytes_of("x"), kT0), "") << id;
    }
    EXPECT_FALSE(valid_quarantine_id(std::string(65, 'a')));
    EXPECT_TRUE(valid_quarantine_id(std::string(64, 'a')));
    EXPECT_TRUE(valid_quarantine_id("0a1b2c3d-1-42"));
    EXPECT_TRUE(fs::exists(tmp.path() + "/secret.data"));
}

TEST(QuarantineStore, CorruptMetadataIsNeverServedAndLeftInPlace) {
    TempDir tmp;
    {
        QuarantineStore store(config_for(tmp));
        ASSERT_EQ(store.put(entry("good", kT0), bytes_of("good"), kT0), "");
        ASSERT_EQ(store.put(entry("bad", kT0), bytes_of("bad"), kT0), "");
        ASSERT_EQ(store.put(entry("short", kT0), bytes_of("short"), kT0), "");
        ASSERT_EQ(store.put(entry("renamed", kT0), bytes_of("renamed"), kT0), "");
    }
    const fs::path dir = tmp.path() + "/q";
    std::ofstream(dir / "bad.json", std::ios::trunc) << "{\"id\": \"bad\", \"size\": ";
    std::ofstream(dir / "short.data", std::ios::trunc) << "sho";  // size differs
    // Metadata naming another entry (or a path) than its file.
    std::string text = read_file(dir / "renamed.json");
    const std::string id_field = "\"id\": \"renamed\"";
    ASSERT_NE(text.find(id_field), std::string::npos) << text;
    text.replace(text.find(id_field), id_field.size(), "\"id\": \"../good\"");
    std::ofstream(dir / "renamed.json", std::ios::trunc) << text;
    QuarantineStore store(config_for(tmp));
    EXPECT_EQ(store.entries(), 1u);
    EXPECT_EQ(store.corrupt(), 3u);
    EXPECT_THROW(store.show("bad"), std::runtime_error);
    EXPECT_TRUE(fs::exists(dir / "bad.json"));
    EXPECT_NO_THROW(store.show("good"));
}

TEST(QuarantineEntryParser, RefusesMalformedMetadata) {
    QuarantineEntry e = entry("x1", kT0);
    e.size = 3;
    const std::string good = quarantine_entry_json(e).dump();
    auto parsed = parse_quarantine_entry(good);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->id, "x1");
    EXPECT_EQ(parsed->size, 3u);
    for (
        const char* bad : {
            "",
            "null",
            "[]",
            "{}",
            "{\"id\":\"x\"}",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":1,"size":-1})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":-5,"size":1})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":1e300,"size":1})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":99999999999999999,"size":1})",
            // Past 2262: system_clock's nanoseconds would overflow (a fuzz finding).
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":12765000000000,"size":1})",
            R"({"id":"../x","protocol":"smtp","action":"block","time_ms":1,"size":1})",
            R"({"id":"x","protocol":1,"action":"block","time_ms":1,"size":1})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":1,"size":1,"recipients":"a"})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":1,"size":1,"recipients":[1]})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":1,"size":1,"subject":{}})",
            R"({"id":"x","protocol":"smtp","action":"block","time_ms":1,"size":1,"verdict":"v"})",
        })
        EXPECT_FALSE(parse_quarantine_entry(bad)) << bad;
    // Random bytes: never a crash, rarely an entry.
    std::mt19937 rng(11);
    for (int i = 0; i < 2000; ++i) {
        std::string s = good;
        for (int k = 0; k < 4; ++k)
            s[rng() % s.size()] = char(rng() % 256);
        (void)parse_quarantine_entry(s);
    }
}

TEST(QuarantineHelpers, SplitsRecipientsAndParsesSince) {
    EXPECT_EQ(split_recipients("<a@b>, <c@d>,<e@f>"),
              (std::vector<std::string>{"a@b", "c@d", "e@f"}));
    EXPECT_EQ(split_recipients(""), std::vector<std::string>{});
    EXPECT_EQ(split_recipients("x@y"), std::vector<std::string>{"x@y"});
    const int64_t now = 1'765'000'000'000;
    EXPECT_EQ(parse_quarantine_since("90s", now), now - 90'000);
    EXPECT_EQ(parse_quarantine_since("2h", now), now - 7'200'000);
    EXPECT_EQ(parse_quarantine_since("7d", now), now - 7 * 86'400'000ll);
    EXPECT_EQ(parse_quarantine_since("2026-12-06", now), 1'796'515'200'000ll);
    EXPECT_EQ(parse_quarantine_since("2026-12-06T10:00", now), 1'796'551'200'000ll);
    EXPECT_EQ(parse_quarantine_since("2026-12-06T10:00:30Z", now), 1'796'551'230'000ll);
    for (const char* bad : {"", "s", "-3h", "yesterday", "2026-13-45", "12x", "2026-12-06T"})
        EXPECT_THROW(parse_quarantine_since(bad, now), std::invalid_argument) << bad;
}

// The thread: entries written off the caller's thread, commands answered.
TEST(Quarantine, WritesQueuedObjectsAndAnswersCommands) {
    TempDir tmp;
    Quarantine q(config_for(tmp), {});
    auto buffer = ObjectBuffer::make(1 << 20);
    const std::string bytes = "the original\r\n";
    ASSERT_EQ(buffer->append(bytes_of(bytes)), ObjectBuffer::Append::Ok);
    ASSERT_TRUE(q.submit(entry("t1", Clock::now()), buffer));
    buffer.reset();
    ASSERT_TRUE(q.wait_idle(10s));
    EXPECT_EQ(q.counters().written, 1u);
    EXPECT_EQ(q.counters().entries, 1u);
    EXPECT_EQ(q.counters().bytes, bytes.size());

    auto call = [&](auto start) {
        std::promise<std::pair<nlohmann::json, std::string>> p;
        start([&](nlohmann::json r, std::string e) { p.set_value({std::move(r), std::move(e)}); });
        return p.get_future().get();
    };
    auto [listed, e1] = call([&](auto done) { q.list({}, done); });
    ASSERT_EQ(e1, "");
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0]["id"], "t1");

    char path[] = "/tmp/nfqscan-export-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    auto [exported, e2] = call([&](auto done) { q.export_to("t1", fd, done); });
    close(fd);
    EXPECT_EQ(e2, "");
    EXPECT_EQ(read_file(path), bytes);
    unlink(path);

    // Not SMTP, and no relay: clear errors, nothing removed.
    auto [r1, e3] = call([&](auto done) { q.release("t1", done); });
    EXPECT_NE(e3.find("no relay"), std::string::npos) << e3;
    auto [r2, e4] = call([&](auto done) { q.show("../../etc/passwd", done); });
    EXPECT_NE(e4.find("not a quarantine id"), std::string::npos) << e4;
    auto [r3, e5] = call([&](auto done) { q.remove("t1", done); });
    EXPECT_EQ(e5, "");
    EXPECT_EQ(q.counters().entries, 0u);
    EXPECT_EQ(q.counters().deleted, 1u);
}

TEST(Quarantine, HttpEntriesCannotBeReleased) {
    TempDir tmp;
    Quarantine q(config_for(tmp), {"127.0.0.1:9"});
    auto buffer = ObjectBuffer::make(1 << 20);
    ASSERT_EQ(buffer->append(bytes_of("body")), ObjectBuffer::Append::Ok);
    ASSERT_TRUE(q.submit(entry("h1", Clock::now(), "http"), buffer));
    ASSERT_TRUE(q.wait_idle(10s));
    std::promise<std::string> p;
    q.release("h1", [&](nlohmann::json, std::string e) { p.set_value(e); });
    const std::string error = p.get_future().get();
    EXPECT_NE(error.find("only SMTP mail can be released"), std::string::npos) << error;
}

TEST(Quarantine, AFailingDiskCostsTheEntryNotTheCaller) {
    TempDir tmp;
    QuarantineConfig c = config_for(tmp);
    Quarantine q(c, {});
    // The folder disappears under the daemon (or the disk refuses): every
    // write fails, is counted, and submit() still returns at once.
    fs::remove_all(c.dir);
    auto buffer = ObjectBuffer::make(1 << 20);
    ASSERT_EQ(buffer->append(bytes_of("x")), ObjectBuffer::Append::Ok);
    for (int i = 0; i < 3; ++i)
        EXPECT_TRUE(q.submit(entry("f" + std::to_string(i), Clock::now()), buffer));
    ASSERT_TRUE(q.wait_idle(10s));
    EXPECT_EQ(q.counters().write_failures, 3u);
    EXPECT_EQ(q.counters().written, 0u);
    // Too big for max_size: refused before the queue.
    auto big = ObjectBuffer::make(4 << 20);
    ASSERT_EQ(big->append(bytes_of(std::string((1 << 20) + 1, 'z'))), ObjectBuffer::Append::Ok);
    EXPECT_FALSE(q.submit(entry("big", Clock::now()), big));
    EXPECT_EQ(q.counters().too_big, 1u);
}

TEST(QuarantineConfig, KeysAreParsedAndErrorsNameFileLineAndKey) {
    Config c = parse_config(
        "[quarantine]\ndir = \"/var/lib/nfqscan/quarantine\"\nmax_size = \"2G\"\n"
        "max_age_days = 7\n",
        "/etc/nfqscan/nfqscan.toml");
    EXPECT_EQ(c.quarantine.dir, "/var/lib/nfqscan/quarantine");
    EXPECT_EQ(c.quarantine.max_size, 2ull << 30);
    EXPECT_EQ(c.quarantine.max_age_days, 7u);
    EXPECT_EQ(Config::defaults().quarantine.dir, "");
    struct Bad {
        const char* text;
        uint32_t line;
        const char* key;
    };
    for (const Bad& bad : {Bad{"[quarantine]\ndir = \"relative/q\"\n", 2, "quarantine.dir"},
                           Bad{"[quarantine]\n\nmax_size = \"10K\"\n", 3, "quarantine.max_size"},
                           Bad{"[quarantine]\nmax_age_days = -1\n", 2, "quarantine.max_age_days"},
                           Bad{"[quarantine]\ndirectory = \"/q\"\n", 2, "quarantine.directory"}}) {
        try {
            parse_config(bad.text, "/etc/nfqscan/nfqscan.toml");
            ADD_FAILURE() << bad.text;
        } catch (const ConfigError& e) {
            EXPECT_EQ(e.file(), "/etc/nfqscan/nfqscan.toml");
            EXPECT_EQ(e.line(), bad.line) << bad.text;
            EXPECT_EQ(e.key(), bad.key) << bad.text;
        }
    }
}

}  // namespace
}  // namespace nfqscan
