// QuarantineStore: the folder of kept objects (quarantine.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <limits>
#include <system_error>

#include "nfqscan/quarantine.h"
#include "nfqscan/timestamp.h"
#include "nfqscan/unique_fd.h"

namespace nfqscan {

namespace {

// Metadata is small; a bigger ID.json is not ours.
constexpr size_t kMaxMetadata = 256 << 10;
constexpr std::string_view kTempPrefix = ".tmp-";

int64_t epoch_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string errno_text(const std::string& what) {
    return what + ": " + std::strerror(errno);
}

bool write_all(int fd, std::span<const uint8_t> bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = ENOSPC;
            return false;
        }
        done += size_t(n);
    }
    return true;
}

std::span<const uint8_t> as_bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Writes `bytes` to DIR/.tmp-NAME, fsyncs, renames it to DIR/NAME without
// replacing an existing file. Returns "" or why not (the temporary is gone).
std::string write_file(int dir_fd, const std::string& name, std::span<const uint8_t> bytes) {
    const std::string temp = std::string(kTempPrefix) + name;
    UniqueFd fd(
        openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return errno_text("create " + temp);
    std::string error;
    if (!write_all(fd.get(), bytes))
        error = errno_text("write " + temp);
    else if (fsync(fd.get()) != 0)
        error = errno_text("fsync " + temp);
    else if (renameat2(dir_fd, temp.c_str(), dir_fd, name.c_str(), RENAME_NOREPLACE) != 0)
        error = errno_text("rename to " + name);
    if (!error.empty()) unlinkat(dir_fd, temp.c_str(), 0);
    return error;
}

std::optional<std::string> read_small(const std::string& path, size_t limit) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return std::nullopt;
    std::string out;
    char buffer[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return std::nullopt;
        if (n == 0) return out;
        out.append(buffer, size_t(n));
        if (out.size() > limit) return std::nullopt;
    }
}

const std::string* string_field(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return nullptr;
    return it->get_ptr<const std::string*>();
}

}  // namespace

bool quarantine_keeps(std::string_view action) {
    return std::find(kKeptActions.begin(), kKeptActions.end(), action) != kKeptActions.end();
}

bool valid_quarantine_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '-' || c == '_';
    });
}

int64_t parse_quarantine_since(std::string_view text, int64_t now_ms) {
    const std::invalid_argument bad("--since: \"" + std::string(text.substr(0, 64)) +
                                    "\" is neither a UTC time (2026-12-06, 2026-12-06T10:00, "
                                    "2026-12-06T10:00:00Z) nor an age (90s, 30m, 12h, 7d)");
    if (text.empty()) throw bad;
    const char unit = text.back();
    if (unit == 's' || unit == 'm' || unit == 'h' || unit == 'd') {
        uint64_t n = 0;
        std::string_view digits = text.substr(0, text.size() - 1);
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
        if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty() ||
            n > 100ull * 365 * 86400)
            throw bad;
        const int64_t factor = unit == 's'   ? 1000
                               : unit == 'm' ? 60'000
                               : unit == 'h' ? 3'600'000
                                             : 86'400'000;
        return std::max<int64_t>(0, now_ms - int64_t(n) * factor);
    }
    std::string s(text);
    if (s.back() == 'Z') s.pop_back();
    std::tm tm{};
    const char* end = nullptr;
    for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"}) {
        tm = {};
        end = strptime(s.c_str(), format, &tm);
        if (end && *end == '\0') break;
        end = nullptr;
    }
    if (!end) throw bad;
    const time_t t = timegm(&tm);
    if (t < 0) throw bad;
    return int64_t(t) * 1000;
}

std::vector<std::string> split_recipients(std::string_view text) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at < text.size()) {
        size_t comma = text.find(',', at);
        std::string_view one =
            text.substr(at, comma == std::string_view::npos ? text.npos : comma - at);
        while (!one.empty() && (one.front() == ' ' || one.front() == '\t'))
            one.remove_prefix(1);
        while (!one.empty() && (one.back() == ' ' || one.back() == '\t'))
            one.remove_suffix(1);
        if (one.size() >= 2 && one.front() == '<' && one.back() == '>')
            one = one.substr(1, one.size() - 2);
        if (!one.empty()) out.emplace_back(one);
        if (comma == std::string_view::npos) break;
        at = comma + 1;
    }
    return out;
}

