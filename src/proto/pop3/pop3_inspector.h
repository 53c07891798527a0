// The POP3 inspector (RFC 1939; RFC 2449 CAPA and pipelining; RFC 2595
// STLS; RFC 5034 AUTH), issue 10: every RETR and TOP response is an object,
// held whole (status line and message) from its first byte, scanned
// dot-unstuffed, and given to the client unchanged or as the message the
// judge (mail::MessageJudge) made of it. Commands are framed on the client
// side and queued; the server's responses are framed in that order. See
// dev_notes.txt.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "../own_counters.h"
#include "nfqscan/inspector.h"

namespace nfqscan {

struct Pop3Counters {
    uint64_t commands = 0;
    uint64_t responses = 0;
    uint64_t messages_scanned = 0;  // RETR/TOP responses judged
    uint64_t messages_blocked = 0;  // replaced or stripped (a verdict or a fallback)
    uint64_t fallbacks = 0;         // messages not scanned, for a Category
    uint64_t starttls_refused = 0;  // STLS answered -ERR by nfqscand
    uint64_t protocol_errors = 0;

    static constexpr std::array<std::pair<std::string_view, uint64_t Pop3Counters::*>, 7> kFields{{
        {"commands", &Pop3Counters::commands},
        {"responses", &Pop3Counters::responses},
        {"messages_scanned", &Pop3Counters::messages_scanned},
        {"messages_blocked", &Pop3Counters::messages_blocked},
        {"fallbacks", &Pop3Counters::fallbacks},
        {"starttls_refused", &Pop3Counters::starttls_refused},
        {"protocol_errors", &Pop3Counters::protocol_errors},
    }};
};

class Pop3Inspector final : public Inspector {
  public:
    // A command or a status line, CRLF included (RFC 2449 allows 255 and
    // 512 octets; SASL responses are longer: a GSSAPI token fits).
    static constexpr size_t kMaxLine = 16 << 10;
    // Commands sent and not answered yet: beyond, the client's next command
    // waits unmapped (pipelining is bounded).
    static constexpr size_t kMaxQueuedCommands = 64;

    explicit Pop3Inspector(InspectorHost& host);
    ~Pop3Inspector() override;

    StreamTransform& transform(Direction d) override;
    void on_verdict(uint64_t id, const ScanVerdict& verdict) override;
    size_t memory_bytes() const override;

    const Pop3Counters& counters() const { return counters_.values(); }

  private:
    // What the response to a command looks like.
    enum class Expect : uint8_t {
        Greeting,  // the server's first line
        Line,      // one status line
        Listing,   // multi-line after +OK (LIST, UIDL, AUTH without arguments)
        Capa,      // multi-line after +OK; STLS may have to go
        Message,   // RETR, TOP: multi-line after +OK, the object
        Auth,      // "+ " continuations, each answered by a client line, then +OK/-ERR
        Stls,      // +OK: TLS follows
        Local,     // answered by nfqscand (a refused STLS): never reaches the server
    };
    struct Command {
        Expect expect = Expect::Line;
        std::string name;   // "RETR 3": names the object in the event log
        std::string reply;  // Local: the answer the client gets
    };
    class Client;
    class Server;

    // Replies of Local commands at the front of the queue go to the client
    // now: through `server_sink` in the server side's own call (in place),
    // else host.send().
    void answer_local(StreamSink* server_sink);
    // The flow leaves inspection once no message is held (HTTP's rule: from
    // host.release() on, bytes pass without the inspector).
    void release(ReleaseReason reason);
    void release_host_if_idle();
    // Bytes that break the framing: the protocol-error fallback (block:
    // both peers reset; pass: logged, the flow released).
    void protocol_error(Direction d, const std::string& why);

    InspectorHost& host_;
    std::unique_ptr<Client> client_;
    std::unique_ptr<Server> server_;
    std::deque<Command> commands_;  // sent to the server (or answered locally), oldest first
    bool released_ = false;
    bool host_released_ = false;
    ReleaseReason release_reason_ = ReleaseReason::NotProtocol;
    bool closing_ = false;  // reset_both issued: nothing more is mapped
    uint64_t next_id_ = 1;
    OwnCounters<Pop3Counters> counters_;
};

}  // namespace nfqscan
