// What the shipped signatures and rules find, and where: EICAR in its usual
// disguises, every file of Debian's clamav-testfiles, YARA rules below
// encodings and archives, and clean objects staying clean.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::corpus_object;
using test::describe;

constexpr std::string_view kEicarSignature = "NfqScan.Test.EICAR.UNOFFICIAL";
constexpr std::string_view kClamExeSignature = "NfqScan.Test.ClamAVTestFile.UNOFFICIAL";
constexpr std::string_view kTestFiles = "/usr/share/clamav-testfiles";

size_t depth(const std::string& path) {
    return std::count(path.begin(), path.end(), '/');
}

struct Expected {
    std::string file;
    std::string layer;  // path where ClamAV reports EICAR
};

class ClamAVFindsEicar : public testing::TestWithParam<Expected> {};

TEST_P(ClamAVFindsEicar, AtTheRightLayer) {
    const ScanVerdict v = test::clamav_only_service().scan(corpus_object(GetParam().file));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.engine, ScanEngineKind::ClamAV);
    EXPECT_EQ(v.detection.signature, kEicarSignature);
    EXPECT_EQ(v.detection.category, ThreatCategory::Virus);
    EXPECT_EQ(v.detection.layer_path, GetParam().layer);
}

INSTANTIATE_TEST_SUITE_P(Corpus, ClamAVFindsEicar,
                         testing::Values(Expected{"eicar.com", "eicar.com"},
                                         Expected{"eicar.zip", "eicar.zip/eicar.com"},
                                         Expected{"eicar.gz", "eicar.gz/(text_ascii)"},
                                         Expected{"eicar-attachment.eml",
                                                  "eicar-attachment.eml/eicar.com"}),
                         [](const auto& info) {
                             std::string name = info.param.file;
                             std::replace_if(
                                 name.begin(), name.end(), [](char c) { return !std::isalnum(c); },
                                 '_');
                             return name;
                         });

TEST(ScanDetection, ClamAVAloneMissesEicarInHtml) {
    // The fact from DESIGN.md that makes YARA on raw bytes necessary; if a
    // future libclamav finds it, this documents the change.
    const ScanVerdict v = test::clamav_only_service().scan(corpus_object("eicar.html"));
    EXPECT_TRUE(v.is_clean()) << describe(v);
}

