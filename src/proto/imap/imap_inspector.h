// The IMAP inspector (RFC 3501, RFC 9051; LITERAL+ RFC 7888; BINARY RFC
// 3516; STARTTLS), issue 10: a FETCH literal that carries a whole message
// (BODY[], BODY.PEEK[] answered as BODY[], RFC822, BINARY[]) is an object,
// held from its "{" until its verdict and given to the client as it was or
// as the message the judge (mail::MessageJudge) made of it, with the
// literal's length rewritten. Partial fetches get the `partial` category.
// APPEND uploads are judged the same way and stored replaced. See
// dev_notes.txt.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "../own_counters.h"
#include "nfqscan/inspector.h"

namespace nfqscan {

struct ImapCounters {
    uint64_t commands = 0;
    uint64_t messages_scanned = 0;  // whole-message literals judged (FETCH and APPEND)
    uint64_t messages_blocked = 0;  // replaced or stripped (a verdict or a fallback)
    uint64_t fallbacks = 0;         // literals not scanned, for a Category (partial included)
    uint64_t partial = 0;           // partial fetches (a part, a range)
    uint64_t starttls_refused = 0;  // STARTTLS answered NO by nfqscand

    static constexpr std::array<std::pair<std::string_view, uint64_t ImapCounters::*>, 6> kFields{{
        {"commands", &ImapCounters::commands},
        {"messages_scanned", &ImapCounters::messages_scanned},
        {"messages_blocked", &ImapCounters::messages_blocked},
        {"fallbacks", &ImapCounters::fallbacks},
        {"partial", &ImapCounters::partial},
        {"starttls_refused", &ImapCounters::starttls_refused},
    }};
};

class ImapInspector final : public Inspector {
  public:
    // A line is kept whole up to this many bytes; a longer one (a SEARCH
    // answer of a big mailbox, a long UID set) passes as it comes but for its
    // last kLineTail bytes, where a literal's announcement would be.
    static constexpr size_t kMaxLine = 64 << 10;
    static constexpr size_t kLineTail = 1024;
    // Kept of a message too big to scan, to tag its Subject or to build the
    // notice from its header.
    static constexpr size_t kMaxHeader = 64 << 10;
    // Partial fetches remembered (tag -> length asked) to tell a whole
    // message answered to a partial fetch.
    static constexpr size_t kMaxRememberedTags = 256;

    explicit ImapInspector(InspectorHost& host);
    ~ImapInspector() override;

    StreamTransform& transform(Direction d) override;
    void on_verdict(uint64_t id, const ScanVerdict& verdict) override;
    size_t memory_bytes() const override;

    const ImapCounters& counters() const { return counters_.values(); }

  private:
    class Client;
    class Server;

    // Answers nfqscand gives the client itself (a refused STARTTLS): at the
    // server side's next response boundary, through `server_sink` in its own
    // call, else host.send() when it is at one now.
    void queue_reply(std::string reply);
    void flush_replies(StreamSink* server_sink);
    void release(ReleaseReason reason);
    void release_host_if_idle();

    InspectorHost& host_;
    std::unique_ptr<Client> client_;
    std::unique_ptr<Server> server_;
    std::deque<std::string> replies_;
    std::string starttls_tag_;                         // an allowed STARTTLS awaiting its answer
    std::map<std::string, uint64_t> partial_lengths_;  // tag -> L of "[]<0.L>"
    bool literal_plus_ = false;                        // the server said LITERAL+ (RFC 7888)
    bool released_ = false;
    bool host_released_ = false;
    ReleaseReason release_reason_ = ReleaseReason::NotProtocol;
    bool closing_ = false;
    uint64_t next_id_ = 1;
    OwnCounters<ImapCounters> counters_;
};

}  // namespace nfqscan
