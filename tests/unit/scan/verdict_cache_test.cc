// The verdict cache (src/scan/verdict_cache.h): what the key is made of,
// which verdicts are kept, the LRU bound and its memory, and the service
// around it: a hit is answered without a scan, a reload or another profile
// or limit makes the next identical object be scanned again, errors are
// scanned every time.
#include "../../../src/scan/verdict_cache.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nfqscan/object_buffer.h"
#include "nfqscan/sha256.h"
#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::describe;
using test::TestSink;

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string hex(const Sha256Digest& d) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint8_t b : d) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 15]);
    }
    return out;
}

constexpr auto kCount = VerdictCache::Tally::HitOrMiss;

Detection eicar_detection() {
    return {ScanEngineKind::ClamAV, "Eicar-Signature", "a.com", ThreatCategory::Virus};
}

TEST(Sha256, KnownAnswersWholeAndPieceByPiece) {
    // FIPS 180-2 examples.
    EXPECT_EQ(hex(Sha256::of(bytes_of("abc"))),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(hex(Sha256::of({})),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    Sha256 h;
    h.update(bytes_of("a"));
    h.update(bytes_of("b"));
    EXPECT_EQ(hex(h.digest()), hex(Sha256::of(bytes_of("ab"))));
    h.update(bytes_of("c"));  // digest() did not end the hash
    EXPECT_EQ(hex(h.digest()), hex(Sha256::of(bytes_of("abc"))));
    h.reset();
    EXPECT_EQ(hex(h.digest()), hex(Sha256::of({})));
}

// Restores the process-wide switch whatever a test does with it.
struct HashingScope {
    explicit HashingScope(bool on) : was(ObjectBuffer::hashing()) { ObjectBuffer::set_hashing(on); }
    ~HashingScope() { ObjectBuffer::set_hashing(was); }
    bool was;
};

TEST(ObjectBufferDigest, HashesWhatIsAppendedOnlyWhenOn) {
    {
        HashingScope on(true);
        std::string all;
        auto b = ObjectBuffer::make(1 << 20);
        for (int i = 0; i < 100; ++i) {
            const std::string piece(static_cast<size_t>(997 + i), static_cast<char>('a' + i % 26));
            ASSERT_EQ(b->append(bytes_of(piece)), ObjectBuffer::Append::Ok);
            all += piece;
        }
        // Refused appends are not part of the object, nor of its digest.
        const std::string too_much((1 << 20) - all.size() + 1, 'x');
        EXPECT_EQ(b->append(bytes_of(too_much)), ObjectBuffer::Append::OverLimit);
        ASSERT_TRUE(b->sha256().has_value());
        EXPECT_EQ(hex(*b->sha256()), hex(Sha256::of(bytes_of(all))));
        b.reset();
        // A recycled buffer starts its digest again.
        auto again = ObjectBuffer::make(1 << 20);
        ASSERT_EQ(again->append(bytes_of("abc")), ObjectBuffer::Append::Ok);
        EXPECT_EQ(hex(*again->sha256()), hex(Sha256::of(bytes_of("abc"))));
    }
    HashingScope off(false);
    auto b = ObjectBuffer::make(1 << 20);
    ASSERT_EQ(b->append(bytes_of("abc")), ObjectBuffer::Append::Ok);
    EXPECT_FALSE(b->sha256().has_value());
}

// Everything the verdict depends on is in the key: change any one part and
// the key changes; the same parts give the same key.
TEST(VerdictCacheKey, EveryInputChangesTheKey) {
    const Sha256Digest content = Sha256::of(bytes_of("object"));
    ScanObject object = ScanObject::copy_of("object", "setup.exe");
    object.mime_type = "application/octet-stream";
    ScanProfile profile;
    ScanLimits limits;
    const VerdictCacheKey base = verdict_cache_key(content, 7, object, &profile, limits);
    EXPECT_EQ(base, verdict_cache_key(content, 7, object, &profile, limits));

    std::vector<std::pair<std::string, VerdictCacheKey>> variants;
    auto add = [&](std::string what, const std::function<void(Sha256Digest&, uint64_t&, ScanObject&,
                                                              ScanProfile&, ScanLimits&)>& change) {
        Sha256Digest c = content;
        uint64_t g = 7;
        ScanObject o = object;
        ScanProfile p = profile;
        ScanLimits l = limits;
        change(c, g, o, p, l);
        variants.emplace_back(std::move(what), verdict_cache_key(c, g, o, &p, l));
    };
    add("content", [](auto& c, auto&, auto&, auto&, auto&) { c[31] ^= 1; });
    add("generation", [](auto&, auto& g, auto&, auto&, auto&) { g = 8; });
    add("profile name", [](auto&, auto&, auto& o, auto&, auto&) { o.profile = "mail"; });
    add("profile mode",
        [](auto&, auto&, auto&, auto& p, auto&) { p.mode = ScanProfile::Mode::Listed; });
    add("profile extensions", [](auto&, auto&, auto&, auto& p, auto&) { p.extensions = {"exe"}; });
    add("profile mime types",
        [](auto&, auto&, auto&, auto& p, auto&) { p.mime_types = {"application/*"}; });
    add("max_content_size", [](auto&, auto&, auto&, auto&, auto& l) { l.max_content_size -= 1; });
    add("max_scan_size", [](auto&, auto&, auto&, auto&, auto& l) { l.max_scan_size += 1; });
    add("max_layers", [](auto&, auto&, auto&, auto&, auto& l) { l.max_layers = 3; });
    add("max_files", [](auto&, auto&, auto&, auto&, auto& l) { l.max_files = 10; });
    add("max_scan_time_ms", [](auto&, auto&, auto&, auto&, auto& l) { l.max_scan_time_ms = 5; });
    add("name", [](auto&, auto&, auto& o, auto&, auto&) { o.name = "setup.ex"; });
    add("mime type", [](auto&, auto&, auto& o, auto&, auto&) { o.mime_type = "text/plain"; });
    // Field boundaries count: "setup.exe" + "" is not "setup.ex" + "e".
    add("name/type boundary", [](auto&, auto&, auto& o, auto&, auto&) {
        o.name = "setup.ex";
        o.mime_type = "eapplication/octet-stream";
    });
    for (const auto& [what, key] : variants)
        EXPECT_NE(key, base) << what << " does not change the key";
    EXPECT_NE(verdict_cache_key(content, 7, object, nullptr, limits), base)
        << "no profile configured vs the default one";
}

TEST(VerdictCache, KeepsOnlyDefiniteVerdicts) {
    EXPECT_TRUE(verdict_cacheable(ScanVerdict::clean()));
    EXPECT_TRUE(verdict_cacheable(ScanVerdict::infected(eicar_detection())));
    EXPECT_FALSE(verdict_cacheable(ScanVerdict::skipped_clean()));
    for (size_t e = 0; e < kScanErrorCount; ++e)
        EXPECT_FALSE(verdict_cacheable(ScanVerdict::failed(static_cast<ScanError>(e), "x")))
            << scan_error_name(static_cast<ScanError>(e));

    VerdictCache cache(10);
    cache.start_generation(1, 10);
    const VerdictCacheKey k1 = Sha256::of(bytes_of("1")), k2 = Sha256::of(bytes_of("2"));
    cache.insert(k1, ScanVerdict::failed(ScanError::Timeout, "slow"), 1);
    cache.insert(k2, ScanVerdict::failed(ScanError::TooManyRequests, "full"), 1);
    EXPECT_FALSE(cache.find(k1, kCount));
    EXPECT_FALSE(cache.find(k2, kCount));
    EXPECT_EQ(cache.stats().entries, 0u);

    ScanVerdict infected = ScanVerdict::infected(eicar_detection());
    infected.elapsed = std::chrono::microseconds(1234);
    cache.insert(k1, infected, 1);
    const std::optional<ScanVerdict> hit = cache.find(k1, kCount);
    ASSERT_TRUE(hit);
    EXPECT_TRUE(hit->is_infected());
    EXPECT_TRUE(hit->cached);
    EXPECT_EQ(hit->elapsed.count(), 0) << "nothing was scanned for this answer";
    EXPECT_EQ(hit->detection.signature, "Eicar-Signature");
    EXPECT_EQ(hit->detection.layer_path, "a.com");
    EXPECT_EQ(nlohmann::json(*hit).value("cached", false), true);
    const VerdictCacheStats s = cache.stats();
    EXPECT_EQ(s.hits, 1u);
    EXPECT_EQ(s.misses, 2u);
    EXPECT_EQ(s.entries, 1u);
    EXPECT_EQ(s.inserts, 1u);
    EXPECT_GT(s.memory_bytes, sizeof(ScanVerdict));
}

TEST(VerdictCache, LeastRecentlyUsedGoesBeyondCapacityAndMemoryFollows) {
    VerdictCache cache(3);
    cache.start_generation(1, 3);
    std::vector<VerdictCacheKey> keys;
    for (int i = 0; i < 5; ++i)
        keys.push_back(Sha256::of(bytes_of(std::to_string(i))));
    for (int i = 0; i < 3; ++i)
        cache.insert(keys[i], ScanVerdict::clean(), 1);
    const uint64_t three = cache.stats().memory_bytes;
    ASSERT_TRUE(cache.find(keys[0], kCount));        // 0 is now the most recent
    cache.insert(keys[3], ScanVerdict::clean(), 1);  // evicts 1
    EXPECT_TRUE(cache.find(keys[0], kCount));
    EXPECT_FALSE(cache.find(keys[1], kCount));
    EXPECT_TRUE(cache.find(keys[2], kCount));
    EXPECT_TRUE(cache.find(keys[3], kCount));
    VerdictCacheStats s = cache.stats();
    EXPECT_EQ(s.entries, 3u);
    EXPECT_EQ(s.evictions, 1u);
    EXPECT_EQ(s.memory_bytes, three) << "same kind of entries, same memory";

    // A long detection costs its strings; one too long is not kept at all.
    Detection d = eicar_detection();
    d.layer_path = std::string(1000, 'p');
    cache.insert(keys[4], ScanVerdict::infected(d), 1);
    EXPECT_GT(cache.stats().memory_bytes, three + 1000 - three / 3);
    EXPECT_EQ(cache.stats().entries, 3u);
    d.layer_path = std::string(VerdictCache::kMaxEntryMemory, 'p');
    const VerdictCacheKey long_key = Sha256::of(bytes_of("long"));
    cache.insert(long_key, ScanVerdict::infected(d), 1);
    EXPECT_FALSE(cache.find(long_key, kCount));
    EXPECT_TRUE(cache.find(keys[4], kCount)) << "nothing was evicted for it";
    EXPECT_LE(cache.stats().memory_bytes, 3 * VerdictCache::kMaxEntryMemory);

    // Capacity 0: off, nothing kept or found.
    cache.start_generation(2, 0);
    cache.insert(keys[0], ScanVerdict::clean(), 2);
    EXPECT_FALSE(cache.find(keys[0], kCount));
    s = cache.stats();
    EXPECT_EQ(s.entries, 0u);
    EXPECT_EQ(s.memory_bytes, 0u);
    EXPECT_EQ(s.invalidated, 3u);
}

TEST(VerdictCache, ANewGenerationDropsEverythingAndRefusesLateVerdicts) {
    VerdictCache cache(10);
    cache.start_generation(1, 10);
    const VerdictCacheKey k = Sha256::of(bytes_of("k"));
    cache.insert(k, ScanVerdict::clean(), 1);
    cache.start_generation(2, 10);
    EXPECT_FALSE(cache.find(k, kCount));
    // A scan that started on generation 1 finishes after the reload.
    cache.insert(k, ScanVerdict::clean(), 1);
    EXPECT_FALSE(cache.find(k, kCount));
    EXPECT_EQ(cache.stats().invalidated, 1u);
}

// ---------------------------------------------------------------------------
// Through the service, with the shipped rules and real engines.

class CachedService : public ::testing::Test {
  protected:
    void SetUp() override {
        config_ = test::shipped_rules_config();
        config_.pool_threads = 1;
        service_ = std::make_unique<ScanService>(config_);
        ASSERT_TRUE(service_->reload(config_).ok);
        ASSERT_TRUE(ObjectBuffer::hashing());
    }
    void TearDown() override {
        service_.reset();
        ObjectBuffer::set_hashing(false);
    }

    // An inspector's object: the bytes in an ObjectBuffer, hashed as appended.
    static ScanObject buffered(const std::string& corpus_name, const std::string& profile = {}) {
        const std::string bytes = test::read_file(test::corpus_path(corpus_name));
        auto buffer = ObjectBuffer::make(64 << 20);
        EXPECT_EQ(buffer->append(bytes_of(bytes)), ObjectBuffer::Append::Ok);
        ScanObject o = ScanObject::in_file(std::move(buffer), corpus_name);
        o.profile = profile;
        return o;
    }

    ScanVerdict judge(ScanObject object) {
        auto sink = std::make_shared<TestSink>();
        std::optional<ScanVerdict> verdict;
        service_->submit(std::move(object), sink, [&](ScanVerdict v) { verdict = std::move(v); });
        EXPECT_TRUE(sink->run_until([&] { return verdict.has_value(); }));
        return verdict.value_or(ScanVerdict::failed(ScanError::Timeout, "no verdict"));
    }

    uint64_t clamav_scans() const { return service_->stats().clamav.scans; }

    ScanConfig config_;
    std::unique_ptr<ScanService> service_;
};

TEST_F(CachedService, TheSecondIdenticalObjectIsNotScanned) {
    const ScanVerdict first = judge(buffered("eicar.zip"));
    ASSERT_TRUE(first.is_infected()) << describe(first);
    EXPECT_FALSE(first.cached);
    const uint64_t scans = clamav_scans();
    const uint64_t yara = service_->stats().yara.scans;

    const ScanVerdict second = judge(buffered("eicar.zip"));
    ASSERT_TRUE(second.is_infected()) << describe(second);
    EXPECT_TRUE(second.cached);
    EXPECT_EQ(second.detection.signature, first.detection.signature);
    EXPECT_EQ(second.detection.layer_path, first.detection.layer_path);
    EXPECT_EQ(clamav_scans(), scans) << "the hit reached ClamAV";
    EXPECT_EQ(service_->stats().yara.scans, yara) << "the hit reached YARA";

    const ScanVerdict clean = judge(buffered("clean.zip"));
    EXPECT_TRUE(clean.is_clean() && !clean.cached) << describe(clean);
    EXPECT_TRUE(judge(buffered("clean.zip")).cached);

    const ScanStats s = service_->stats();
    EXPECT_EQ(s.cache.hits, 2u);
    EXPECT_EQ(s.cache.misses, 2u);
    EXPECT_EQ(s.cache.entries, 2u);
    EXPECT_EQ(s.completed, 4u);
    EXPECT_EQ(s.infected, 2u);
    EXPECT_EQ(s.clean, 2u);
    EXPECT_EQ(s.scan_latency.count(), 2u) << "only real scans have a scan time";
    const nlohmann::json j = s;
    EXPECT_EQ(j["cache"]["hits"], 2);
    EXPECT_GT(j["cache"]["memory_bytes"].get<uint64_t>(), 0u);
}

TEST_F(CachedService, ObjectsWithoutADigestAreHashedOnThePool) {
    // A mapped file (nfqscanctl scan) or a copy carries no digest.
    ASSERT_TRUE(judge(test::corpus_object("eicar.zip")).is_infected());
    const uint64_t scans = clamav_scans();
    ASSERT_GT(scans, 0u) << "ClamAV found it (YARA does not see into the zip)";
    const ScanVerdict again = judge(test::corpus_object("eicar.zip"));
    EXPECT_TRUE(again.is_infected() && again.cached) << describe(again);
    EXPECT_EQ(clamav_scans(), scans);
    // The same bytes in an ObjectBuffer hit the same entry.
    EXPECT_TRUE(judge(buffered("eicar.zip")).cached);
}

TEST_F(CachedService, AReloadMakesTheNextIdenticalObjectBeScannedAgain) {
    ASSERT_TRUE(judge(buffered("eicar.gz")).is_infected());
    ASSERT_TRUE(judge(buffered("eicar.gz")).cached);
    ASSERT_TRUE(service_->reload(config_).ok);  // same files: a new generation all the same
    const uint64_t scans = clamav_scans();
    const ScanVerdict after = judge(buffered("eicar.gz"));
    EXPECT_TRUE(after.is_infected()) << describe(after);
    EXPECT_FALSE(after.cached);
    EXPECT_EQ(clamav_scans(), scans + 1);
    EXPECT_TRUE(judge(buffered("eicar.gz")).cached);
    EXPECT_EQ(service_->stats().cache.invalidated, 1u);
}

TEST_F(CachedService, AnotherProfileOrLimitMisses) {
    ScanConfig config = config_;
    config.profiles["mail"] = ScanProfile{};  // scans everything, like default
    ASSERT_TRUE(service_->reload(config).ok);
    ASSERT_TRUE(judge(buffered("clean.txt")).is_clean());
    EXPECT_TRUE(judge(buffered("clean.txt")).cached);
    uint64_t scans = clamav_scans();
    const ScanVerdict other = judge(buffered("clean.txt", "mail"));
    EXPECT_TRUE(other.is_clean() && !other.cached) << describe(other);
    EXPECT_EQ(clamav_scans(), scans + 1);

    // Another limit comes with a reload, which is a new generation anyway;
    // that the limit alone changes the key is VerdictCacheKey's test.
    config.limits.max_files = 500;
    ASSERT_TRUE(service_->reload(config).ok);
    scans = clamav_scans();
    EXPECT_FALSE(judge(buffered("clean.txt")).cached);
    EXPECT_EQ(clamav_scans(), scans + 1);
}

TEST_F(CachedService, ErrorsAreScannedEveryTime) {
    for (int i = 0; i < 2; ++i) {
        const uint64_t scans = clamav_scans();
        const ScanVerdict v = judge(buffered("truncated.zip"));
        EXPECT_TRUE(v.is_error()) << describe(v);
        EXPECT_FALSE(v.cached);
        EXPECT_EQ(clamav_scans(), scans + 1) << "round " << i;
    }
    EXPECT_EQ(service_->stats().cache.entries, 0u);
    EXPECT_EQ(service_->stats().cache.misses, 2u);
}

TEST_F(CachedService, ZeroEntriesTurnsItOff) {
    ScanConfig config = config_;
    config.cache_entries = 0;
    ASSERT_TRUE(service_->reload(config).ok);
    EXPECT_FALSE(ObjectBuffer::hashing()) << "nothing to hash for";
    for (int i = 0; i < 2; ++i) {
        const uint64_t scans = clamav_scans();
        EXPECT_FALSE(judge(test::corpus_object("eicar.zip")).cached);
        EXPECT_EQ(clamav_scans(), scans + 1);
    }
    const ScanStats s = service_->stats();
    EXPECT_EQ(s.cache.capacity, 0u);
    EXPECT_EQ(s.cache.hits + s.cache.misses, 0u);
}

}  // namespace
}  // namespace nfqscan
