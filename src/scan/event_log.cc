#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <system_error>

#include "nfqscan/scan_event_log.h"
#include "nfqscan/timestamp.h"

namespace nfqscan {
namespace {

int open_log(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path);
    return fd;
}

}  // namespace

std::string format_scan_event(const ScanEvent& event) {
    // The verdict's fields sit beside the event's, named as everywhere else.
    nlohmann::json j = {{"time", iso8601_ms(event.time)}};
    if (!event.id.empty()) j["id"] = event.id;
    j["flow"] = event.flow;
    j["protocol"] = event.protocol;
    if (!event.direction.empty()) j["direction"] = event.direction;
    j["object"] = event.object;
    j.update(nlohmann::json(event.verdict));
    if (!event.category.empty()) j["category"] = event.category;
    j["action"] = event.action;
    if (!event.quarantine.empty()) j["quarantine"] = event.quarantine;
    // Invalid UTF-8 from the wire (file names, subjects) must not make the
    // line unwritable.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

EventLog::EventLog(std::string path) : path_(std::move(path)), fd_(open_log(path_)) {}

EventLog::~EventLog() {
    if (fd_ >= 0) ::close(fd_);
}

bool EventLog::append(const ScanEvent& event) {
    std::string line = format_scan_event(event);
    line.push_back('\n');
    std::lock_guard lock(mutex_);
    const ssize_t n = ::write(fd_, line.data(), line.size());
    if (n != static_cast<ssize_t>(line.size())) {
        ++failed_;
        return false;
    }
    ++written_;
    return true;
}

void EventLog::reopen() {
    const int fd = open_log(path_);
    std::lock_guard lock(mutex_);
    ::close(std::exchange(fd_, fd));
}

uint64_t EventLog::written() const {
    std::lock_guard lock(mutex_);
    return written_;
}

uint64_t EventLog::failed() const {
    std::lock_guard lock(mutex_);
    return failed_;
}

std::vector<std::string> read_last_events(const std::string& path, size_t count, size_t max_bytes) {
    std::vector<std::string> lines;
    if (count == 0) return lines;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return lines;
        throw std::system_error(errno, std::generic_category(), "open " + path);
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw std::system_error(errno, std::generic_category(), "stat " + path);

    const auto size = static_cast<uint64_t>(st.st_size);
    const uint64_t start = size > max_bytes ? size - max_bytes : 0;
    std::string tail(static_cast<size_t>(size - start), '\0');
    size_t got = 0;
    while (got < tail.size()) {
        const ssize_t n =
            ::pread(fd, tail.data() + got, tail.size() - got, static_cast<off_t>(start + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::system_error(errno, std::generic_category(), "read " + path);
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    tail.resize(got);

    std::string_view view = tail;
    // Reading from the middle of the file: the first line is a fragment.
    if (start > 0) {
        const size_t nl = view.find('\n');
        view.remove_prefix(nl == std::string_view::npos ? view.size() : nl + 1);
    }
    // A line still being written (no newline yet) is left out.
    const size_t last_nl = view.rfind('\n');
    view = last_nl == std::string_view::npos ? std::string_view{} : view.substr(0, last_nl + 1);
    std::vector<std::string_view> all;
    while (!view.empty()) {
        const size_t nl = view.find('\n');
        if (nl > 0) all.push_back(view.substr(0, nl));
        view.remove_prefix(nl + 1);
    }
    const size_t first = all.size() > count ? all.size() - count : 0;
    lines.assign(all.begin() + static_cast<std::ptrdiff_t>(first), all.end());
    return lines;
}

}  // namespace nfqscan