nlohmann::json quarantine_entry_json(const QuarantineEntry& e) {
    nlohmann::json j = {{"id", e.id},
                        {"time", iso8601_ms(e.time)},
                        {"time_ms", epoch_ms(e.time)},
                        {"protocol", e.protocol},
                        {"flow", e.flow},
                        {"direction", e.direction},
                        {"object", e.object},
                        {"file_name", e.file_name},
                        {"sender", e.sender},
                        {"recipients", e.recipients},
                        {"subject", e.subject},
                        {"verdict", e.verdict},
                        {"action", e.action},
                        {"event_id", e.event_id},
                        {"size", e.size}};
    return j;
}

std::optional<QuarantineEntry> parse_quarantine_entry(std::string_view text) {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) return std::nullopt;
    QuarantineEntry e;
    const std::string* id = string_field(j, "id");
    const std::string* protocol = string_field(j, "protocol");
    const std::string* action = string_field(j, "action");
    if (!id || !valid_quarantine_id(*id) || !protocol || !action) return std::nullopt;
    e.id = *id;
    e.protocol = *protocol;
    e.action = *action;
    auto time = j.find("time_ms");
    auto size = j.find("size");
    if (time == j.end() || !time->is_number_integer() || size == j.end() ||
        !size->is_number_unsigned())
        return std::nullopt;
    const int64_t ms = time->get<int64_t>();
    // 1970 to 2200: system_clock counts nanoseconds in 64 bits (to 2262), so
    // a later time would overflow when converted (found by quarantine_meta_fuzz).
    if (ms < 0 || ms > int64_t(7'258'118'400'000)) return std::nullopt;
    e.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
    e.size = size->get<uint64_t>();
    for (auto [key, field] : {std::pair{"flow", &e.flow},
                              {"direction", &e.direction},
                              {"object", &e.object},
                              {"file_name", &e.file_name},
                              {"sender", &e.sender},
                              {"subject", &e.subject},
                              {"event_id", &e.event_id}}) {
        auto it = j.find(key);
        if (it == j.end()) continue;
        if (!it->is_string()) return std::nullopt;
        *field = it->get<std::string>();
    }
    if (auto it = j.find("recipients"); it != j.end()) {
        if (!it->is_array()) return std::nullopt;
        for (const auto& r : *it) {
            if (!r.is_string()) return std::nullopt;
            e.recipients.push_back(r.get<std::string>());
        }
    }
    if (auto it = j.find("verdict"); it != j.end()) {
        if (!it->is_object()) return std::nullopt;
        e.verdict = *it;
    }
    return e;
}

void to_json(nlohmann::json& j, const QuarantineCounters& c) {
    j = {{"entries", c.entries},
         {"bytes", c.bytes},
         {"queued", c.queued},
         {"written", c.written},
         {"evicted", c.evicted},
         {"write_failures", c.write_failures},
         {"dropped", c.dropped},
         {"too_big", c.too_big},
         {"corrupt", c.corrupt},
         {"released", c.released},
         {"release_failures", c.release_failures},
         {"deleted", c.deleted},
         {"exported", c.exported}};
}

QuarantineStore::QuarantineStore(QuarantineConfig config) : config_(std::move(config)) {
    if (mkdir(config_.dir.c_str(), 0700) != 0 && errno != EEXIST)
        throw std::system_error(errno, std::generic_category(), "quarantine folder " + config_.dir);
    // Root's alone (and the daemon's account, which owns it): a folder made
    // 0755 for the account by the daemon's start is narrowed here.
    chmod(config_.dir.c_str(), 0700);
    load();
}

std::string QuarantineStore::path(std::string_view id, std::string_view suffix) const {
    return config_.dir + "/" + std::string(id) + std::string(suffix);
}

void QuarantineStore::load() {
    DIR* d = opendir(config_.dir.c_str());
    if (!d)
        throw std::system_error(errno, std::generic_category(), "quarantine folder " + config_.dir);
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
        names.emplace_back(e->d_name);
    closedir(d);
    std::set<std::string> metadata, data;
    for (const std::string& name : names) {
        if (name.starts_with(kTempPrefix)) {
            // A write a crash interrupted.
            unlink((config_.dir + "/" + name).c_str());
            continue;
        }
        if (name.ends_with(".json")) metadata.insert(name.substr(0, name.size() - 5));
        if (name.ends_with(".data")) data.insert(name.substr(0, name.size() - 5));
    }
    for (const std::string& id : metadata) {
        std::optional<std::string> text = read_small(path(id, ".json"), kMaxMetadata);
        std::optional<QuarantineEntry> e =
            text ? parse_quarantine_entry(*text) : std::optional<QuarantineEntry>();
        struct stat st {};
        if (!e || e->id != id || !data.count(id) || stat(path(id, ".data").c_str(), &st) != 0 ||
            uint64_t(st.st_size) != e->size) {
            // Left for the administrator to look at; never served.
            ++corrupt_;
            data.erase(id);
            continue;
        }
        data.erase(id);
        const int64_t ms = epoch_ms(e->time);
        index_[id] = {ms, e->size};
        by_age_.insert({ms, id});
        bytes_ += e->size;
    }
    // Data whose metadata never came: the write did not finish.
    for (const std::string& id : data)
        if (valid_quarantine_id(id)) unlink(path(id, ".data").c_str());
}

