// Every limit ends in its own error category, never in a silent "clean".
#include <gtest/gtest.h>

#include <filesystem>

#include "../../../src/scan/clamav_engine.h"
#include "../../../src/scan/zip_check.h"
#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::corpus_object;
using test::describe;

void expect_error(const ScanVerdict& v, ScanError error, const std::string& where = {}) {
    ASSERT_TRUE(v.is_error()) << describe(v);
    EXPECT_EQ(v.error, error) << describe(v);
    if (!where.empty()) {
        EXPECT_EQ(v.layer_path, where) << describe(v);
    }
}

TEST(ScanLimits, ObjectLargerThanTheLimitIsContentSizeWithoutScanning) {
    ScanService& service = test::tight_limits_service();
    auto engine_scans = [&] {
        ScanStats s = service.stats();
        return std::pair{s.clamav.scans, s.yara.scans};
    };
    const auto before = engine_scans();
    std::string big((8u << 20) + 1, 'a');
    const ScanVerdict v = service.scan(ScanObject::copy_of(big, "big.txt"));
    expect_error(v, ScanError::ContentSize, "big.txt");
    // Not scanned: the engines were not even asked.
    EXPECT_EQ(engine_scans(), before) << describe(v);
    // (They count what they are asked: a small object is scanned by both.)
    EXPECT_TRUE(service.scan(ScanObject::copy_of(std::string(100, 'a'), "small.txt")).is_clean());
    const auto after = engine_scans();
    EXPECT_GT(after.first, before.first);
    EXPECT_GT(after.second, before.second);
}

TEST(ScanLimits, ScanFileChecksTheSizeBeforeReading) {
    test::TempDir dir;
    const std::string path = dir.file("big.bin");
    test::write_file(path, "");
    std::filesystem::resize_file(path, (8u << 20) + 1);
    expect_error(test::tight_limits_service().scan_file(path), ScanError::ContentSize, "big.bin");
}

TEST(ScanLimits, ArchiveMemberBeyondTheLimitIsContentSize) {
    // ClamAV would quietly trim the 20 MiB member to the file-size limit.
    expect_error(test::tight_limits_service().scan(corpus_object("bomb.zip")),
                 ScanError::ContentSize, "bomb.zip/zeros.bin");
}

TEST(ScanLimits, NestingBeyondTheLayerLimitIsDecompressLayer) {
    const ScanVerdict v = test::tight_limits_service().scan(corpus_object("deep.zip"));
    expect_error(v, ScanError::DecompressLayer);
    EXPECT_EQ(v.reason, "Heuristics.Limits.Exceeded.MaxRecursion");
    // Reported at the innermost layer that was still opened.
    EXPECT_EQ(v.layer_path, "deep.zip/level7.zip/level6.zip/level5.zip");
}

TEST(ScanLimits, TooManyFilesIsDecompressLayer) {
    const ScanVerdict v = test::tight_limits_service().scan(corpus_object("many-files.zip"));
    expect_error(v, ScanError::DecompressLayer);
    EXPECT_EQ(v.reason, "Heuristics.Limits.Exceeded.MaxFiles");
}

TEST(ScanLimits, TheSameObjectsPassWithDefaultLimits) {
    for (const char* file : {"deep.zip", "many-files.zip", "bomb.zip"}) {
        const ScanVerdict v = test::shared_service().scan(corpus_object(file));
        EXPECT_TRUE(v.is_clean()) << file << ": " << describe(v);
    }
}

TEST(ScanLimits, PasswordProtectedZipIsEncrypted) {
    if (!std::filesystem::exists(test::corpus_path("encrypted.zip")))
        GTEST_SKIP() << "`zip` is not installed (tools/setup installs it)";
    const ScanVerdict v = test::shared_service().scan(corpus_object("encrypted.zip"));
    expect_error(v, ScanError::Encrypted);
    EXPECT_TRUE(v.layer_path.starts_with("encrypted.zip")) << describe(v);
}

TEST(ScanLimits, TruncatedZipIsCorrupt) {
    expect_error(test::shared_service().scan(corpus_object("truncated.zip")), ScanError::Corrupt,
                 "truncated.zip");
}

TEST(ScanLimits, ZipWithABrokenDirectoryIsCorrupt) {
    expect_error(test::shared_service().scan(corpus_object("broken-directory.zip")),
                 ScanError::Corrupt, "broken-directory.zip");
}

