// nfqscan-scanbench: the scan service's throughput over a folder of files,
// for `tools/bench scan` (tests/bench/bench_scan.py). Every file is read into
// memory first, so the disk is not timed; then all of them are submitted to a
// ScanService with N workers (--isolation: scanner processes or threads), the
// way a queue worker submits objects, and the verdicts are collected on this
// thread (the caller's event loop).
// Repeated objects (--repeat N: the corpus submitted N times, in order) show
// what the verdict cache (--cache-entries) or libclamav's clean-file cache
// (--clamav-cache) save. --buffers hands each object over as an inspector
// does: copied into an ObjectBuffer (hashed as it is appended while the
// verdict cache is on), timed as part of the run.
// Prints one JSON object on stdout; the service's log goes to stderr.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "nfqscan/object_buffer.h"
#include "nfqscan/scan.h"

namespace {

using Clock = std::chrono::steady_clock;

// Completions are posted from pool threads; main() runs them.
class QueueSink : public nfqscan::CompletionSink {
  public:
    void post(std::function<void()> task) override {
        {
            std::lock_guard lock(mutex_);
            tasks_.push_back(std::move(task));
        }
        posted_.notify_one();
    }
    void run_one() {
        std::unique_lock lock(mutex_);
        posted_.wait(lock, [this] { return !tasks_.empty(); });
        std::function<void()> task = std::move(tasks_.front());
        tasks_.pop_front();
        lock.unlock();
        task();
    }

  private:
    std::mutex mutex_;
    std::condition_variable posted_;
    std::deque<std::function<void()>> tasks_;
};

// This process and its reaped children: scanner processes count once the
// service that forked them is gone.
double cpu_seconds() {
    auto s = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
    double total = 0;
    for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
        rusage ru{};
        getrusage(who, &ru);
        total += s(ru.ru_utime) + s(ru.ru_stime);
    }
    return total;
}

struct File {
    std::string path;
    std::shared_ptr<const std::vector<uint8_t>> bytes;
};

