// The inspector layer (DESIGN.md "The inspector layer"): one Inspector per
// claimed flow and protocol, in the shape of Snort 3's service inspectors and
// Envoy's filters. An inspector is pure byte logic: it sees the ordered bytes
// of both directions through two StreamTransforms that share its session
// state (a response's framing depends on its request), marks where objects
// start and end, and answers pass / relay / replace through the StreamSink.
// Everything else (scanning, the event log, FINs and RSTs, releasing the
// flow) it asks of its InspectorHost, which the worker implements for a real
// flow and unit tests fake.
//
// The life of an object:
//   1. its first byte arrives: the inspector calls sink.relay(true) and maps
//      nothing from there on (the engine acknowledges the sender itself and
//      stores the bytes; the receiver gets none of them);
//   2. its last byte arrives: the inspector hands the (decoded) object to
//      host.scan() and still maps nothing;
//   3. the verdict arrives: host calls on_verdict(), then shows both
//      directions their pending bytes again (Envoy's continueReading()), and
//      the inspector maps the object's bytes as the policy says: passed
//      unchanged, replaced (a block page), or closed with resets.
// The inspector never acknowledges an application-level completion for the
// receiver: until the verdict, the receiver has nothing of the object, or
// (trickling, HTTP) a bounded prefix of it that never includes its last byte.
//
// Timers: an inspector cannot act while no bytes arrive. One that must (to
// trickle a held object) asks for ticks with host.want_ticks(true); the host
// then calls on_tick() about once a second and, when it returns true, shows
// both directions their pending bytes again, as after a verdict.
//
// Adding a protocol: a folder src/proto/<name>/ with its inspector, and one
// line in the registry (src/proto/registry.cc).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/flow.h"
#include "nfqscan/ftp_expectations.h"
#include "nfqscan/notifier.h"
#include "nfqscan/object_buffer.h"
#include "nfqscan/policy.h"
#include "nfqscan/quarantine_config.h"
#include "nfqscan/scan.h"
#include "nfqscan/service.h"
#include "nfqscan/spam.h"
#include "nfqscan/tcp_stream.h"

namespace nfqscan {

// An object of one direction, as the inspector describes it.
struct ObjectInfo {
    Service protocol = Service::None;
    Direction direction = Direction::ServerToClient;
    std::string name;       // what the event log calls it: the URL, the FTP path
    std::string file_name;  // for scan modes by extension: Content-Disposition, URL path
    std::string mime_type;  // declared (Content-Type), may be empty
    std::optional<uint64_t> declared_size;  // Content-Length, SIZE, ...
    // The object as the quarantine keeps it when the action recorded for it
    // blocks (quarantine.h); set only while host.quarantining(), and only on
    // the ObjectInfo given to the record() that decides the object's fate.
    std::shared_ptr<const QuarantineSource> original;
};

// Why a flow leaves inspection before its end.
enum class ReleaseReason : uint8_t {
    NotScanned,   // [protocols.<name>] scan = false
    Tls,          // TLS on the protocol's port / after STARTTLS
    Upgrade,      // HTTP Upgrade (WebSocket, h2c) or CONNECT
    NotProtocol,  // the bytes are not this protocol
    Allowlisted,  // the flow goes to an allowlisted server (HTTP: allow_hosts,
                  // [protocols.http] allowlist_release)
};
inline constexpr size_t kReleaseReasonCount = 5;
std::string_view release_reason_name(ReleaseReason r);  // "scan-false", "tls", "upgrade", ...

// The addresses of the flow as the worker sees them (the FTP inspector
// predicts data connections from them).
struct FlowAddresses {
    IpAddress client, server;
    uint16_t client_port = 0, server_port = 0;
};

class InspectorHost {
  public:
    virtual ~InspectorHost() = default;

    // Hands a complete object to the scan service. on_verdict(id, ...)
    // follows exactly once, later (never inside this call), unless the flow
    // ends first. The bytes are in a memory file, which a scanner process
    // maps as it is: the inspector's copy out of the relay store is the
    // only one.
    virtual void scan(uint64_t id, const ObjectInfo& info,
                      std::shared_ptr<const ObjectBuffer> bytes) = 0;
    // Asks the spam engine ([spam] engine) about a mail message; the host
    // adds where the engine is and the client's address. True when an
    // engine is configured: its verdict then comes as on_verdict(id, ...),
    // later (never inside this call), unless the flow ends first. False: no
    // engine, nothing follows.
    virtual bool check_spam(uint64_t id, SpamQuery query) {
        (void)id;
        (void)query;
        return false;
    }
    // One event log line for an object not judged clean (a detection, a
    // fallback) or not scanned (allowlisted objects are not recorded), and the
    // per-protocol counters. `action` is what was done: "block", "pass",
    // "reset". Returns the event id that templates show.
    virtual std::string record(const ObjectInfo& info, const ScanVerdict& verdict,
                               std::string_view action) = 0;
    // A fallback that happened without a scan (content-size known from the
    // headers, partial, protocol-error): the same as record(), with the
    // category as the verdict.
    virtual std::string record_fallback(const ObjectInfo& info, Category category,
                                        std::string_view reason, std::string_view action) = 0;
    // Ends the flow with a message: the receiver of direction `d` gets
    // `bytes` after the output already mapped in `d` (e.g. a block page),
    // then a FIN; the sender of `d` gets a RST at once. Input not mapped yet,
    // and whatever either peer sends later, is dropped; the receiver is reset
    // once it has acknowledged the FIN (or the relay gives up).
    virtual void send_and_close(Direction d, std::span<const uint8_t> bytes) = 0;
    // Both peers are reset now; nothing more is delivered.
    virtual void reset_both() = 0;
    // Bytes of the inspector's own for the receiver of direction `d` (an SMTP
    // reply given on the server's behalf), after the output mapped in `d` so
    // far. The engine delivers them itself (relay), right after the current
    // call. Inside on_bytes() of `d` itself, sink.replace(0, bytes) does the
    // same in place.
    virtual void send(Direction d, std::span<const uint8_t> bytes) = 0;
    // A mail to a sender about its message ([notify]): queued, never
    // blocking; counted and dropped when there is no relay.
    virtual void notify(Notification notification) = 0;
    // Adds `n` to the inspector's own counter `name` (SmtpCounters,
    // Pop3Counters, ImapCounters: their kFields), summed over flows and
    // workers into InspectionCounters::inspector (status
    // protocols.<protocol>.inspector). n = 0 makes the counter known.
    virtual void count(std::string_view name, uint64_t n) {
        (void)name;
        (void)n;
    }
    // Shows both directions their pending bytes again right after the
    // current call: what one direction just learnt (a reply) lets the other
    // go on (the command it held back).
    virtual void redrive() = 0;
    // An object that is not scanned because an allowlist names it (counted,
    // not logged).
    virtual void note_allowlisted(const ObjectInfo& info) = 0;
    // The flow needs no more inspection: released to the kernel's fast path
    // as soon as nothing depends on the engine (no shifted offsets, nothing
    // held or relayed); until then passed through unchanged. Counted by reason.
    virtual void release(ReleaseReason reason) = 0;

