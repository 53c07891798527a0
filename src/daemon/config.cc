// TOML configuration: every table is read through a TableReader that records
// which keys it consumed, so anything left over is an unknown key and an error.
#include "nfqscan/config.h"
#include "nfqscan/metrics.h"

#include <grp.h>
#include <pwd.h>

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

namespace nfqscan {

ConfigError::ConfigError(const std::string& file, uint32_t line, const std::string& key,
                         const std::string& what)
    : std::runtime_error(fmt::format("{}:{}: {}: {}", file, line, key, what)),
      file_(file),
      line_(line),
      key_(key) {}

QueueRange QueueRange::parse(std::string_view text) {
    auto number = [&](std::string_view s) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
        if (ec != std::errc() || end != s.data() + s.size() || s.empty() || value > 65535)
            throw std::invalid_argument("queue numbers are 0-65535");
        return static_cast<uint16_t>(value);
    };
    QueueRange r;
    auto dash = text.find('-');
    if (dash == std::string_view::npos) {
        r.first = r.last = number(text);
    } else {
        r.first = number(text.substr(0, dash));
        r.last = number(text.substr(dash + 1));
    }
    if (r.last < r.first) throw std::invalid_argument("range must be N or N-M with N <= M");
    if (r.count() > 64) throw std::invalid_argument("at most 64 queues");
    return r;
}

namespace {

class TableReader {
  public:
    TableReader(const toml::table& table, std::string prefix, const std::string& file)
        : table_(table), prefix_(std::move(prefix)), file_(file) {}

    const toml::node* take(std::string_view key) {
        const toml::node* node = table_.get(key);
        if (node) consumed_.insert(std::string(key));
        return node;
    }

    [[noreturn]] void fail(const toml::node& node, std::string_view key,
                           const std::string& what) const {
        throw ConfigError(file_, node.source().begin.line, full_key(key), what);
    }

    std::string full_key(std::string_view key) const {
        return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
    }

    void read(std::string_view key, uint32_t& out, uint64_t min = 0,
              uint64_t max = std::numeric_limits<uint32_t>::max()) {
        const toml::node* node = take(key);
        if (!node) return;
        // as_integer(), not value<int64_t>(): that converts a float, out of
        // range undefined (found by tests/fuzz/config_fuzz).
        const toml::value<int64_t>* integer = node->as_integer();
        if (!integer || integer->get() < 0 || uint64_t(integer->get()) < min ||
            uint64_t(integer->get()) > max)
            fail(*node, key, fmt::format("must be an integer from {} to {}", min, max));
        out = static_cast<uint32_t>(integer->get());
    }

    void read(std::string_view key, bool& out) {
        const toml::node* node = take(key);
        if (!node) return;
        if (!node->is_boolean()) fail(*node, key, "must be true or false");
        out = *node->value<bool>();
    }

    void read(std::string_view key, std::string& out, bool allow_empty = false) {
        const toml::node* node = take(key);
        if (!node) return;
        if (!node->is_string()) fail(*node, key, "must be a string");
        out = *node->value<std::string>();
        if (out.empty() && !allow_empty) fail(*node, key, "must not be empty");
    }

    // A byte count: an integer, or a string with a binary suffix ("512K",
    // "32M", "1G"; "KiB"/"MB" spellings too).
    void read_size(std::string_view key, uint64_t& out, uint64_t min, uint64_t max) {
        const toml::node* node = take(key);
        if (!node) return;
        std::optional<uint64_t> value;
        if (node->is_integer()) {
            if (int64_t v = *node->value<int64_t>(); v >= 0) value = uint64_t(v);
        } else if (node->is_string()) {
            value = parse_size(*node->value<std::string>());
        }
        if (!value || *value < min || *value > max)
            fail(*node, key,
                 fmt::format("must be a size from {} to {} bytes (an integer, or a string "
                             "such as \"32M\")",
                             min, max));
        out = *value;
    }

    void read_strings(std::string_view key, std::vector<std::string>& out) {
        const toml::node* node = take(key);
        if (!node) return;
        const toml::array* array = node->as_array();
        if (!array) fail(*node, key, "must be an array of strings");
        out.clear();
        for (const toml::node& element : *array) {
            if (!element.is_string() || element.value<std::string>()->empty())
                fail(element, key, "entries must be non-empty strings");
            out.push_back(*element.value<std::string>());
        }
    }

    void read_ports(std::string_view key, std::vector<uint16_t>& out) {
        const toml::node* node = take(key);
        if (!node) return;
        const toml::array* array = node->as_array();
        if (!array) fail(*node, key, "must be an array of port numbers");
        out.clear();
        for (const toml::node& element : *array) {
            const toml::value<int64_t>* port = element.as_integer();
            if (!port || port->get() < 1 || port->get() > 65535)
                fail(element, key, "ports are integers from 1 to 65535");
            out.push_back(static_cast<uint16_t>(port->get()));
        }
    }

