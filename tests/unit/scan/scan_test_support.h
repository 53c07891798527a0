// Shared fixtures of the scan tests: the generated corpus, scan services
// built once per test binary (a ClamAV engine compile is the slow part), a
// CompletionSink that runs completions on the test thread, temp directories.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "nfqscan/scan.h"

namespace nfqscan::test {

// The repository root (where rules/ and tests/data/ are), found from the
// working directory upwards or from $NFQSCAN_SOURCE_ROOT.
const std::string& source_root();
// tests/data/scan/make_corpus.py's output, generated once per run.
const std::string& corpus_dir();
std::string corpus_path(const std::string& name);
ScanObject corpus_object(const std::string& name);
std::string read_file(const std::string& path);

// The shipped rules (rules/clamav, rules/yara), default limits.
ScanConfig shipped_rules_config();
// Engines over the shipped rules, loaded once.
ScanService& shared_service();
// Only ClamAV (no YARA rules), to see what ClamAV finds on its own.
ScanService& clamav_only_service();
// Small limits for the limit tests: 8 MiB objects, 4 layers, 50 files.
ScanConfig tight_limits_config();
ScanService& tight_limits_service();

class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

  private:
    std::string path_;
};

void write_file(const std::string& path, std::string_view content);

// Collects posted completions; the test thread runs them, as an event loop
// would.
class TestSink : public CompletionSink {
  public:
    void post(std::function<void()> task) override;
    // Runs posted tasks until `done()` holds or the deadline passes.
    bool run_until(const std::function<bool()>& done,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30));

  private:
    std::mutex mutex_;
    std::condition_variable posted_;
    std::deque<std::function<void()>> tasks_;
};

std::string describe(const ScanVerdict& v);

}  // namespace nfqscan::test
