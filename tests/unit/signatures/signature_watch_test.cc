// Signature updates: the debouncer turns a burst of events into one check
// (and still fires for a folder that never settles); snapshots tell added,
// modified and removed signature files and ignore everything else; the
// watcher checks once after a freshclam-like burst of renames, notices a
// folder that is deleted and created again, and runs the self-check without
// inotify.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "nfqscan/signature_watch.h"

namespace nfqscan {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = Debouncer::Clock;

TEST(Debouncer, NothingPendingNeverFires) {
    Debouncer d(2s, 30s);
    const auto t0 = Clock::now();
    EXPECT_FALSE(d.pending());
    EXPECT_FALSE(d.deadline());
    EXPECT_FALSE(d.fire(t0 + 1h));
}

TEST(Debouncer, BurstFiresOnceAfterTheQuietPeriod) {
    Debouncer d(2s, 30s);
    const auto t0 = Clock::now();
    // freshclam: a few renames within a second.
    for (auto t : {0ms, 100ms, 300ms, 900ms})
        d.event(t0 + t);
    EXPECT_EQ(*d.deadline(), t0 + 900ms + 2s);
    EXPECT_FALSE(d.fire(t0 + 2800ms));
    EXPECT_TRUE(d.fire(t0 + 2900ms));
    EXPECT_FALSE(d.pending());
    EXPECT_FALSE(d.fire(t0 + 10s)) << "fires once per burst";
}

TEST(Debouncer, AnEventLaterStartsANewBurst) {
    Debouncer d(2s, 30s);
    const auto t0 = Clock::now();
    d.event(t0);
    EXPECT_TRUE(d.fire(t0 + 2s));
    d.event(t0 + 5s);
    EXPECT_EQ(*d.deadline(), t0 + 7s);
    EXPECT_TRUE(d.fire(t0 + 7s));
}

TEST(Debouncer, AFolderThatNeverSettlesStillFiresAtMaxDelay) {
    Debouncer d(2s, 30s);
    const auto t0 = Clock::now();
    bool fired = false;
    auto t = t0;
    for (; t < t0 + 60s && !fired; t += 1s) {
        d.event(t);
        fired = d.fire(t);
    }
    EXPECT_TRUE(fired);
    EXPECT_EQ(t - 1s, t0 + 30s);
}

class SignatureFolder : public ::testing::Test {
  protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() /
                ("nfqscan-sigwatch-" + std::to_string(::getpid()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(root_);
        fs::create_directories(clamav());
        fs::create_directories(yara() / "sub");
        config_.clamav_db_dirs = {clamav().string()};
        config_.yara_rule_dirs = {yara().string()};
    }
    void TearDown() override { fs::remove_all(root_); }

    fs::path clamav() const { return root_ / "clamav"; }
    fs::path yara() const { return root_ / "yara"; }
    static void write(const fs::path& p, std::string_view text) {
        std::ofstream(p, std::ios::binary) << text;
    }

    fs::path root_;
    ScanConfig config_;
};

TEST_F(SignatureFolder, SnapshotHoldsSignatureFilesOnly) {
    write(clamav() / "local.ndb", "Sig:0:*:414243\n");
    write(clamav() / "main.cvd", "x");
    write(clamav() / "freshclam.dat", "state");  // rewritten on every freshclam run
    write(clamav() / "notes.txt", "x");
    write(yara() / "a.yar", "rule a { condition: false }");
    write(yara() / "sub" / "b.yara", "rule b { condition: false }");
    write(yara() / "README", "x");

    const SignatureSnapshot s = SignatureSnapshot::take(config_);
    std::vector<std::string> names;
    for (const auto& [path, _] : s.files())
        names.push_back(fs::path(path).filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"a.yar", "b.yara", "local.ndb", "main.cvd"}));
    // The YARA folder's subfolder is watched too.
    EXPECT_NE(std::find(s.folders().begin(), s.folders().end(), (yara() / "sub").string()),
              s.folders().end());

    config_.engine = ScanConfig::Backend::Clamd;  // clamd loads its own databases
    EXPECT_EQ(SignatureSnapshot::take(config_).files().size(), 2u);
}