    // A string out of `choices`; returns whether the key was present.
    bool read_choice(std::string_view key, std::string& out,
                     std::initializer_list<std::string_view> choices) {
        const toml::node* node = take(key);
        if (!node) return false;
        if (node->is_string()) {
            const std::string value = *node->value<std::string>();
            for (std::string_view choice : choices) {
                if (value == choice) {
                    out = value;
                    return true;
                }
            }
        }
        std::string list;
        for (std::string_view choice : choices)
            list += (list.empty() ? "" : ", ") + std::string(choice);
        fail(*node, key, "must be one of " + list);
    }

    // The node of `key` without consuming it (for errors about a key already read).
    const toml::node* table_node(std::string_view key) const { return table_.get(key); }

    // Sub-table, or nullptr when absent. A non-table value is an error.
    const toml::table* table(std::string_view key) {
        const toml::node* node = take(key);
        if (!node) return nullptr;
        if (!node->is_table()) fail(*node, key, "must be a table");
        return node->as_table();
    }

    // Every key not consumed is unknown: report the first one by position,
    // with `known` (the keys allowed here) when given.
    void finish(std::string_view known = {}) const {
        const toml::node* first = nullptr;
        std::string first_key;
        for (auto&& [key, node] : table_) {
            if (consumed_.count(std::string(key.str()))) continue;
            if (!first || node.source().begin.line < first->source().begin.line) {
                first = &node;
                first_key = std::string(key.str());
            }
        }
        if (first)
            fail(*first, first_key,
                 known.empty() ? std::string("unknown key") : "unknown key; " + std::string(known));
    }

    const std::string& file() const { return file_; }

  private:
    static std::optional<uint64_t> parse_size(std::string_view text) {
        uint64_t number = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc() || end == text.data()) return std::nullopt;
        std::string unit;
        for (const char* p = end; p != text.data() + text.size(); ++p)
            if (*p != ' ') unit.push_back(static_cast<char>(std::toupper(*p)));
        if (unit.ends_with("IB"))
            unit.resize(unit.size() - 2);
        else if (unit.size() > 1 && unit.ends_with("B"))
            unit.pop_back();
        uint64_t factor = 1;
        if (unit == "K")
            factor = 1ull << 10;
        else if (unit == "M")
            factor = 1ull << 20;
        else if (unit == "G")
            factor = 1ull << 30;
        else if (!unit.empty() && unit != "B")
            return std::nullopt;
        if (number > std::numeric_limits<uint64_t>::max() / factor) return std::nullopt;
        return number * factor;
    }

    const toml::table& table_;
    std::string prefix_;
    const std::string& file_;
    std::set<std::string> consumed_;
};

void read_daemon(TableReader& r, DaemonConfig& c) {
    if (const toml::node* node = r.take("queues")) {
        if (!node->is_string())
            r.fail(*node, "queues", "must be a string such as \"0-1\" or \"3\"");
        try {
            c.queues = QueueRange::parse(*node->value<std::string>());
        } catch (const std::invalid_argument& e) {
            r.fail(*node, "queues", e.what());
        }
    }
    r.read("control_socket", c.control_socket);
    if (const toml::node* node = r.take("control_group")) {
        if (!node->is_string()) r.fail(*node, "control_group", "must be a group name");
        c.control_group = *node->value<std::string>();
        // Checked here so a typo is a config error, not a daemon that starts
        // with nobody but root able to query.
        if (!c.control_group.empty() && getgrnam(c.control_group.c_str()) == nullptr)
            r.fail(*node, "control_group",
                   "no group named \"" + c.control_group +
                       "\" on this machine (create it with "
                       "groupadd, or remove the key)");
    }
    if (const toml::node* node = r.take("user")) {
        if (!node->is_string())
            r.fail(*node, "user", "must be a user name (\"\" = stay as started)");
        c.user = *node->value<std::string>();
        c.user_line = node->source().begin.line;
    }
    r.read_choice("log_level", c.log_level, {"trace", "debug", "info", "warn", "error"});
    r.read("event_log", c.event_log);
    r.read("messages_dir", c.messages_dir, true);
    if (const toml::node* node = r.take("metrics_listen")) {
        if (!node->is_string())
            r.fail(*node, "metrics_listen", "must be a string \"address:port\" or \"\" (off)");
        c.metrics_listen = *node->value<std::string>();
        try {
            if (!c.metrics_listen.empty()) ListenAddress::parse(c.metrics_listen);
        } catch (const std::invalid_argument& e) {
            r.fail(*node, "metrics_listen", e.what());
        }
    }
}

