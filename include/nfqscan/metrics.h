// Prometheus metrics: the text exposition format 0.0.4 of the counters
// `nfqscanctl status` shows, built from the very status snapshot
// (Daemon::status(), one source of truth: the two never disagree), and the
// HTTP side of `[daemon] metrics_listen` (its address, the answer to one
// request). The daemon's control thread serves the connections
// (ControlServer::serve_http); nothing here touches a socket but
// listen_socket(). See src/metrics/dev_notes.txt for the metric names.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nfqscan/unique_fd.h"

namespace nfqscan {

// Writes the text format: one HELP and one TYPE line per metric family, its
// samples together, families in the order they were first used.
class Exposition {
  public:
    enum class Type { Counter, Gauge, Histogram };
    using Labels = std::vector<std::pair<std::string, std::string>>;

    // One sample. `value` is a JSON number or bool (true = 1); anything else
    // (null: not known) adds nothing. A name is used with the type and help
    // of its first sample.
    void sample(std::string_view name, Type type, std::string_view help, const Labels& labels,
                const nlohmann::json& value);
    // A histogram from per-bucket counts (not cumulative): counts[i] is the
    // number of observations in (bounds[i-1], bounds[i]]; the one extra last
    // count those above every bound. Written as cumulative NAME_bucket{le=...}
    // lines with +Inf, NAME_sum and NAME_count.
    void histogram(std::string_view name, std::string_view help, const Labels& labels,
                   std::span<const double> bounds, std::span<const uint64_t> counts, double sum);

    std::string text() const;

  private:
    struct Family {
        std::string name;
        Type type;
        std::string help;
        std::string samples;  // lines, each ending in '\n'
    };
    Family& family(std::string_view name, Type type, std::string_view help);

    std::vector<Family> families_;
    std::map<std::string, size_t, std::less<>> index_;
};

// A label value with \, " and newline escaped, as the format requires.
std::string escape_label_value(std::string_view value);
// `name` with every character outside [a-zA-Z0-9_:] replaced by '_' (and a
// leading digit prefixed by '_'): a valid metric or label name.
std::string metric_name(std::string_view name);

// The exposition of a `status` result (the JSON of Daemon::status()).
// Fields it does not know are left out; missing ones are skipped.
std::string metrics_text(const nlohmann::json& status);

// The Content-Type of the exposition.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// The last exposition, handed out again while younger than `max_age`:
// scrapes that come faster (several Prometheus servers, a client in a loop)
// cost the workers one snapshot per max_age, not one each. A failure is not
// kept. Not thread-safe: the control thread's.
class ExpositionCache {
  public:
    explicit ExpositionCache(std::chrono::milliseconds max_age) : max_age_(max_age) {}
    std::string get(const std::function<std::string()>& produce);

  private:
    std::chrono::milliseconds max_age_;
    std::chrono::steady_clock::time_point taken_{};
    std::string text_;
    bool valid_ = false;
};

// [daemon] metrics_listen: "A.B.C.D:PORT" or "[IPv6]:PORT", addresses only
// (nothing is resolved). Throws std::invalid_argument saying what is wrong.
struct ListenAddress {
    sockaddr_storage address{};
    socklen_t length = 0;
    std::string text;  // as configured
    static ListenAddress parse(std::string_view text);
};

// A listening TCP socket bound to `address` (non-blocking, close-on-exec,
// IPv6 only for an IPv6 address). Throws std::system_error.
UniqueFd listen_socket(const ListenAddress& address);

// The complete HTTP/1.0 answer (status line, headers, body) to `request`:
// what a client sent up to the blank line ending its header, or as much as
// arrived before the size bound. GET or HEAD /metrics (any query) gets 200
// with `exposition()`; another path 404, another method 405, a request
// line that is not HTTP/1.x 400, a request without its blank line (it
// outgrew the bound) 431. `exposition` throwing gives 503 with its message.
std::string metrics_http_response(std::string_view request,
                                  const std::function<std::string()>& exposition);

}  // namespace nfqscan
