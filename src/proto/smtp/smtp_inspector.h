// The SMTP inspector (issue 10): every message a client submits is one
// object, held whole and judged (MessageJudge) before the server hears of
// it. See dev_notes.txt for the session walk.
//
// The server never enters DATA before the verdict ("deferred DATA"): when
// the client sends DATA for a transaction with an accepted sender and at
// least one accepted recipient, nfqscand answers the 354 itself, takes the
// message (the engine acknowledges it: relay), and judges it. Then:
//   deliver / rewrite -> "DATA" goes to the server; on its 354 (swallowed)
//                        the message (or its replacement) follows, and the
//                        server's final reply reaches the client as the
//                        answer to its message;
//   reject / drop     -> the server gets "RSET" instead (its reply
//                        swallowed) and the client "550 5.7.1 ..." or "250";
//   forward (spam)    -> the server gets "RSET", then (each after the
//                        previous reply, all swallowed) "MAIL FROM:<sender>",
//                        "RCPT TO:<spam_forward_to>", "DATA"; on its 354 the
//                        message with X-Nfqscan-Original-Recipients follows,
//                        and its final reply reaches the client;
// so the session stays in step for both peers, and a message that is
// refused leaves nothing at the server. The EHLO reply the client sees loses
// CHUNKING and BINARYMIME (BDAT would bypass this framing) and, unless
// starttls = "allow", STARTTLS.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../mail/message_judge.h"
#include "../own_counters.h"
#include "nfqscan/inspector.h"

namespace nfqscan {

struct SmtpCounters {
    uint64_t commands = 0;
    uint64_t messages = 0;         // complete messages judged
    uint64_t delivered = 0;        // as sent
    uint64_t rewritten = 0;        // replaced, stripped or tagged
    uint64_t rejected = 0;         // 550 to the client
    uint64_t dropped = 0;          // 250 to the client, nothing delivered
    uint64_t aborted = 0;          // the client left inside a message: nothing delivered
    uint64_t protocol_errors = 0;  // BDAT, smuggling, overlong lines
    uint64_t starttls_refused = 0;
    uint64_t forwarded = 0;  // spam delivered to spam_forward_to instead

    static constexpr std::array<std::pair<std::string_view, uint64_t SmtpCounters::*>, 10> kFields{{
        {"commands", &SmtpCounters::commands},
        {"messages", &SmtpCounters::messages},
        {"delivered", &SmtpCounters::delivered},
        {"rewritten", &SmtpCounters::rewritten},
        {"rejected", &SmtpCounters::rejected},
        {"dropped", &SmtpCounters::dropped},
        {"aborted", &SmtpCounters::aborted},
        {"protocol_errors", &SmtpCounters::protocol_errors},
        {"starttls_refused", &SmtpCounters::starttls_refused},
        {"forwarded", &SmtpCounters::forwarded},
    }};
};

class SmtpInspector final : public Inspector {
  public:
    // RFC 5321 4.5.3.1: 512 for a command line, 512 for a reply line; some
    // servers and clients go beyond (long AUTH lines): a margin.
    static constexpr size_t kMaxLine = 4096;
    static constexpr size_t kMaxReplyLines = 256;
    // Commands sent ahead of their replies (PIPELINING) before the client's
    // bytes wait.
    static constexpr size_t kMaxOutstanding = 128;
    // What is kept of a message that grows past max_content_size: its start,
    // for the header of a replacement.
    static constexpr size_t kHeadKept = 64 << 10;

    explicit SmtpInspector(InspectorHost& host);
    ~SmtpInspector() override;

    StreamTransform& transform(Direction d) override;
    void on_verdict(uint64_t id, const ScanVerdict& verdict) override;
    size_t memory_bytes() const override;

    const SmtpCounters& counters() const { return counters_.values(); }

  private:
    class Client;
    class Server;
    friend class Client;
    friend class Server;

    // What the next server reply answers, in order.
    struct Expect {
        enum class Kind : uint8_t {
            Greeting,
            Ehlo,
            Helo,
            Mail,
            Rcpt,
            Rset,
            DataDirect,  // DATA passed as it is (no transaction to defer)
            DataGo,      // DATA sent after the verdict: its 354 is swallowed
            DataEnd,     // the message's end: the reply goes to the client
            OwnRset,     // our RSET after a refused message: the reply is swallowed
            // A spam forward: our RSET, MAIL, RCPT in turn (`text`: the
            // commands still to send, the last "DATA"); replies swallowed.
            ForwardStep,
            StartTls,
            Auth,  // AUTH, and each SASL line after a 334
            Quit,
            Other,
            Own,  // not a server reply: `text` is ours, sent when it is first in line
        };
        Kind kind = Kind::Other;
        std::string text;  // Mail/Rcpt: the address; Own: the reply
    };

    // Leaves the flow to the kernel (TLS, not SMTP, scan off by an error
    // that passes): both sides pass everything from now on.
    void release(ReleaseReason reason);
    // Bytes that break the framing: the protocol-error fallback.
    void protocol_error(const std::string& why);
    void protocol_error(const std::string& why, Action action);
    // Server bytes that break the framing: the fallback, unless a message
    // is held (then the session ends).
    void server_error(const std::string& why);
    void reset_transaction();
    bool replies_outstanding() const;
    std::string envelope_recipients() const;

    InspectorHost& host_;
    std::unique_ptr<Client> client_;
    std::unique_ptr<Server> server_;
    std::deque<Expect> expects_;
    bool passthrough_ = false;
    bool closing_ = false;
    // The transaction, as the server accepted it.
    bool mail_accepted_ = false;
    std::string sender_;
    std::vector<std::string> recipients_;
    std::string helo_;  // the client's EHLO/HELO name (for the spam engine)
    // A 334 came: the client's next line is a SASL response, not a command.
    bool sasl_next_ = false;
    uint64_t next_id_ = 1;
    mail::MessageJudge judge_;
    OwnCounters<SmtpCounters> counters_;
};

}  // namespace nfqscan