void read_queue(TableReader& r, QueueConfig& c) {
    r.read("socket_buffer_mb", c.socket_buffer_mb, 1, 2048);
    r.read("max_queue_length", c.max_queue_length, 16, 1u << 20);
    r.read("fail_open", c.fail_open);
    r.read("gso", c.gso);
    r.read("batch_size", c.batch_size, 1, 256);
}

void read_marks(TableReader& r, MarkConfig& c) {
    r.read("release", c.release, 1);
    r.read("inject", c.inject, 1);
    r.read("engine", c.engine);
}

void read_flows(TableReader& r, FlowConfig& c) {
    r.read("max_flows", c.max_flows, 64, 64u << 20);
    r.read("tcp_handshake_timeout", c.tcp_handshake_timeout_s, 1, 86400);
    r.read("tcp_established_timeout", c.tcp_established_timeout_s, 1, 7 * 86400);
    r.read("tcp_closing_timeout", c.tcp_closing_timeout_s, 1, 86400);
    r.read("udp_timeout", c.udp_timeout_s, 1, 86400);
    r.read("classify_packets", c.classify_packets, 1, 64);
}

void read_stream(TableReader& r, StreamConfig& c) {
    constexpr uint64_t kMax = 1ull << 30;
    r.read_size("hold_limit", c.hold_limit, 64 << 10, kMax);
    r.read_size("pending_limit", c.pending_limit, 4 << 10, kMax);
    r.read_size("relay_limit", c.relay_limit, 64 << 10, kMax);
    r.read_size("memory_limit", c.memory_limit, 1 << 20, 1ull << 40);
    r.read_size("inject_send_buffer", c.inject_send_buffer, 1 << 10, 1 << 30);
    if (const toml::node* node = r.take("overflow")) {
        std::optional<std::string> v = node->value<std::string>();
        if (v == "bypass")
            c.overflow = StreamConfig::Overflow::Bypass;
        else if (v == "drop")
            c.overflow = StreamConfig::Overflow::Drop;
        else
            r.fail(*node, "overflow", "must be one of bypass, drop");
    }
    if (const toml::node* node = r.take("relay_device")) {
        // An interface name: at most 15 bytes, no '/', no white space, not
        // "." or ".." (the kernel's dev_valid_name).
        std::optional<std::string> v = node->value<std::string>();
        bool ok = node->is_string() && v->size() < 16 && *v != "." && *v != ".." &&
                  std::none_of(v->begin(), v->end(), [](char ch) {
                      return ch == '/' || ch == ':' || std::isspace(static_cast<unsigned char>(ch));
                  });
        if (!ok)
            r.fail(*node, "relay_device",
                   "must be an interface name (at most 15 characters, no '/', ':' or spaces), "
                   "or \"\" for raw sockets only");
        c.relay_device = *v;
    }
}

// [notify]: sender notifications of the mail inspectors (notifier.h).
void read_notify(TableReader& r, NotifyConfig& c) {
    if (const toml::node* node = r.take("relay")) {
        if (!node->is_string()) r.fail(*node, "relay", "must be a string \"host:port\"");
        try {
            RelayAddress::parse(*node->value<std::string>());
        } catch (const std::invalid_argument& e) {
            r.fail(*node, "relay", e.what());
        }
        c.relay = *node->value<std::string>();
    }
    r.read("from", c.from);
    if (!valid_mail_address(c.from))
        r.fail(*r.table_node("from"), "from",
               "must be a plain address local@domain (no name, brackets or spaces)");
    r.read("error_pass_tag", c.error_pass_tag);
    if (std::any_of(c.error_pass_tag.begin(), c.error_pass_tag.end(),
                    [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; }))
        r.fail(*r.table_node("error_pass_tag"), "error_pass_tag",
               "must be one line without control characters (it goes into the Subject)");
    r.read("per_sender_per_minute", c.per_sender_per_minute, 1, 1000);
}