std::vector<File> read_corpus(const std::string& dir) {
    std::vector<std::string> paths;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
        if (entry.is_regular_file()) paths.push_back(entry.path().string());
    std::sort(paths.begin(), paths.end());
    std::vector<File> files;
    for (const std::string& path : paths) {
        std::ifstream in(path, std::ios::binary);
        auto bytes = std::make_shared<std::vector<uint8_t>>(std::istreambuf_iterator<char>(in),
                                                            std::istreambuf_iterator<char>());
        files.push_back({path, std::move(bytes)});
    }
    return files;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace nfqscan;
    CLI::App app{"nfqscan-scanbench - scan service throughput over a folder of files"};
    std::vector<std::string> clamav_dirs, yara_dirs;
    uint32_t threads = 1;
    std::string corpus, temp_dir;
    app.add_option("--clamav-dir", clamav_dirs, "ClamAV signature folder (repeatable)");
    app.add_option("--yara-dir", yara_dirs, "YARA rule folder (repeatable)");
    std::string isolation = "process";
    app.add_option("--threads", threads, "scan workers (pool threads, and scanner processes)")
        ->capture_default_str();
    app.add_option("--isolation", isolation, "where the engines run ([scan] isolation)")
        ->check(CLI::IsMember({"process", "thread"}))
        ->capture_default_str();
    app.add_option("--temp-dir", temp_dir, "where ClamAV extracts layers ([scan] temp_dir)");
    uint32_t repeat = 1, cache_entries = 0;
    bool clamav_cache = false, buffers = false;
    app.add_option("--repeat", repeat, "submit the corpus this many times")
        ->check(CLI::Range(1u, 1000u))
        ->capture_default_str();
    app.add_option("--cache-entries", cache_entries, "verdict cache ([scan] cache_entries)")
        ->capture_default_str();
    app.add_flag("--clamav-cache", clamav_cache, "turn libclamav's clean-file cache on");
    app.add_flag("--buffers", buffers, "hand objects over in ObjectBuffers, as inspectors do");
    app.add_option("CORPUS", corpus, "folder of files to scan")->required();
    CLI11_PARSE(app, argc, argv);

    spdlog::set_default_logger(spdlog::stderr_color_mt("scanbench"));
    spdlog::set_level(spdlog::level::warn);

    const std::vector<File> files = read_corpus(corpus);
    uint64_t total_bytes = 0;
    for (const File& f : files)
        total_bytes += f.bytes->size();

    ScanConfig config;
    config.clamav_db_dirs = clamav_dirs;
    config.yara_rule_dirs = yara_dirs;
    config.temp_dir = temp_dir;
    config.pool_threads = threads;
    config.isolation = *isolation_from_name(isolation);
    config.queue_length = static_cast<uint32_t>(files.size() * repeat + 1);  // all queued at once
    config.cache_entries = cache_entries;
    config.clamav_clean_cache = clamav_cache;
    auto service = std::make_unique<ScanService>(config);
    const auto load_start = Clock::now();
    const ReloadResult loaded = service->reload(config);
    const double load_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - load_start).count();
    if (!loaded.ok) {
        std::fprintf(stderr, "nfqscan-scanbench: engines: %s\n", loaded.error.c_str());
        return 1;
    }

    auto sink = std::make_shared<QueueSink>();
    size_t done = 0, clean = 0;
    std::vector<std::string> infected;
    std::map<std::string, uint64_t> errors;
    const double cpu0 = cpu_seconds();
    const auto start = Clock::now();
    size_t cached = 0;
    for (uint32_t round = 0; round < repeat; ++round) {
        for (const File& f : files) {
            ScanObject object = ScanObject::sharing(f.bytes, f.path);
            if (buffers) {
                auto buffer = ObjectBuffer::make(config.limits.max_content_size);
                // An object over the limit goes as it is (content-size either way).
                if (buffer->append(*f.bytes) == ObjectBuffer::Append::Ok)
                    object = ScanObject::in_file(std::move(buffer), f.path);
            }
            service->submit(std::move(object), sink, [&, path = f.path](ScanVerdict v) {
                ++done;
                if (v.cached) ++cached;
                if (v.is_infected())
                    infected.push_back(path);
                else if (v.is_error())
                    ++errors[std::string(scan_error_name(v.error))];
                else
                    ++clean;
            });
        }
    }
    const size_t objects = files.size() * repeat;
    while (done < objects)
        sink->run_one();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const ScanStats stats = service->stats();
    service.reset();  // reaps the scanner processes, whose CPU time counts from then on
    const double cpu = cpu_seconds() - cpu0;
    std::sort(infected.begin(), infected.end());
    infected.erase(std::unique(infected.begin(), infected.end()), infected.end());

    const double mb = double(total_bytes) * repeat / 1e6;
    nlohmann::json out = {{"threads", threads},
                          {"isolation", isolation},
                          {"scanner_restarts", stats.scanner_restarts},
                          {"objects", objects},
                          {"bytes", total_bytes * repeat},
                          {"repeat", repeat},
                          {"cache_entries", cache_entries},
                          {"clamav_cache", clamav_cache},
                          {"buffers", buffers},
                          {"cached", cached},
                          {"clamav_scans", stats.clamav.scans},
                          {"seconds", seconds},
                          {"cpu_seconds", cpu},
                          {"cpu_total", cpu_seconds()},  // with reading and loading
                          {"mb_per_s", mb / seconds},
                          {"objects_per_s", double(objects) / seconds},
                          {"mb_per_cpu_s", cpu > 0 ? mb / cpu : 0.0},
                          {"load_ms", load_ms},
                          {"clamav_signatures", loaded.engines.clamav_signatures},
                          {"yara_rules", loaded.engines.yara_rules},
                          {"clean", clean},
                          {"infected", infected},
                          {"errors", errors}};
    std::puts(out.dump().c_str());
    return 0;
}