void QuarantineStore::erase(const std::string& id) {
    auto it = index_.find(id);
    if (it == index_.end()) return;
    // The metadata first: from then on the entry does not exist.
    unlink(path(id, ".json").c_str());
    unlink(path(id, ".data").c_str());
    bytes_ -= it->second.size;
    by_age_.erase({it->second.time_ms, id});
    index_.erase(it);
}

void QuarantineStore::evict_for(uint64_t incoming) {
    while (!by_age_.empty() && bytes_ + incoming > config_.max_size) {
        std::string id = by_age_.begin()->second;
        erase(id);
        ++evicted_;
    }
}

void QuarantineStore::expire(std::chrono::system_clock::time_point now) {
    if (config_.max_age_days == 0) return;
    const int64_t limit = epoch_ms(now) - int64_t(config_.max_age_days) * 86'400'000;
    while (!by_age_.empty() && by_age_.begin()->first < limit) {
        std::string id = by_age_.begin()->second;
        erase(id);
        ++evicted_;
    }
}

std::string QuarantineStore::put(QuarantineEntry entry, std::span<const uint8_t> bytes,
                                 std::chrono::system_clock::time_point now) {
    if (!valid_quarantine_id(entry.id)) return "invalid id";
    if (index_.count(entry.id)) return "an entry " + entry.id + " exists already";
    if (bytes.size() > config_.max_size) return "larger than max_size";
    expire(now);
    evict_for(bytes.size());
    entry.size = bytes.size();
    UniqueFd dir(open(config_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return errno_text("open " + config_.dir);
    std::string error = write_file(dir.get(), entry.id + ".data", bytes);
    if (!error.empty()) return error;
    const std::string meta =
        quarantine_entry_json(entry).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    error = write_file(dir.get(), entry.id + ".json", as_bytes(meta));
    if (!error.empty()) {
        unlinkat(dir.get(), (entry.id + ".data").c_str(), 0);
        return error;
    }
    // The renames are durable once the folder is.
    fsync(dir.get());
    const int64_t ms = epoch_ms(entry.time);
    index_[entry.id] = {ms, entry.size};
    by_age_.insert({ms, entry.id});
    bytes_ += entry.size;
    return {};
}

const std::string& QuarantineStore::known(std::string_view id) const {
    if (!valid_quarantine_id(id))
        throw std::runtime_error("not a quarantine id: \"" + std::string(id.substr(0, 80)) +
                                 "\" (ids are 1 to 64 letters, digits, - and _)");
    auto it = index_.find(id);
    if (it == index_.end()) throw std::runtime_error("no quarantine entry " + std::string(id));
    return it->first;
}

std::vector<QuarantineEntry> QuarantineStore::list(
    std::string_view protocol, std::optional<std::chrono::system_clock::time_point> since,
    size_t limit) const {
    std::vector<QuarantineEntry> out;
    const int64_t from = since ? epoch_ms(*since) : std::numeric_limits<int64_t>::min();
    for (auto it = by_age_.rbegin(); it != by_age_.rend() && out.size() < limit; ++it) {
        if (it->first < from) break;
        std::optional<std::string> text = read_small(path(it->second, ".json"), kMaxMetadata);
        std::optional<QuarantineEntry> e = text ? parse_quarantine_entry(*text) : std::nullopt;
        if (!e) continue;
        if (!protocol.empty() && e->protocol != protocol) continue;
        out.push_back(std::move(*e));
    }
    return out;
}

QuarantineEntry QuarantineStore::show(std::string_view id) const {
    const std::string& name = known(id);
    std::optional<std::string> text = read_small(path(name, ".json"), kMaxMetadata);
    std::optional<QuarantineEntry> e = text ? parse_quarantine_entry(*text) : std::nullopt;
    if (!e) throw std::runtime_error("quarantine entry " + name + ": its metadata cannot be read");
    return *e;
}

int QuarantineStore::open_data(std::string_view id) const {
    const std::string& name = known(id);
    int fd = open(path(name, ".data").c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) throw std::runtime_error(errno_text("quarantine entry " + name));
    return fd;
}

void QuarantineStore::remove(std::string_view id) {
    std::string name = known(id);
    erase(name);
}

}  // namespace nfqscan