// [spam]: the spam engine (nfqscan/spam.h).
void read_spam(TableReader& r, SpamConfig& c) {
    std::string engine;
    if (r.read_choice("engine", engine, {"none", "rspamd"}))
        c.engine = engine == "rspamd" ? SpamConfig::Engine::Rspamd : SpamConfig::Engine::None;
    if (const toml::node* node = r.take("rspamd_url")) {
        std::optional<std::string> url = node->value<std::string>();
        const bool ok = node->is_string() &&
                        (url->starts_with("http://") || url->starts_with("https://")) &&
                        url->size() > 8 && std::none_of(url->begin(), url->end(), [](char ch) {
                            return std::isspace(static_cast<unsigned char>(ch)) || ch < 0x20;
                        });
        if (!ok)
            r.fail(*node, "rspamd_url",
                   "must be the URL of rspamd's normal worker, such as "
                   "\"http://127.0.0.1:11333\" (/checkv2 is added)");
        c.rspamd_url = *url;
    }
    if (const toml::node* node = r.take("threshold")) {
        std::optional<double> v = node->value<double>();  // an integer converts too
        if (!(node->is_floating_point() || node->is_integer()) || !v || !(*v >= 0) || *v > 1e6)
            r.fail(*node, "threshold",
                   "must be a number from 0 (rspamd's action decides) to 1000000 (a score)");
        c.threshold = *v;
    }
    r.read("timeout_ms", c.timeout_ms, 100, 600000);
    r.read("tag", c.tag, true);
    if (std::any_of(c.tag.begin(), c.tag.end(),
                    [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; }))
        r.fail(*r.table_node("tag"), "tag",
               "must be one line without control characters (it goes into the Subject)");
}

// on_spam of a mail protocol: SMTP takes every SpamAction, POP3 and IMAP
// accept or tag only.
void read_spam_keys(TableReader& r, Service service, ProtocolPolicy& p) {
    if (const toml::node* node = r.take("on_spam")) {
        std::optional<std::string> value = node->value<std::string>();
        std::optional<SpamAction> a;
        if (node->is_string()) a = spam_action_from_name(*value);
        if (service == Service::Smtp) {
            if (!a) r.fail(*node, "on_spam", "must be one of accept, tag, reject, drop, forward");
        } else if (!a || (*a != SpamAction::Accept && *a != SpamAction::Tag)) {
            r.fail(*node, "on_spam",
                   "must be accept or tag: a " + std::string(service_name(service)) +
                       " client already counts the messages it fetches, so a message can "
                       "only be delivered as it is or tagged (reject, drop and forward are "
                       "SMTP's)");
        }
        p.on_spam = *a;
    }
    if (service == Service::Smtp) {
        if (const toml::node* node = r.take("spam_forward_to")) {
            std::optional<std::string> v = node->value<std::string>();
            if (!node->is_string() || !valid_mail_address(*v))
                r.fail(*node, "spam_forward_to",
                       "must be a plain address local@domain (no name, brackets or spaces)");
            p.spam_forward_to = "<" + *v + ">";
        }
        if (p.on_spam == SpamAction::Forward && p.spam_forward_to.empty())
            r.fail(*r.table_node("on_spam"), "on_spam",
                   "\"forward\" needs spam_forward_to, the address that gets the spam instead");
    } else if (const toml::node* node = r.table_node("spam_forward_to")) {
        r.fail(*node, "spam_forward_to", "only [protocols.smtp] can forward spam");
    }
}

// [quarantine]: the originals of blocked objects (quarantine.h).
void read_quarantine(TableReader& r, QuarantineConfig& c) {
    r.read("dir", c.dir, true);
    if (!c.dir.empty() && !std::filesystem::path(c.dir).is_absolute())
        r.fail(*r.table_node("dir"), "dir", "must be an absolute path (\"\" = no quarantine)");
    r.read_size("max_size", c.max_size, 1 << 20, 1ull << 50);
    r.read("max_age_days", c.max_age_days, 0, 36500);
}

void read_action(TableReader& r, std::string_view key, Action& out) {
    std::string value;
    if (r.read_choice(key, value, {"block", "pass"})) out = *action_from_name(value);
}

// [protocols.<name>.fallback]: category = "block" | "pass"; `default` sets
// every category not listed.
void read_fallback(TableReader& r, std::array<Action, kCategoryCount>& fallback) {
    Action all = Action::Pass;
    read_action(r, "default", all);
    if (r.table_node("default")) fallback.fill(all);
    std::string known = "the keys are default";
    for (size_t i = 0; i < kCategoryCount; ++i) {
        const std::string_view name = category_name(static_cast<Category>(i));
        read_action(r, name, fallback[i]);
        known += ", " + std::string(name);
    }
    r.finish(known);
}

// The entry `index` of the array `key`, for an error at its own line.
[[noreturn]] void fail_entry(TableReader& r, std::string_view key, size_t index,
                             const std::string& what) {
    const toml::node& entry = *r.table_node(key)->as_array()->get(index);
    r.fail(entry, key, what);
}

