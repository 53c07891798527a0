// The clamd backend against a real clamd (Debian's clamav-daemon) started
// here with its own configuration: the same objects get the same verdicts as
// in-process, and an unreachable clamd is engine-not-ready.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "scan_test_support.h"

namespace nfqscan {
namespace {

using test::describe;
namespace fs = std::filesystem;

constexpr const char* kClamd = "/usr/sbin/clamd";

bool socket_accepts(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0;
    ::close(fd);
    return ok;
}

// clamd in the foreground with a configuration in a temp directory, its
// database being the project's signatures and its limits those of `limits`.
class ClamdProcess {
  public:
    explicit ClamdProcess(const ScanLimits& limits) {
        fs::create_directories(dir_.file("db"));
        fs::create_directories(dir_.file("tmp"));
        // Scanner processes run as nobody (scanner_sandbox.h) and connect to
        // clamd themselves, as they do to Debian's world-writable clamd.ctl.
        fs::permissions(fs::path(socket()).parent_path(),
                        fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
        fs::copy_file(test::source_root() + "/rules/clamav/nfqscan-test.ndb",
                      dir_.file("db/nfqscan-test.ndb"));
        const std::string conf =
            "Foreground yes\n"
            "LocalSocketMode 666\n"
            "LocalSocket " +
            socket() +
            "\n"
            "DatabaseDirectory " +
            dir_.file("db") +
            "\n"
            "TemporaryDirectory " +
            dir_.file("tmp") +
            "\n"
            "LogFile " +
            log() +
            "\n"
            "AlertExceedsMax yes\n"
            "AlertEncrypted yes\n"
            "AlertBrokenExecutables yes\n"
            "MaxFileSize " +
            std::to_string(limits.max_content_size) +
            "\n"
            "StreamMaxLength " +
            std::to_string(limits.max_content_size) +
            "\n"
            "MaxScanSize " +
            std::to_string(limits.max_scan_size) +
            "\n"
            "MaxRecursion " +
            std::to_string(limits.max_layers) +
            "\n"
            "MaxFiles " +
            std::to_string(limits.max_files) +
            "\n"
            "MaxScanTime " +
            std::to_string(limits.max_scan_time_ms) + "\n";
        test::write_file(dir_.file("clamd.conf"), conf);
        // Only async-signal-safe calls after fork() in a threaded process:
        // everything the child needs is prepared here.
        const std::string out_path = dir_.file("clamd.out"), conf_path = dir_.file("clamd.conf");
        pid_ = ::fork();
        if (pid_ == 0) {
            // clamd in the foreground echoes its log to stdout; keep the test output clean.
            const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (out >= 0) {
                ::dup2(out, STDOUT_FILENO);
                ::dup2(out, STDERR_FILENO);
            }
            ::execl(kClamd, kClamd, "-c", conf_path.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
    }
    ~ClamdProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    // Ready when its socket accepts connections; false if clamd died or the
    // deadline passed. Polls because clamd offers no readiness signal here.
    bool wait_ready(std::chrono::seconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return false;
            }
            if (fs::exists(socket()) && socket_accepts(socket())) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return false;
    }
    std::string socket() const { return dir_.file("clamd.sock"); }
    std::string log() const { return dir_.file("clamd.log"); }
    std::string log_text() const { return fs::exists(log()) ? test::read_file(log()) : "(no log)"; }

  private:
    test::TempDir dir_;
    pid_t pid_ = -1;
};

void expect_same(const ScanVerdict& in_process, const ScanVerdict& clamd, const std::string& what) {
    SCOPED_TRACE(what + ": in-process " + describe(in_process) + " clamd " + describe(clamd));
    ASSERT_EQ(in_process.kind, clamd.kind);
    if (in_process.is_infected()) {
        EXPECT_EQ(in_process.detection.engine, clamd.detection.engine);
        EXPECT_EQ(in_process.detection.signature, clamd.detection.signature);
        EXPECT_EQ(in_process.detection.category, clamd.detection.category);
        // clamd does not say where inside the object; YARA runs locally.
        if (clamd.detection.engine == ScanEngineKind::Yara) {
            EXPECT_EQ(in_process.detection.layer_path, clamd.detection.layer_path);
        }
    }
    if (in_process.is_error()) {
        EXPECT_EQ(in_process.error, clamd.error);
    }
}

class ClamdBackend : public testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (!fs::exists(kClamd)) return;
        clamd_ = new ClamdProcess(test::shipped_rules_config().limits);
        if (!clamd_->wait_ready(std::chrono::seconds(60)))
            failure_ = "clamd did not come up:\n" + clamd_->log_text();
    }
    static void TearDownTestSuite() {
        delete clamd_;
        clamd_ = nullptr;
    }
    void SetUp() override {
        if (!fs::exists(kClamd))
            GTEST_SKIP() << "clamd is not installed (tools/setup installs clamav-daemon)";
        ASSERT_TRUE(failure_.empty()) << failure_;
    }
    static ScanConfig clamd_config(bool with_yara) {
        ScanConfig c = test::shipped_rules_config();
        c.engine = ScanConfig::Backend::Clamd;
        c.clamd_address = clamd_->socket();
        if (!with_yara) c.yara_rule_dirs.clear();
        return c;
    }
    static const std::vector<std::string>& objects() {
        static const std::vector<std::string> files = [] {
            std::vector<std::string> f;
            for (const char* name : {"eicar.com", "eicar.zip", "eicar.gz", "eicar-attachment.eml",
                                     "eicar.html", "clean-random.bin", "clean.txt", "clean.zip",
                                     "clean.eml", "marker-mail-in-zip.zip", "spam.txt",
                                     "spam-and-virus.eml", "truncated.zip", "encrypted.zip"})
                if (fs::exists(test::corpus_path(name))) f.push_back(test::corpus_path(name));
            for (const char* name : {"clam.exe", "clam.zip", "clam.mail", "clam-upx.exe", "clam.7z",
                                     "clam.ole.doc", "clam.pdf"})
                if (fs::exists(std::string("/usr/share/clamav-testfiles/") + name))
                    f.push_back(std::string("/usr/share/clamav-testfiles/") + name);
            return f;
        }();
        return files;
    }

