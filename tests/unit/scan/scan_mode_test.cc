// Scan modes: a profile scans everything, or only listed extensions and MIME
// types (declared or sniffed); what it leaves out is clean with "skipped".
#include <gtest/gtest.h>

#include "../../../src/scan/content_filter.h"
#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::describe;

ScanService& mode_service() {
    static ScanConfig config = [] {
        ScanConfig c = test::shipped_rules_config();
        c.profiles["default"] = {};
        c.profiles["executables"] = {
            ScanProfile::Mode::Listed, {"exe", ".COM"}, {"application/pdf"}};
        c.profiles["archives"] = {ScanProfile::Mode::Listed, {}, {"application/zip", "message/*"}};
        return c;
    }();
    static ScanService service(config);
    static const bool loaded = service.reload(config).ok;
    EXPECT_TRUE(loaded);
    return service;
}

ScanObject eicar_as(const std::string& corpus_file, const std::string& name,
                    const std::string& profile, const std::string& mime = {}) {
    ScanObject o = test::corpus_object(corpus_file);
    o.name = name;
    o.profile = profile;
    o.mime_type = mime;
    return o;
}

TEST(ScanMode, UnlistedExtensionIsSkipped) {
    const ScanVerdict v = mode_service().scan(eicar_as("eicar.com", "readme.txt", "executables"));
    EXPECT_TRUE(v.is_clean()) << describe(v);
    EXPECT_TRUE(v.skipped);
}

TEST(ScanMode, ListedExtensionIsScannedWhateverItsCase) {
    EXPECT_TRUE(
        mode_service().scan(eicar_as("eicar.com", "setup.EXE", "executables")).is_infected());
    EXPECT_TRUE(mode_service().scan(eicar_as("eicar.com", "run.com", "executables")).is_infected());
}

TEST(ScanMode, DeclaredMimeTypeIsEnough) {
    const ScanVerdict v = mode_service().scan(
        eicar_as("eicar.com", "x.bin", "executables", "Application/PDF; name=x"));
    EXPECT_TRUE(v.is_infected()) << describe(v);
}

TEST(ScanMode, SniffedTypeCatchesARenamedArchive) {
    // Named and declared as something harmless; libmagic sees a zip.
    const ScanVerdict v =
        mode_service().scan(eicar_as("eicar.zip", "photo.jpg", "archives", "image/jpeg"));
    EXPECT_TRUE(v.is_infected()) << describe(v);
    EXPECT_TRUE(
        mode_service().scan(eicar_as("eicar-attachment.eml", "x", "archives")).is_infected());
    const ScanVerdict text = mode_service().scan(eicar_as("eicar.com", "x.bin", "archives"));
    EXPECT_TRUE(text.skipped) << describe(text);
}

TEST(ScanMode, UnknownProfileFallsBackToDefault) {
    EXPECT_TRUE(
        mode_service().scan(eicar_as("eicar.com", "readme.txt", "no-such-profile")).is_infected());
    EXPECT_TRUE(mode_service().scan(eicar_as("eicar.com", "readme.txt", "")).is_infected());
}

TEST(ScanMode, SkippedObjectsAreCounted) {
    const uint64_t before = mode_service().stats().skipped;
    mode_service().scan(eicar_as("eicar.com", "readme.txt", "executables"));
    EXPECT_EQ(mode_service().stats().skipped, before + 1);
}

TEST(ScanMode, MimeTypePatterns) {
    EXPECT_TRUE(mime_type_matches("application/zip", "application/zip"));
    EXPECT_TRUE(mime_type_matches("Application/ZIP; charset=binary", "application/zip"));
    EXPECT_TRUE(mime_type_matches("application/x-dosexec", "application/*"));
    EXPECT_TRUE(mime_type_matches("text/html", "*/*"));
    EXPECT_FALSE(mime_type_matches("application/zipx", "application/zip"));
    EXPECT_FALSE(mime_type_matches("text/plain", "application/*"));
    EXPECT_FALSE(mime_type_matches("", "*/*"));
}

TEST(ScanMode, FileExtensions) {
    EXPECT_EQ(file_extension("a.TAR.GZ"), "gz");
    EXPECT_EQ(file_extension("dir.d/file"), "");
    EXPECT_EQ(file_extension("C:\\x\\setup.Exe"), "exe");
    EXPECT_EQ(file_extension("trailing."), "");
    EXPECT_EQ(file_extension(""), "");
}

}  // namespace
}  // namespace nfqscan