void read_allow_hosts(TableReader& r, std::vector<std::string>& hosts) {
    r.read_strings("allow_hosts", hosts);
    for (size_t i = 0; i < hosts.size(); ++i) {
        std::string& h = hosts[i];
        if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
        std::transform(h.begin(), h.end(), h.begin(),
                       [](char ch) { return static_cast<char>(std::tolower(ch)); });
        const bool one_colon =
            std::count(h.begin(), h.end(), ':') == 1;  // a port (an IPv6 address has more)
        const bool bad_char = std::any_of(h.begin(), h.end(), [](char ch) {
            return ch == '/' || ch == '*' || ch == '?' || ch == '@' ||
                   std::isspace(static_cast<unsigned char>(ch));
        });
        if (one_colon || bad_char || h == "." || h.ends_with('.'))
            fail_entry(r, "allow_hosts", i,
                       "entries are host names (\"example.com\") or suffixes starting with a "
                       "dot (\".example.com\"): no scheme, port, path or wildcard");
    }
}

void read_allow_urls(TableReader& r, std::vector<std::string>& urls) {
    r.read_strings("allow_urls", urls);
    for (size_t i = 0; i < urls.size(); ++i) {
        const std::string& u = urls[i];
        std::string scheme = u.substr(0, std::min(u.size(), size_t(7)));
        std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                       [](char ch) { return static_cast<char>(std::tolower(ch)); });
        const bool ok = scheme == "http://" && u.size() > 7 && u.find_first_of("/?#", 7) != 7 &&
                        std::none_of(u.begin(), u.end(), [](char ch) {
                            return std::isspace(static_cast<unsigned char>(ch));
                        });
        if (!ok)
            fail_entry(r, "allow_urls", i,
                       "entries are URL prefixes such as \"http://example.com/downloads/\" "
                       "(http:// and a host; HTTPS is not inspected)");
    }
}

bool is_mail(Service s) {
    return s == Service::Smtp || s == Service::Pop3 || s == Service::Imap;
}

// on_virus / on_policy of a mail protocol: "pass", or how it blocks. Only SMTP
// can reject or drop: POP3 and IMAP clients already know which messages they
// fetch.
void read_mail_action(TableReader& r, Service service, std::string_view key, Action& action,
                      MailBlock& block) {
    std::string value;
    bool present = service == Service::Smtp
                       ? r.read_choice(key, value, {"replace", "strip", "reject", "drop", "pass"})
                       : r.read_choice(key, value, {"replace", "strip", "pass"});
    if (!present) return;
    action = value == "pass" ? Action::Pass : Action::Block;
    for (MailBlock b : {MailBlock::Replace, MailBlock::Strip, MailBlock::Reject, MailBlock::Drop})
        if (mail_block_name(b) == value) block = b;
}

void read_mail_keys(TableReader& r, Service service, ProtocolPolicy& p) {
    read_mail_action(r, service, "on_virus", p.on_virus, p.mail_on_virus);
    read_mail_action(r, service, "on_policy", p.on_policy, p.mail_on_policy);
    std::string starttls;
    if (r.read_choice("starttls", starttls, {"allow", "strip", "block"}))
        p.starttls = starttls == "allow"   ? StartTls::Allow
                     : starttls == "strip" ? StartTls::Strip
                                           : StartTls::Block;
    // SMTP tells the envelope sender (MAIL FROM); POP3 and IMAP the message's
    // Return-Path, else its From (mail::envelope_from_header).
    r.read("notify_sender_on_virus", p.notify_sender_on_virus);
    r.read("notify_sender_on_error_drop", p.notify_sender_on_error_drop);
    r.read("notify_recipient_on_error_pass", p.notify_recipient_on_error_pass);
    read_spam_keys(r, service, p);
}

void read_protocol(TableReader& r, Service service, ProtocolConfig& c) {
    r.read_ports("ports", c.ports);
    ProtocolPolicy& p = c.policy;
    r.read("scan", p.scan);
    r.read("profile", p.profile);  // checked against [scan.profiles] in validate()
    if (is_mail(service)) {
        read_mail_keys(r, service, p);
    } else {
        read_action(r, "on_virus", p.on_virus);
        read_action(r, "on_policy", p.on_policy);
        for (std::string_view key :
             {"starttls", "notify_sender_on_virus", "notify_sender_on_error_drop",
              "notify_recipient_on_error_pass", "on_spam", "spam_forward_to"})
            if (const toml::node* node = r.table_node(key))
                r.fail(*node, key, "only the mail protocols (smtp, pop3, imap) have this key");
    }
    if (const toml::table* table = r.table("fallback")) {
        TableReader sub(*table, r.full_key("fallback"), r.file());
        read_fallback(sub, p.fallback);
    }
    if (service == Service::Http) {
        read_allow_hosts(r, p.allow_hosts);
        read_allow_urls(r, p.allow_urls);
        r.read("trickle_after_s", p.trickle_after_s, 0, 3600);
        r.read("allowlist_release", p.allowlist_release);
    } else {
        for (std::string_view key :
             {"allow_hosts", "allow_urls", "trickle_after_s", "allowlist_release"})
            if (const toml::node* node = r.table_node(key))
                r.fail(*node, key, "only [protocols.http] has this key");
    }
    r.finish();
}