TEST(ScanLimits, VirusOutranksALimit) {
    // EICAR next to an oversized member: the detection is what matters.
    const ScanVerdict v = test::tight_limits_service().scan(corpus_object("eicar-and-bomb.zip"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.layer_path, "eicar-and-bomb.zip/eicar.com");
}

TEST(ScanLimits, ScanPastItsTimeLimitIsTimeout) {
    ScanConfig config = test::shipped_rules_config();
    config.limits.max_scan_time_ms = 1;
    ScanService service(config);
    ASSERT_TRUE(service.reload(config).ok);
    const ScanVerdict v = service.scan(corpus_object("slow.zip"));
    expect_error(v, ScanError::Timeout);
    EXPECT_EQ(v.reason, "Heuristics.Limits.Exceeded.MaxScanTime");
    // The same object within the default limit is clean.
    EXPECT_TRUE(test::shared_service().scan(corpus_object("slow.zip")).is_clean());
}

TEST(ScanLimits, ClamAVNamesMapToCategories) {
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Limits.Exceeded.MaxScanTime"),
              ScanError::Timeout);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Limits.Exceeded.MaxFileSize"),
              ScanError::ContentSize);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Limits.Exceeded.MaxScanSize"),
              ScanError::ContentSize);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Limits.Exceeded.MaxRecursion"),
              ScanError::DecompressLayer);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Limits.Exceeded.MaxFiles"),
              ScanError::DecompressLayer);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Encrypted.Zip"), ScanError::Encrypted);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Encrypted.PDF"), ScanError::Encrypted);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Broken.Executable"), ScanError::Corrupt);
    EXPECT_EQ(error_for_clamav_signature("Win.Test.EICAR_HDB-1"), std::nullopt);
    EXPECT_EQ(error_for_clamav_signature("Heuristics.Phishing.Email.SpoofedDomain"), std::nullopt);
    EXPECT_EQ(error_for_clamav_code(CL_ETIMEOUT), ScanError::Timeout);
    EXPECT_EQ(error_for_clamav_code(CL_EMEM), ScanError::OutOfResource);
    EXPECT_EQ(error_for_clamav_code(CL_EFORMAT), ScanError::Corrupt);
}

TEST(ScanLimits, ErrorNamesRoundTrip) {
    for (size_t i = 0; i < kScanErrorCount; ++i) {
        const auto e = static_cast<ScanError>(i);
        EXPECT_EQ(scan_error_from_name(scan_error_name(e)), e);
    }
    EXPECT_EQ(scan_error_name(ScanError::TooManyRequests), "too-many-requests");
    EXPECT_EQ(scan_error_name(ScanError::DecompressLayer), "decompress-layer");
    EXPECT_EQ(scan_error_from_name("nope"), std::nullopt);
}

TEST(ZipCheck, AcceptsWellFormedArchives) {
    for (const char* file : {"clean.zip", "eicar.zip", "deep.zip", "many-files.zip"})
        EXPECT_TRUE(zip_directory_intact(std::span<const uint8_t>(corpus_object(file).bytes)))
            << file;
}

TEST(ZipCheck, AcceptsDataPrependedToTheArchive) {
    const std::string zip = test::read_file(test::corpus_path("clean.zip"));
    const std::string sfx = std::string(4096, '\x90') + zip;
    EXPECT_TRUE(zip_directory_intact({reinterpret_cast<const uint8_t*>(sfx.data()), sfx.size()}));
}

TEST(ZipCheck, RejectsTruncationAndGarbage) {
    const std::string zip = test::read_file(test::corpus_path("clean.zip"));
    for (size_t cut : {size_t{10}, zip.size() / 2, zip.size() - 1}) {
        const std::string part = zip.substr(0, cut);
        EXPECT_FALSE(
            zip_directory_intact({reinterpret_cast<const uint8_t*>(part.data()), part.size()}))
            << "cut at " << cut;
    }
    const std::string garbage = "PK\x03\x04" + std::string(300, 'x');
    EXPECT_FALSE(
        zip_directory_intact({reinterpret_cast<const uint8_t*>(garbage.data()), garbage.size()}));
}

}  // namespace
}  // namespace nfqscan