TEST(ScanDetection, YaraFindsEicarInHtml) {
    const ScanVerdict v = test::shared_service().scan(corpus_object("eicar.html"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.engine, ScanEngineKind::Yara);
    EXPECT_EQ(v.detection.signature, "NfqScan_Test_EICAR");
    EXPECT_EQ(v.detection.category, ThreatCategory::Virus);
    EXPECT_EQ(v.detection.layer_path, "eicar.html");
}

TEST(ScanDetection, BothEnginesTogetherFindEveryEicarCarrier) {
    for (const char* file :
         {"eicar.com", "eicar.zip", "eicar.gz", "eicar-attachment.eml", "eicar.html"}) {
        const ScanVerdict v = test::shared_service().scan(corpus_object(file));
        ASSERT_TRUE(v.is_infected()) << file << ": " << describe(v);
        EXPECT_EQ(v.detection.category, ThreatCategory::Virus) << file;
        EXPECT_TRUE(v.detection.layer_path.starts_with(file)) << describe(v);
    }
}

TEST(ScanDetection, EveryClamAVTestFileIsDetectedByTheShippedSignature) {
    if (!std::filesystem::is_directory(kTestFiles))
        GTEST_SKIP() << "clamav-testfiles is not installed (tools/setup installs it)";
    size_t files = 0, layered = 0;
    for (const auto& entry : std::filesystem::directory_iterator(kTestFiles)) {
        if (!entry.is_regular_file()) continue;
        ++files;
        const std::string name = entry.path().filename().string();
        const ScanVerdict v = test::shared_service().scan_file(entry.path().string());
        ASSERT_TRUE(v.is_infected()) << name << ": " << describe(v);
        EXPECT_EQ(v.detection.engine, ScanEngineKind::ClamAV) << name;
        EXPECT_EQ(v.detection.signature, kClamExeSignature) << name;
        EXPECT_TRUE(v.detection.layer_path.starts_with(name)) << describe(v);
        if (name == "clam.exe") {
            EXPECT_EQ(v.detection.layer_path, "clam.exe");
        } else if (depth(v.detection.layer_path) > 0) {
            ++layered;
        }
    }
    EXPECT_GE(files, 40u);
    // Nearly every test file carries clam.exe inside a container or packer
    // and is found only after unpacking.
    EXPECT_GE(layered, files - 5) << "layered detections: " << layered << " of " << files;
}

TEST(ScanDetection, TestFileLayerPathsNameTheContainerMembers) {
    if (!std::filesystem::is_directory(kTestFiles)) GTEST_SKIP() << "clamav-testfiles missing";
    const std::string dir(kTestFiles);
    EXPECT_EQ(test::shared_service().scan_file(dir + "/clam.zip").detection.layer_path,
              "clam.zip/clam.exe");
    EXPECT_EQ(test::shared_service().scan_file(dir + "/clam.mail").detection.layer_path,
              "clam.mail/clam.exe");
    EXPECT_EQ(test::shared_service().scan_file(dir + "/clam-upx.exe").detection.layer_path,
              "clam-upx.exe/(msexe)");
}

TEST(ScanDetection, CleanObjectsAreClean) {
    for (const char* file : {"clean-random.bin", "clean.txt", "clean.zip", "clean.eml"}) {
        const ScanVerdict v = test::shared_service().scan(corpus_object(file));
        EXPECT_TRUE(v.is_clean()) << file << ": " << describe(v);
        EXPECT_FALSE(v.skipped) << file;
    }
}

TEST(ScanDetection, EmptyObjectIsClean) {
    const ScanVerdict v = test::shared_service().scan(ScanObject::copy_of("", "empty"));
    EXPECT_TRUE(v.is_clean()) << describe(v);
}

TEST(ScanDetection, YaraSeesTextInsideABase64AttachmentInsideAZip) {
    const ScanVerdict v = test::shared_service().scan(corpus_object("marker-mail-in-zip.zip"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.engine, ScanEngineKind::Yara);
    EXPECT_EQ(v.detection.signature, "NfqScan_Test_Policy_Marker");
    EXPECT_EQ(v.detection.category, ThreatCategory::Policy);
    EXPECT_EQ(v.detection.layer_path, "marker-mail-in-zip.zip/message.eml/notes.txt");
}

TEST(ScanDetection, YaraSeesTextInsideAZipAttachedToAMail) {
    const ScanVerdict v = test::shared_service().scan(corpus_object("marker-zip-in-mail.eml"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.signature, "NfqScan_Test_Policy_Marker");
    EXPECT_EQ(v.detection.layer_path, "marker-zip-in-mail.eml/bundle.zip/notes.txt");
}

TEST(ScanDetection, SpamCategoryComesFromRuleMetadata) {
    const ScanVerdict v = test::shared_service().scan(corpus_object("spam.txt"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.signature, "NfqScan_Test_Spam_Marker");
    EXPECT_EQ(v.detection.category, ThreatCategory::Spam);
}

TEST(ScanDetection, VirusOutranksSpamInTheSameMail) {
    const ScanVerdict v = test::shared_service().scan(corpus_object("spam-and-virus.eml"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.category, ThreatCategory::Virus);
    EXPECT_EQ(v.detection.layer_path, "spam-and-virus.eml/invoice.zip/invoice.com");
}

TEST(ScanDetection, ObjectNameIsItsBaseName) {
    ScanObject o = corpus_object("eicar.zip");
    o.name = "http://example.org/files/download.zip";
    const ScanVerdict v = test::clamav_only_service().scan(o);
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.layer_path, "download.zip/eicar.com");
}

TEST(ScanDetection, UnreadableFileIsAnErrorNotAVerdict) {
    EXPECT_THROW(test::shared_service().scan_file("/nonexistent/file"), std::system_error);
    EXPECT_THROW(test::shared_service().scan_file("/tmp"), std::system_error);
}

TEST(ScanDetection, UnnamedObjectIsCalledObject) {
    ScanObject o = corpus_object("eicar.zip");
    o.name.clear();
    const ScanVerdict v = test::clamav_only_service().scan(o);
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.layer_path, "object/eicar.com");
}

}  // namespace
}  // namespace nfqscan