void read_protocols(TableReader& r, Config& c) {
    for (size_t i = 1; i < kServiceCount; ++i) {
        Service service = static_cast<Service>(i);
        const toml::table* table = r.table(service_name(service));
        if (!table) continue;
        TableReader sub(*table, r.full_key(service_name(service)), r.file());
        read_protocol(sub, service, c.protocols[i]);
    }
}

void read_test_rewrite(TableReader& r, TestRewriteConfig& c) {
    c.present = true;
    r.read_ports("ports", c.ports);
    if (const toml::node* node = r.take("replace")) {
        const toml::array* pairs = node->as_array();
        if (!pairs) r.fail(*node, "replace", "must be an array of [\"from\", \"to\"] pairs");
        for (const toml::node& pair : *pairs) {
            const toml::array* a = pair.as_array();
            if (!a || a->size() != 2 || !(*a)[0].is_string() || !(*a)[1].is_string())
                r.fail(pair, "replace", "each entry is a pair of strings [\"from\", \"to\"]");
            std::string from = *(*a)[0].value<std::string>();
            if (from.empty()) r.fail(pair, "replace", "the string to replace must not be empty");
            c.replace.emplace_back(from, *(*a)[1].value<std::string>());
        }
    }
    r.read("relay", c.relay);
    r.read("relay_requests", c.relay_requests);
}

void read_scan_limits(TableReader& r, ScanLimits& c) {
    constexpr uint64_t kMaxSize = (4ull << 30) - 1;  // ClamAV's own ceiling (4 GiB - 1)
    r.read_size("max_content_size", c.max_content_size, 1024, kMaxSize);
    r.read_size("max_scan_size", c.max_scan_size, 1024, kMaxSize);
    r.read("max_layers", c.max_layers, 1, 100);
    r.read("max_files", c.max_files, 1, 10'000'000);
    r.read("max_scan_time_ms", c.max_scan_time_ms, 10, 3'600'000);
}

void read_scan_profile(TableReader& r, ScanProfile& c) {
    std::string mode = "all";
    r.read_choice("mode", mode, {"all", "listed"});
    c.mode = mode == "listed" ? ScanProfile::Mode::Listed : ScanProfile::Mode::All;
    r.read_strings("extensions", c.extensions);
    for (std::string& ext : c.extensions) {
        if (ext.starts_with('.')) ext.erase(0, 1);
        if (ext.empty() || ext.find_first_of("/\\. ") != std::string::npos)
            r.fail(*r.table_node("extensions"), "extensions",
                   "an extension is a name suffix such as \"exe\" or \"zip\"");
    }
    r.read_strings("mime_types", c.mime_types);
    for (const std::string& type : c.mime_types) {
        const size_t slash = type.find('/');
        if (type != "*" && (slash == std::string::npos || slash == 0 || slash + 1 == type.size()))
            r.fail(*r.table_node("mime_types"), "mime_types",
                   "a MIME type is \"type/subtype\" or \"type/*\"");
    }
    if (c.mode == ScanProfile::Mode::Listed && c.extensions.empty() && c.mime_types.empty())
        r.fail(*r.table_node("mode"), "mode",
               "\"listed\" needs extensions or mime_types (otherwise nothing is scanned)");
}

