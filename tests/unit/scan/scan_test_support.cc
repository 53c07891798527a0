#include "scan_test_support.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace nfqscan::test {
namespace fs = std::filesystem;

const std::string& source_root() {
    static const std::string root = [] {
        if (const char* env = std::getenv("NFQSCAN_SOURCE_ROOT")) return std::string(env);
        for (fs::path dir = fs::current_path(); !dir.empty(); dir = dir.parent_path()) {
            if (fs::exists(dir / "tests/data/scan/make_corpus.py")) return dir.string();
            if (dir == dir.root_path()) break;
        }
        throw std::runtime_error("cannot find the source tree; set NFQSCAN_SOURCE_ROOT");
    }();
    return root;
}

namespace {

// Removes the generated corpus at exit.
struct CorpusDir {
    TempDir dir;
    CorpusDir() {
        const std::string cmd =
            "python3 '" + source_root() + "/tests/data/scan/make_corpus.py' '" + dir.path() + "'";
        if (std::system(cmd.c_str()) != 0)
            throw std::runtime_error("corpus generation failed: " + cmd);
    }
};

ScanService& loaded(ScanService& service, const ScanConfig& config) {
    const ReloadResult r = service.reload(config);
    if (!r.ok) throw std::runtime_error("engines failed to load: " + r.error);
    return service;
}

}  // namespace

const std::string& corpus_dir() {
    static CorpusDir corpus;
    return corpus.dir.path();
}

std::string corpus_path(const std::string& name) {
    return corpus_dir() + "/" + name;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

ScanObject corpus_object(const std::string& name) {
    return ScanObject::copy_of(read_file(corpus_path(name)), name);
}

ScanConfig shipped_rules_config() {
    ScanConfig c;
    c.clamav_db_dirs = {source_root() + "/rules/clamav"};
    c.yara_rule_dirs = {source_root() + "/rules/yara"};
    c.pool_threads = 2;
    c.queue_length = 16;
    return c;
}

ScanService& shared_service() {
    static ScanService service(shipped_rules_config());
    static ScanService& ready = loaded(service, shipped_rules_config());
    return ready;
}

ScanService& clamav_only_service() {
    static ScanConfig config = [] {
        ScanConfig c = shipped_rules_config();
        c.yara_rule_dirs.clear();
        return c;
    }();
    static ScanService service(config);
    static ScanService& ready = loaded(service, config);
    return ready;
}

ScanConfig tight_limits_config() {
    ScanConfig c = shipped_rules_config();
    c.limits.max_content_size = 8u << 20;
    c.limits.max_scan_size = 32u << 20;
    c.limits.max_layers = 4;
    c.limits.max_files = 50;
    return c;
}

ScanService& tight_limits_service() {
    static ScanService service(tight_limits_config());
    static ScanService& ready = loaded(service, tight_limits_config());
    return ready;
}

TempDir::TempDir() {
    std::string pattern = (fs::temp_directory_path() / "nfqscan-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

void write_file(const std::string& path, std::string_view content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
}

void TestSink::post(std::function<void()> task) {
    {
        std::lock_guard lock(mutex_);
        tasks_.push_back(std::move(task));
    }
    posted_.notify_all();
}

bool TestSink::run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (done()) return true;
        std::function<void()> task;
        {
            std::unique_lock lock(mutex_);
            if (!posted_.wait_until(lock, deadline, [this] { return !tasks_.empty(); }))
                return done();
            task = std::move(tasks_.front());
            tasks_.pop_front();
        }
        task();
    }
}

std::string describe(const ScanVerdict& v) {
    return nlohmann::json(v).dump();
}

}  // namespace nfqscan::test