    // Whether blocked objects are kept ([quarantine] dir): only then do
    // inspectors attach ObjectInfo::original (it keeps the bytes alive).
    virtual bool quarantining() const { return false; }

    virtual const ProtocolPolicy& policy() const = 0;
    virtual const MessageTemplates& messages() const = 0;
    // Template `template_name` of messages() filled in with `fields`: what
    // inspectors show the peers (a block page). A call through the host, so an
    // inspector needs neither the templates' implementation nor its loading.
    virtual std::string render_message(std::string_view template_name,
                                       const MessageFields& fields) const = 0;
    virtual const ScanLimits& limits() const = 0;
    // The fields of a message that the flow knows (client, server, time,
    // host, protocol).
    virtual MessageFields message_fields() const = 0;
    // Monotonic milliseconds: the clock on_tick() is given.
    virtual uint64_t now_ms() const = 0;
    // Whether the inspector wants on_tick() calls from now on.
    virtual void want_ticks(bool on) = 0;
    // Whether the sender of direction d has ended it: its FIN (or a RST)
    // was seen. The engine shows an inspector no empty end, so one that
    // must know that the receiver of the other direction has read all and
    // closed (FTP: the 550 goes after the drop message was read) asks.
    virtual bool ended(Direction d) const {
        (void)d;
        return false;
    }

    // -- FTP (src/proto/ftp): the seams between a control connection and its
    // data connections, which may be on another worker.
    virtual FlowAddresses addresses() const { return {}; }
    // The daemon's expected data connections (nullptr: none are predicted).
    virtual FtpExpectations* ftp_expectations() { return nullptr; }
    // The control session this flow was claimed for as a data connection
    // (nullptr: not an FTP data flow).
    virtual std::shared_ptr<FtpSession> ftp_data() const { return nullptr; }
    // A callable that any thread may call, as long as it likes: the flow's
    // worker then shows both directions their pending bytes again (nothing
    // happens once the flow is gone).
    virtual std::function<void()> waker() { return {}; }
};

class Inspector {
  public:
    virtual ~Inspector() = default;
    // The transform of direction d (ClientToServer, ServerToClient).
    virtual StreamTransform& transform(Direction d) = 0;
    // The verdict of scan(id). The host then shows both directions their
    // pending bytes again.
    virtual void on_verdict(uint64_t id, const ScanVerdict& verdict) = 0;
    // About once a second while the inspector wants ticks (want_ticks()):
    // true if it now has bytes to map, and the host shows both directions
    // their pending bytes again.
    virtual bool on_tick(uint64_t now_ms) {
        (void)now_ms;
        return false;
    }
    // Bytes this inspector keeps outside the engine (decoded bodies awaiting
    // their scan), for the memory budget and status.
    virtual size_t memory_bytes() const = 0;
};

// What the inspectors of one protocol did, per worker (summed for status).
struct InspectionCounters {
    uint64_t flows = 0;          // flows an inspector was attached to
    uint64_t objects = 0;        // objects handed to the scan service
    uint64_t scanned_bytes = 0;  // their bytes
    uint64_t clean = 0, infected = 0;
    std::array<uint64_t, kCategoryCount> errors{};  // by Category (scan errors and fallbacks)
    uint64_t allowlisted = 0;                       // objects not scanned: an allowlist names them
    uint64_t blocked = 0, passed = 0, resets = 0;   // actions on objects not judged clean
    std::array<uint64_t, kReleaseReasonCount> released{};  // flows released, by reason
    uint64_t held_bytes = 0;         // gauge: bytes the engine and inspectors hold now
    std::array<uint64_t, 5> spam{};  // spam verdicts by what was done (SpamAction)
    // The inspector's own counters by name (InspectorHost::count()).
    std::map<std::string, uint64_t, std::less<>> inspector;

    InspectionCounters& operator+=(const InspectionCounters& o);
};
void to_json(nlohmann::json& j, const InspectionCounters& c);

// The registry: the inspector of a service, or nullptr when the service has
// none (yet).
std::unique_ptr<Inspector> make_inspector(Service service, InspectorHost& host);
bool has_inspector(Service service);

}  // namespace nfqscan