void read_scan(TableReader& r, ScanConfig& c) {
    std::string engine(backend_name(c.engine));
    r.read_choice("engine", engine, {"inprocess", "clamd"});
    c.engine = *backend_from_name(engine);
    if (const toml::node* node = r.take("clamd_address")) {
        r.read("clamd_address", c.clamd_address);
        const std::string& a = c.clamd_address;
        bool ok = a.starts_with('/');
        if (!ok) {
            const size_t colon = a.rfind(':');
            const std::string_view port = colon == std::string::npos
                                              ? std::string_view{}
                                              : std::string_view(a).substr(colon + 1);
            unsigned value = 0;
            auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
            ok = colon != std::string::npos && colon > 0 && ec == std::errc() &&
                 end == port.data() + port.size() && value >= 1 && value <= 65535 &&
                 (a[0] != '[' || (colon >= 2 && a[colon - 1] == ']'));
        }
        if (!ok)
            r.fail(*node, "clamd_address",
                   "must be a unix socket path (starting with /) or host:port ([v6]:port)");
    }
    r.read("clamd_connect_timeout_ms", c.clamd_connect_timeout_ms, 1, 60'000);
    r.read_strings("clamav_db_dirs", c.clamav_db_dirs);
    r.read_strings("yara_rule_dirs", c.yara_rule_dirs);
    r.read("temp_dir", c.temp_dir, true);
    r.read("pool_threads", c.pool_threads, 0, 256);
    r.read("queue_length", c.queue_length, 1, 1u << 20);
    r.read("cache_entries", c.cache_entries, 0, 10'000'000);
    std::string isolation(isolation_name(c.isolation));
    r.read_choice("isolation", isolation, {"process", "thread"});
    c.isolation = *isolation_from_name(isolation);
    std::string reload(reload_mode_name(c.reload));
    r.read_choice("reload", reload, {"concurrent", "blocking"});
    c.reload = *reload_mode_from_name(reload);
    r.read("watch_signatures", c.watch_signatures);
    r.read("self_check_s", c.self_check_s, 0, 7 * 86400);
    if (const toml::node* node = r.take("scanner_user")) {
        if (!node->is_string()) r.fail(*node, "scanner_user", "must be a user name");
        c.scanner_user = *node->value<std::string>();
        // A typo would leave every scanner unable to start.
        if (!c.scanner_user.empty()) {
            const passwd* user = getpwnam(c.scanner_user.c_str());
            if (user == nullptr)
                r.fail(*node, "scanner_user",
                       "no user named \"" + c.scanner_user + "\" on this machine");
            if (user->pw_uid == 0)
                r.fail(*node, "scanner_user",
                       "must not be root: scanners parse hostile files (\"\" keeps the "
                       "daemon's user)");
        }
    }
    if (const toml::table* table = r.table("limits")) {
        TableReader sub(*table, r.full_key("limits"), r.file());
        read_scan_limits(sub, c.limits);
        sub.finish();
    }
    if (const toml::table* table = r.table("profiles")) {
        TableReader profiles(*table, r.full_key("profiles"), r.file());
        for (auto&& [key, node] : *table) {
            const std::string name(key.str());
            const toml::table* profile = profiles.table(name);
            TableReader sub(*profile, profiles.full_key(name), r.file());
            read_scan_profile(sub, c.profiles[name]);
            sub.finish();
        }
        profiles.finish();
    }
}

// A relative folder is relative to the configuration file's folder.
void resolve_path(std::string& dir, const std::string& source) {
    if (dir.empty() || std::filesystem::path(dir).is_absolute()) return;
    dir = (std::filesystem::path(source).parent_path() / dir).lexically_normal().string();
}

void resolve_scan_paths(ScanConfig& c, const std::string& source) {
    auto resolve = [&](std::string& dir) { resolve_path(dir, source); };
    for (std::string& dir : c.clamav_db_dirs)
        resolve(dir);
    for (std::string& dir : c.yara_rule_dirs)
        resolve(dir);
    resolve(c.temp_dir);
}

uint32_t line_of(const toml::table& root, std::string_view path) {
    const toml::node* node = root.at_path(path).node();
    return node ? node->source().begin.line : 0;
}

// Cross-field rules, reported at the line of the later key.
void validate(const toml::table& root, const Config& c, const std::string& file) {
    if (c.marks.release & c.marks.inject) {
        const toml::node* node = root.at_path("marks.inject").node();
        throw ConfigError(file, node ? node->source().begin.line : 0, "marks.inject",
                          "must not share bits with marks.release");
    }
    if (c.marks.engine & (c.marks.release | c.marks.inject))
        throw ConfigError(file, line_of(root, "marks.engine"), "marks.engine",
                          "must not share bits with marks.release or marks.inject");
    std::array<Service, 65536> seen{};
    for (size_t i = 1; i < kServiceCount; ++i) {
        for (uint16_t port : c.protocols[i].ports) {
            if (seen[port] != Service::None && seen[port] != static_cast<Service>(i)) {
                std::string key = fmt::format("protocols.{}.ports", kServiceNames[i]);
                const toml::node* node = root.at_path(key).node();
                throw ConfigError(file, node ? node->source().begin.line : 0, key,
                                  fmt::format("port {} is already listed for {}", port,
                                              service_name(seen[port])));
            }
            seen[port] = static_cast<Service>(i);
        }
    }
    for (size_t i = 1; i < kServiceCount; ++i) {
        const std::string& profile = c.protocols[i].policy.profile;
        if (profile.empty() || profile == "default" || c.scan.profiles.count(profile)) continue;
        std::string defined = "default";
        for (const auto& [name, _] : c.scan.profiles)
            if (name != "default") defined += ", " + name;
        const std::string key = fmt::format("protocols.{}.profile", kServiceNames[i]);
        throw ConfigError(file, line_of(root, key), key,
                          fmt::format("no scan profile \"{}\": must name a [scan.profiles] "
                                      "table ({})",
                                      profile, defined));
    }
    // A relayed object is stored whole before its verdict, with the
    // protocol's framing (headers, chunk sizes, a mail's envelope) around it.
    constexpr uint64_t kFraming = 1ull << 20;
    if (c.stream.relay_limit < c.scan.limits.max_content_size + kFraming) {
        const bool given = root.at_path("stream.relay_limit").node() != nullptr;
        throw ConfigError(
            file, line_of(root, given ? "stream.relay_limit" : "scan.limits.max_content_size"),
            "stream.relay_limit",
            fmt::format("{} bytes{} is less than scan.limits.max_content_size ({} bytes) + 1 MiB: "
                        "an object must fit the relay store with its headers",
                        c.stream.relay_limit, given ? "" : " (the default)",
                        c.scan.limits.max_content_size));
    }
}

// Loads the templates, so that a broken one fails the configuration.
void load_messages(const toml::table& root, Config& c) {
    resolve_path(c.daemon.messages_dir, c.source);
    const std::string& dir = c.daemon.messages_dir;
    const toml::node* node = root.at_path("daemon.messages_dir").node();
    std::error_code ec;
    if (dir.empty() || (!node && !std::filesystem::exists(dir, ec))) {
        c.daemon.messages_dir.clear();
        c.messages = MessageTemplates::builtin();
        return;
    }
    if (!std::filesystem::is_directory(dir, ec))
        throw ConfigError(c.source, node ? node->source().begin.line : 0, "daemon.messages_dir",
                          fmt::format("{} is not a folder (\"\" for the built-in texts)", dir));
    c.messages = MessageTemplates::load(dir);
}

void derive(Config& c) {
    c.ports = PortMap();
    for (size_t i = 1; i < kServiceCount; ++i)
        for (uint16_t port : c.protocols[i].ports)
            c.ports.assign(port, static_cast<Service>(i));
}

}  // namespace

