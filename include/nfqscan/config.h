// Daemon configuration: the TOML file (rules/nfqscan.toml documents every
// key), parsed and validated in one place. Unknown keys and bad values throw
// ConfigError naming the file, the line and the key.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/notifier.h"
#include "nfqscan/policy.h"
#include "nfqscan/quarantine_config.h"
#include "nfqscan/scan.h"
#include "nfqscan/service.h"
#include "nfqscan/spam.h"

namespace nfqscan {

class ConfigError : public std::runtime_error {
  public:
    ConfigError(const std::string& file, uint32_t line, const std::string& key,
                const std::string& what);
    const std::string& file() const { return file_; }
    uint32_t line() const { return line_; }
    const std::string& key() const { return key_; }

  private:
    std::string file_;
    uint32_t line_;
    std::string key_;
};

struct QueueRange {
    uint16_t first = 0;
    uint16_t last = 1;
    size_t count() const { return size_t(last) - first + 1; }
    // "N" or "N-M"; nullopt-like failure is reported by throwing std::invalid_argument.
    static QueueRange parse(std::string_view text);
};

struct DaemonConfig {
    QueueRange queues;
    std::string control_socket = "/run/nfqscan/control.sock";
    // Members of this group may query (status, flows, engines, detections)
    // through the control socket; "" = only root. Reload and scan stay root's.
    std::string control_group;
    // The account nfqscand runs as. Started as root, it switches to it once
    // the relay device and the control socket are open, keeping only
    // CAP_NET_ADMIN and CAP_NET_RAW (see privileges.h); "" = stay as started
    // (as root: every capability). Looked up at start, not when parsed, so a
    // configuration can be checked on a machine without the account.
    std::string user = "nfqscan";
    uint32_t user_line = 0;  // where the key is (0: the default); for errors
    std::string log_level = "info";
    std::string event_log = "/var/log/nfqscan/events.jsonl";
    // The message templates' folder, relative to the configuration file's
    // folder; resolved by parse_config(). "" = the built-in texts. When the
    // key is absent and the folder does not exist, the built-in texts too (a
    // folder that is named must exist).
    std::string messages_dir = "messages";
    // Prometheus metrics over HTTP (GET /metrics), "address:port" or
    // "[v6]:port" (metrics.h ListenAddress); "" = off. Applies at restart.
    std::string metrics_listen;
};

struct QueueConfig {
    uint32_t socket_buffer_mb = 64;
    uint32_t max_queue_length = 8192;
    bool fail_open = true;
    bool gso = true;
    uint32_t batch_size = 32;
};

struct MarkConfig {
    uint32_t release = 0x00100000;
    uint32_t inject = 0x00200000;
    // Set on the flows whose peers can no longer talk without nfqscand
    // (shifted sequence numbers, relayed data): the ruleset queues them
    // without `bypass`, so they stop instead of passing raw when nfqscand
    // is gone. 0: not used (such flows pass raw while nfqscand is down).
    uint32_t engine = 0x00400000;
};

struct FlowConfig {
    uint32_t max_flows = 262144;
    uint32_t tcp_handshake_timeout_s = 30;
    uint32_t tcp_established_timeout_s = 3600;
    uint32_t tcp_closing_timeout_s = 30;
    uint32_t udp_timeout_s = 60;
    uint32_t classify_packets = 8;
};

// [stream]: the TCP stream engine's per-flow bounds, per direction.
struct StreamConfig {
    uint64_t hold_limit = 4u << 20;     // out-of-order bytes held back (beyond: dropped)
    uint64_t pending_limit = 1u << 20;  // bytes an inspector may keep unmapped in pass mode
    uint64_t relay_limit = 64u << 20;   // bytes a relay stores (the sender is offered the rest)
    // All streams together (split evenly over the workers). Beyond it, new
    // flows that want the engine get the overflow policy, and no segment is
    // held back behind a gap (dropped: the sender retransmits).
    uint64_t memory_limit = 1ull << 30;
    enum class Overflow : uint8_t { Bypass, Drop } overflow = Overflow::Bypass;
    // The TUN device a relay's output goes through as GSO frames (see
    // relay_device.h); "" = one segment per packet through raw sockets.
    // Applies at restart.
    std::string relay_device = "nfqscan0";
    // SO_SNDBUF of the raw injection sockets: what a burst of nfqscand's own
    // segments may queue behind a slow device (beyond: dropped and counted,
    // streams.inject.busy). Applies at restart.
    uint64_t inject_send_buffer = 4u << 20;
};

struct ProtocolConfig {
    std::vector<uint16_t> ports;
    ProtocolPolicy policy;  // the other keys of [protocols.<name>]
};

// [test_rewrite]: the stream engine's test inspector (see README). Parsed
// always; nfqscand refuses it unless started with --allow-test-inspectors.
struct TestRewriteConfig {
    bool present = false;
    uint32_t line = 0;            // where the table starts, for the refusal message
    std::vector<uint16_t> ports;  // server ports whose server-to-client bytes are rewritten
    std::vector<std::pair<std::string, std::string>> replace;
    bool relay = false;           // store and forward each whole response, then replace
    bool relay_requests = false;  // the client's bytes go through the relay too, unchanged
};

// Server port -> the service configured for it (None when no protocol lists it).
class PortMap {
  public:
    void assign(uint16_t port, Service s) { services_[port] = s; }
    Service lookup(uint16_t port) const { return services_[port]; }

  private:
    std::array<Service, 65536> services_{};
};

struct Config {
    std::string source;  // file the configuration was read from
    DaemonConfig daemon;
    QueueConfig queue;
    MarkConfig marks;
    FlowConfig flows;
    StreamConfig stream;
    std::array<ProtocolConfig, kServiceCount> protocols;
    PortMap ports;  // derived from protocols
    TestRewriteConfig test_rewrite;
    // [scan]. Relative directories (clamav_db_dirs, yara_rule_dirs, temp_dir)
    // are resolved against the directory of the configuration file, so the
    // shipped `clamav` and `yara` folders are found beside nfqscan.toml both in
    // a checkout (rules/) and installed (/usr/local/etc/nfqscan/).
    ScanConfig scan;
    // [notify]: the relay and sender of mail notifications.
    NotifyConfig notify;
    // [spam]: the spam engine beside the YARA spam rules (issue 11).
    SpamConfig spam;
    // [quarantine]: where blocked objects are kept (quarantine.h).
    QuarantineConfig quarantine;
    // The templates of daemon.messages_dir, loaded with the configuration (a
    // broken template is a configuration error). Never null.
    std::shared_ptr<const MessageTemplates> messages;

    // Defaults as in rules/nfqscan.toml (scan directories still relative).
    static Config defaults();
};

// Parse TOML text; `source` names it in errors, and its directory is where
// relative scan directories are resolved. Throws ConfigError.
Config parse_config(std::string_view text, const std::string& source);
// Read and parse a file. Throws ConfigError (also when it cannot be read).
Config load_config(const std::string& path);

}  // namespace nfqscan
