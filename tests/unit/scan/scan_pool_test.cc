// The pool's contract with a queue worker: submit() never blocks, every
// object gets exactly one completion on the caller's loop, a full queue
// answers too-many-requests at once, and the counters add up.
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::describe;
using test::TestSink;

// Holds the first posting thread (a pool thread delivering its completion)
// until released, which keeps that thread busy for as long as the test needs.
class HoldingSink : public CompletionSink {
  public:
    void post(std::function<void()> task) override {
        {
            std::unique_lock lock(mutex_);
            if (!held_once_) {
                held_once_ = true;
                holding_ = true;
                changed_.notify_all();
                changed_.wait(lock, [this] { return released_; });
            }
        }
        inner.post(std::move(task));
    }
    bool wait_until_holding(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, timeout, [this] { return holding_; });
    }
    void release() {
        {
            std::lock_guard lock(mutex_);
            released_ = true;
        }
        changed_.notify_all();
    }
    TestSink inner;

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool held_once_ = false, holding_ = false, released_ = false;
};

TEST(ScanPool, CompletionRunsOnTheCallersLoop) {
    auto sink = std::make_shared<TestSink>();
    std::optional<ScanVerdict> verdict;
    std::thread::id ran_on;
    ASSERT_TRUE(
        test::shared_service().submit(test::corpus_object("eicar.zip"), sink, [&](ScanVerdict v) {
            verdict = std::move(v);
            ran_on = std::this_thread::get_id();
        }));
    ASSERT_TRUE(sink->run_until([&] { return verdict.has_value(); }));
    EXPECT_TRUE(verdict->is_infected()) << describe(*verdict);
    EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(ScanPool, FullQueueAnswersTooManyRequestsAtOnce) {
    ScanConfig config = test::shipped_rules_config();
    config.pool_threads = 1;
    config.queue_length = 1;
    ScanService service(config);
    ASSERT_TRUE(service.reload(config).ok);

    auto sink = std::make_shared<HoldingSink>();
    // Let the pool thread go whatever happens, or ~ScanService would wait forever.
    struct Release {
        HoldingSink& sink;
        ~Release() { sink.release(); }
    } release_on_exit{*sink};
    std::vector<std::optional<ScanVerdict>> verdicts(3);
    auto record = [&](size_t i) {
        return [&verdicts, i](ScanVerdict v) { verdicts[i] = std::move(v); };
    };
    const ScanObject object = ScanObject::copy_of("hello", "hello.txt");

    ASSERT_TRUE(service.submit(object, sink, record(0)));
    // The only pool thread is now stuck delivering the first completion.
    ASSERT_TRUE(sink->wait_until_holding(std::chrono::seconds(30)));
    EXPECT_TRUE(service.submit(object, sink, record(1)));   // takes the one queue slot
    EXPECT_FALSE(service.submit(object, sink, record(2)));  // queue full
    EXPECT_EQ(service.stats().queue_depth, 1u);

    // The refusal is already waiting on the loop; the other two are not.
    ASSERT_TRUE(
        sink->inner.run_until([&] { return verdicts[2].has_value(); }, std::chrono::seconds(5)));
    EXPECT_FALSE(verdicts[0] || verdicts[1]);
    ASSERT_TRUE(verdicts[2]->is_error());
    EXPECT_EQ(verdicts[2]->error, ScanError::TooManyRequests);

    sink->release();
    ASSERT_TRUE(sink->inner.run_until([&] { return verdicts[0] && verdicts[1]; }));
    EXPECT_TRUE(verdicts[0]->is_clean()) << describe(*verdicts[0]);
    EXPECT_TRUE(verdicts[1]->is_clean()) << describe(*verdicts[1]);

    const ScanStats stats = service.stats();
    EXPECT_EQ(stats.submitted, 3u);
    EXPECT_EQ(stats.completed, 3u);
    EXPECT_EQ(stats.clean, 2u);
    EXPECT_EQ(stats.errors[static_cast<size_t>(ScanError::TooManyRequests)], 1u);
    EXPECT_EQ(stats.queue_depth_max, 1u);
    EXPECT_EQ(stats.queue_capacity, 1u);
    EXPECT_EQ(stats.threads, 1u);
}

TEST(ScanPool, BeforeTheFirstLoadVerdictsAreEngineNotReady) {
    ScanService service(test::shipped_rules_config());
    EXPECT_FALSE(service.ready());
    EXPECT_FALSE(service.engines_info().has_value());

    auto sink = std::make_shared<TestSink>();
    std::optional<ScanVerdict> verdict;
    EXPECT_FALSE(service.submit(test::corpus_object("eicar.com"), sink,
                                [&](ScanVerdict v) { verdict = std::move(v); }));
    ASSERT_TRUE(sink->run_until([&] { return verdict.has_value(); }));
    ASSERT_TRUE(verdict->is_error());
    EXPECT_EQ(verdict->error, ScanError::EngineNotReady);

    const ScanVerdict direct = service.scan(test::corpus_object("eicar.com"));
    ASSERT_TRUE(direct.is_error());
    EXPECT_EQ(direct.error, ScanError::EngineNotReady);
}

TEST(ScanPool, ManyObjectsAllComplete) {
    ScanConfig config = test::shipped_rules_config();
    config.queue_length = 64;
    config.cache_entries = 0;  // every object scanned (the cache repeats: verdict_cache_test)
    ScanService service(config);
    ASSERT_TRUE(service.reload(config).ok);
    auto sink = std::make_shared<TestSink>();
    const std::vector<std::string> files = {"eicar.com", "clean.txt", "eicar.zip",
                                            "clean.zip", "spam.txt",  "clean.eml"};
    std::map<size_t, ScanVerdict> verdicts;
    for (size_t i = 0; i < 30; ++i)
        ASSERT_TRUE(
            service.submit(test::corpus_object(files[i % files.size()]), sink,
                           [&verdicts, i](ScanVerdict v) { verdicts.emplace(i, std::move(v)); }));
    ASSERT_TRUE(sink->run_until([&] { return verdicts.size() == 30; }));
    for (const auto& [i, v] : verdicts) {
        const std::string& file = files[i % files.size()];
        const bool dirty = file.starts_with("eicar") || file.starts_with("spam");
        EXPECT_EQ(v.is_infected(), dirty) << file << ": " << describe(v);
    }
    const ScanStats stats = service.stats();
    EXPECT_EQ(stats.completed, 30u);
    EXPECT_EQ(stats.infected, 15u);
    EXPECT_EQ(stats.clean, 15u);
    EXPECT_EQ(stats.scan_latency.count(), 30u);
    EXPECT_EQ(stats.queue_wait.count(), 30u);
    EXPECT_GT(stats.bytes, 0u);
    EXPECT_GT(stats.clamav.scans, 0u);
    EXPECT_GT(stats.yara.scans, stats.clamav.scans);  // the objects and their layers
}

TEST(ScanPool, StatsRenderAsJson) {
    test::shared_service().scan(test::corpus_object("clean.zip"));
    const nlohmann::json j = test::shared_service().stats();
    EXPECT_EQ(j["scan_latency"]["buckets"].size(), kLatencyBucketsUs.size() + 1);
    EXPECT_EQ(j["scan_latency"]["buckets"].back()["le_us"], "inf");
    EXPECT_GE(j["completed"].get<uint64_t>(), 1u);
    EXPECT_GE(j["engines"]["clamav"]["scans"].get<uint64_t>(), 1u);
    EXPECT_TRUE(j["errors"].contains("too-many-requests"));
    EXPECT_TRUE(j.contains("throughput_mb_per_s"));
    EXPECT_TRUE(j["queue"].contains("capacity"));
}

TEST(ScanPool, VerdictJson) {
    const nlohmann::json infected = test::shared_service().scan(test::corpus_object("eicar.html"));
    EXPECT_EQ(infected["verdict"], "infected");
    EXPECT_EQ(infected["engine"], "yara");
    EXPECT_EQ(infected["name"], "NfqScan_Test_EICAR");
    EXPECT_EQ(infected["category"], "virus");
    EXPECT_EQ(infected["layer"], "eicar.html");
    const nlohmann::json error = ScanVerdict::failed(ScanError::Timeout, "slow", "a/b");
    EXPECT_EQ(error["verdict"], "error");
    EXPECT_EQ(error["category"], "timeout");
    const nlohmann::json skipped = ScanVerdict::skipped_clean();
    EXPECT_EQ(skipped["verdict"], "clean");
    EXPECT_TRUE(skipped.contains("elapsed_ms"));
    EXPECT_FALSE(skipped.contains("name"));
    EXPECT_EQ(skipped["skipped"], true);
}

}  // namespace
}  // namespace nfqscan