Config Config::defaults() {
    Config c;
    c.protocols[size_t(Service::Http)].ports = {80, 8080};
    c.protocols[size_t(Service::Smtp)].ports = {25, 587};
    c.protocols[size_t(Service::Pop3)].ports = {110};
    c.protocols[size_t(Service::Imap)].ports = {143};
    c.protocols[size_t(Service::Ftp)].ports = {21};
    // The official databases where freshclam leaves them, and the folders
    // shipped beside nfqscan.toml.
    c.scan.clamav_db_dirs = {"/var/lib/clamav", "clamav"};
    c.scan.yara_rule_dirs = {"yara"};
    c.messages = MessageTemplates::builtin();
    derive(c);
    return c;
}

Config parse_config(std::string_view text, const std::string& source) {
    toml::table root;
    try {
        root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        throw ConfigError(source, e.source().begin.line, "syntax", std::string(e.description()));
    }
    Config c = Config::defaults();
    c.source = source;
    TableReader top(root, "", source);
    auto section = [&](std::string_view name, auto&& read) {
        if (const toml::table* table = top.table(name)) {
            TableReader r(*table, std::string(name), source);
            read(r);
            r.finish();
        }
    };
    section("daemon", [&](TableReader& r) { read_daemon(r, c.daemon); });
    section("queue", [&](TableReader& r) { read_queue(r, c.queue); });
    section("marks", [&](TableReader& r) { read_marks(r, c.marks); });
    section("flows", [&](TableReader& r) { read_flows(r, c.flows); });
    section("stream", [&](TableReader& r) { read_stream(r, c.stream); });
    section("protocols", [&](TableReader& r) { read_protocols(r, c); });
    if (const toml::node* node = root.get("test_rewrite"))
        c.test_rewrite.line = node->source().begin.line;
    section("test_rewrite", [&](TableReader& r) { read_test_rewrite(r, c.test_rewrite); });
    section("scan", [&](TableReader& r) { read_scan(r, c.scan); });
    section("notify", [&](TableReader& r) { read_notify(r, c.notify); });
    section("spam", [&](TableReader& r) { read_spam(r, c.spam); });
    section("quarantine", [&](TableReader& r) { read_quarantine(r, c.quarantine); });
    top.finish();
    validate(root, c, source);
    derive(c);
    for (Service s : {Service::Smtp, Service::Pop3, Service::Imap}) {
        ProtocolPolicy& p = c.protocols[size_t(s)].policy;
        p.error_pass_tag = c.notify.error_pass_tag;
        p.spam_engine = c.spam.engine != SpamConfig::Engine::None;
        p.spam_tag = c.spam.tag;
    }
    resolve_scan_paths(c.scan, source);
    load_messages(root, c);
    return c;
}

Config load_config(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError(path, 0, "file", "cannot be read");
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_config(buffer.str(), path);
}

}  // namespace nfqscan
