#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "nfqscan/signature_watch.h"

namespace nfqscan {
namespace {

namespace fs = std::filesystem;

// At most this many files and folders are looked at per configured folder:
// a folder that holds something else entirely must not make every check
// walk a tree.
constexpr size_t kMaxEntries = 100000;

void add_file(std::map<std::string, SignatureFileStamp>& files, const fs::path& path) {
    struct stat st {};
    // stat, not lstat: a symlinked signature file counts as its target.
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    files[path.string()] = {
        static_cast<uint64_t>(st.st_size),
        static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
        static_cast<uint64_t>(st.st_ino)};
}

void join_names(std::string& out, std::string_view kind, const std::vector<std::string>& paths,
                size_t names) {
    if (paths.empty()) return;
    if (!out.empty()) out += "; ";
    out += kind;
    for (size_t i = 0; i < paths.size() && i < names; ++i)
        out += (i == 0 ? " " : ", ") + paths[i];
    if (paths.size() > names) out += fmt::format(" and {} more", paths.size() - names);
}

}  // namespace

SignatureSnapshot SignatureSnapshot::take(const ScanConfig& config) {
    SignatureSnapshot snap;
    std::error_code ec;
    if (config.engine != ScanConfig::Backend::Clamd) {
        for (const std::string& dir : config.clamav_db_dirs) {
            snap.folders_.push_back(dir);
            size_t seen = 0;
            // Not recursive: cl_load() reads the folder's own files only
            // (freshclam's temporary folders inside it are not signatures).
            for (const auto& entry : fs::directory_iterator(dir, ec)) {
                if (++seen > kMaxEntries) break;
                if (is_clamav_database_name(entry.path().filename().string()))
                    add_file(snap.files_, entry.path());
            }
        }
    }
    for (const std::string& dir : config.yara_rule_dirs) {
        snap.folders_.push_back(dir);
        size_t seen = 0;
        for (auto it = fs::recursive_directory_iterator(
                 dir, fs::directory_options::follow_directory_symlink, ec);
             it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (ec || ++seen > kMaxEntries) break;
            if (it->is_directory(ec)) {
                snap.folders_.push_back(it->path().string());
            } else if (is_yara_rule_name(it->path().filename().string())) {
                add_file(snap.files_, it->path());
            }
        }
    }
    return snap;
}

SignatureSnapshot SignatureSnapshot::of(std::map<std::string, SignatureFileStamp> files) {
    SignatureSnapshot snap;
    snap.files_ = std::move(files);
    return snap;
}

SignatureChanges compare(const SignatureSnapshot& before, const SignatureSnapshot& after) {
    SignatureChanges c;
    // Both maps are sorted by path: one merge pass.
    auto b = before.files().begin(), a = after.files().begin();
    while (b != before.files().end() || a != after.files().end()) {
        if (a == after.files().end() || (b != before.files().end() && b->first < a->first)) {
            c.removed.push_back((b++)->first);
        } else if (b == before.files().end() || a->first < b->first) {
            c.added.push_back((a++)->first);
        } else {
            if (!(a->second == b->second)) c.modified.push_back(a->first);
            ++a, ++b;
        }
    }
    return c;
}

std::string SignatureChanges::summary(size_t names) const {
    std::string out;
    join_names(out, "added", added, names);
    join_names(out, "modified", modified, names);
    join_names(out, "removed", removed, names);
    return out;
}

void Debouncer::event(Clock::time_point now) {
    if (!first_) first_ = now;
    last_ = now;
}

std::optional<Debouncer::Clock::time_point> Debouncer::deadline() const {
    if (!first_) return std::nullopt;
    return std::min(*last_ + quiet_, *first_ + max_delay_);
}

bool Debouncer::fire(Clock::time_point now) {
    const auto due = deadline();
    if (!due || now < *due) return false;
    first_.reset();
    last_.reset();
    return true;
}

}  // namespace nfqscan