TEST_F(SignatureFolder, CompareTellsAddedModifiedAndRemoved) {
    write(clamav() / "daily.cld", "1");
    write(clamav() / "main.cvd", "1");
    write(yara() / "a.yar", "rule a { condition: false }");
    const SignatureSnapshot before = SignatureSnapshot::take(config_);
    EXPECT_TRUE(compare(before, SignatureSnapshot::take(config_)).empty());

    // freshclam: a new file renamed over the old one (new inode, same size).
    write(clamav() / "daily.cld.tmp", "2");
    fs::rename(clamav() / "daily.cld.tmp", clamav() / "daily.cld");
    fs::remove(yara() / "a.yar");
    write(clamav() / "local.hdb", "x");
    write(clamav() / "freshclam.dat", "y");

    const SignatureChanges c = compare(before, SignatureSnapshot::take(config_));
    EXPECT_EQ(c.added, std::vector<std::string>{(clamav() / "local.hdb").string()});
    EXPECT_EQ(c.modified, std::vector<std::string>{(clamav() / "daily.cld").string()});
    EXPECT_EQ(c.removed, std::vector<std::string>{(yara() / "a.yar").string()});
    EXPECT_EQ(c.summary(), "added " + (clamav() / "local.hdb").string() + "; modified " +
                               (clamav() / "daily.cld").string() + "; removed " +
                               (yara() / "a.yar").string());
}

TEST(SignatureChanges, SummaryNamesAFewAndCountsTheRest) {
    SignatureChanges c;
    c.added = {"a", "b", "c", "d"};
    EXPECT_EQ(c.summary(2), "added a, b and 2 more");
}

// Counts the watcher's checks; waits for a number of them.
class CheckCounter {
  public:
    SignatureWatcher::Check callback() {
        return [this](SignatureWatcher::Trigger t) {
            std::lock_guard lock(mutex_);
            ++(t == SignatureWatcher::Trigger::Inotify ? inotify_ : self_check_);
            changed_.notify_all();
        };
    }
    bool wait_inotify(int n, std::chrono::seconds timeout = 20s) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [&] { return inotify_ >= n; });
    }
    bool wait_self_check(int n, std::chrono::seconds timeout = 20s) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [&] { return self_check_ >= n; });
    }
    int inotify() {
        std::lock_guard lock(mutex_);
        return inotify_;
    }

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    int inotify_ = 0, self_check_ = 0;
};

// configure() applies on the watcher's thread: wait until its folders are
// watched before changing them.
bool wait_watching(const SignatureWatcher& watcher, size_t folders) {
    const auto deadline = Clock::now() + 20s;
    while (Clock::now() < deadline) {
        if (watcher.status()["watched_folders"].get<size_t>() >= folders) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

SignatureWatcher::Options quick(const ScanConfig& config) {
    SignatureWatcher::Options o;
    o.folders = SignatureSnapshot::take(config).folders();
    o.self_check = 0s;
    o.quiet = 300ms;
    return o;
}

TEST_F(SignatureFolder, WatcherChecksOnceAfterARenameBurst) {
    CheckCounter counter;
    SignatureWatcher watcher(counter.callback());
    watcher.configure(quick(config_));
    ASSERT_TRUE(wait_watching(watcher, 3));  // clamav, yara, yara/sub
    write(clamav() / "warmup.ndb", "x");
    ASSERT_TRUE(counter.wait_inotify(1));

    for (const char* name : {"daily.cld", "main.cvd", "bytecode.cvd"}) {
        write(clamav() / (std::string(name) + ".tmp"), name);  // not a signature name
        fs::rename(clamav() / (std::string(name) + ".tmp"), clamav() / name);
    }
    ASSERT_TRUE(counter.wait_inotify(2));
    // Well past the quiet period: no second check for the same burst.
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(counter.inotify(), 2);
    EXPECT_EQ(watcher.status()["checks"]["inotify"], 2);
}

TEST_F(SignatureFolder, WatcherFollowsAFolderDeletedAndCreatedAgain) {
    CheckCounter counter;
    SignatureWatcher watcher(counter.callback());
    watcher.configure(quick(config_));
    ASSERT_TRUE(wait_watching(watcher, 3));
    write(yara() / "a.yar", "x");
    ASSERT_TRUE(counter.wait_inotify(1));

    fs::remove_all(yara());
    ASSERT_TRUE(counter.wait_inotify(2)) << "the folder's removal is a change";
    fs::create_directories(yara());
    ASSERT_TRUE(counter.wait_inotify(3)) << "its creation too";
    // The new folder is watched: a rule dropped into it is seen.
    const int before = counter.inotify();
    write(yara() / "b.yar", "x");
    ASSERT_TRUE(counter.wait_inotify(before + 1));
}

TEST_F(SignatureFolder, SelfCheckRunsWithoutInotify) {
    CheckCounter counter;
    SignatureWatcher watcher(counter.callback());
    SignatureWatcher::Options o = quick(config_);
    o.inotify = false;
    o.self_check = 1s;
    watcher.configure(o);
    write(clamav() / "local.ndb", "x");
    EXPECT_TRUE(counter.wait_self_check(2));
    EXPECT_EQ(counter.inotify(), 0);
    EXPECT_EQ(watcher.status()["inotify"], false);
}

}  // namespace
}  // namespace nfqscan