    static ClamdProcess* clamd_;
    static std::string failure_;
};

ClamdProcess* ClamdBackend::clamd_ = nullptr;
std::string ClamdBackend::failure_;

TEST_F(ClamdBackend, ClamAVVerdictsMatchInProcess) {
    const ScanConfig config = clamd_config(false);
    ScanService service(config);
    const ReloadResult r = service.reload(config);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.engines.backend, "clamd");
    EXPECT_TRUE(r.engines.clamav_version.starts_with("ClamAV ")) << r.engines.clamav_version;
    for (const std::string& path : objects())
        expect_same(test::clamav_only_service().scan_file(path), service.scan_file(path), path);
}

TEST_F(ClamdBackend, FullVerdictsMatchInProcess) {
    const ScanConfig config = clamd_config(true);
    ScanService service(config);
    ASSERT_TRUE(service.reload(config).ok);
    for (const std::string& path : objects())
        expect_same(test::shared_service().scan_file(path), service.scan_file(path), path);
}

TEST_F(ClamdBackend, ClamdFindsWhatOnlyItsSignaturesKnow) {
    // No YARA rules and no local signatures: a detection can only come from clamd.
    const ScanConfig config = clamd_config(false);
    ScanService service(config);
    ASSERT_TRUE(service.reload(config).ok);
    const ScanVerdict v = service.scan(test::corpus_object("eicar.zip"));
    ASSERT_TRUE(v.is_infected()) << describe(v);
    EXPECT_EQ(v.detection.engine, ScanEngineKind::ClamAV);
    EXPECT_EQ(v.detection.signature, "NfqScan.Test.EICAR.UNOFFICIAL");
    EXPECT_EQ(v.detection.layer_path, "eicar.zip");
    EXPECT_GE(service.stats().clamav.detections, 1u);
}

TEST(ClamdUnreachable, VerdictIsEngineNotReady) {
    test::TempDir dir;
    ScanConfig config = test::shipped_rules_config();
    config.engine = ScanConfig::Backend::Clamd;
    config.clamd_address = dir.file("no-clamd.sock");
    ScanService service(config);
    const ReloadResult r = service.reload(config);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_FALSE(r.engines.warnings.empty());
    const ScanVerdict v = service.scan(test::corpus_object("clean.txt"));
    ASSERT_TRUE(v.is_error()) << describe(v);
    EXPECT_EQ(v.error, ScanError::EngineNotReady);
    // YARA still runs in-process and a virus outranks the missing clamd.
    EXPECT_TRUE(service.scan(test::corpus_object("eicar.html")).is_infected());
}

TEST(ClamdUnreachable, ClosedTcpPortIsEngineNotReady) {
    ScanConfig config = test::shipped_rules_config();
    config.engine = ScanConfig::Backend::Clamd;
    config.clamd_address = "127.0.0.1:1";  // nothing listens on tcpmux
    ScanService service(config);
    ASSERT_TRUE(service.reload(config).ok);
    const ScanVerdict v = service.scan(test::corpus_object("clean.txt"));
    ASSERT_TRUE(v.is_error()) << describe(v);
    EXPECT_EQ(v.error, ScanError::EngineNotReady);
}

}  // namespace
}  // namespace nfqscan
