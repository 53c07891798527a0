// The FTP inspectors (issue 12; see dev_notes.txt): FtpControlInspector on
// the control connection (commands and replies, data connections predicted
// into FtpExpectations, the completion reply of a transfer held until the
// transfer's verdict), and FtpDataInspector on each data connection the
// expectations claimed (the file of a RETR, STOR, APPE or STOU relayed whole
// to the sender's FIN, scanned, then delivered or replaced by the drop
// message). The two meet only in their FtpSession (ftp_expectations.h),
// since they may run on different workers.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "../line_reader.h"
#include "ftp_parser.h"
#include "nfqscan/ftp_expectations.h"
#include "nfqscan/inspector.h"

namespace nfqscan {

class FtpControlInspector final : public Inspector {
  public:
    // A command or a reply line, CRLF included (path names make them long).
    static constexpr size_t kMaxLine = 8 << 10;
    // Commands sent and not answered: beyond, the client's next waits.
    static constexpr size_t kMaxQueuedCommands = 64;
    // A completion reply whose data connection was claimed but carried no
    // byte (an empty file, or bytes still on their way through another
    // worker) waits this long for them.
    static constexpr uint64_t kEmptyTransferGraceMs = 2000;
    // The 550 of a blocked download waits until the client closed the data
    // connection, having read the drop message, at most this long. A client
    // that reads the control connection first gets it then. (curl in active
    // mode gives up on a data connection it has not accepted yet once a 5xx
    // is in its buffer: "FTP accept failed", and the drop message unread.)
    static constexpr uint64_t kDropReadGraceMs = 3000;

    explicit FtpControlInspector(InspectorHost& host);
    ~FtpControlInspector() override;

    StreamTransform& transform(Direction d) override;
    // The control channel carries no object of its own.
    void on_verdict(uint64_t, const ScanVerdict&) override {}
    bool on_tick(uint64_t now_ms) override;
    size_t memory_bytes() const override;

    const std::shared_ptr<FtpSession>& session() const { return session_; }
    const std::string& cwd() const { return cwd_; }

  private:
    struct Pending {
        std::string verb;
        std::string arg;  // CWD's directory (bounded by kMaxPath)
        uint64_t transfer = 0;
    };
    class Client;
    class Server;

    void on_command(const ftp::Command& command);
    // A complete reply (its last line) to the command at the front, if any.
    void on_reply(uint16_t code, std::string_view last_line);
    void expect(const IpAddress& from, const ftp::HostPort& to, const IpAddress& also_to);
    void release(ReleaseReason reason);
    void protocol_error(Direction d, const std::string& why);
    FtpCounters& counters() { return *counters_; }

    InspectorHost& host_;
    FtpCounters own_counters_;  // when the host has no expectation table (tests)
    FtpCounters* counters_;
    FtpExpectations* expectations_;
    std::shared_ptr<FtpSession> session_;
    std::unique_ptr<Client> client_;
    std::unique_ptr<Server> server_;
    std::deque<Pending> commands_;
    std::string cwd_;          // "" until PWD or an absolute CWD says
    bool resume_ = false;      // REST n (n > 0) before the next transfer
    uint64_t generation_ = 0;  // of the expectation in force
    bool tls_asked_ = false;   // AUTH TLS/SSL sent, not answered
    bool released_ = false;
    bool host_released_ = false;
    ReleaseReason release_reason_ = ReleaseReason::NotProtocol;
    bool closing_ = false;
};

class FtpDataInspector final : public Inspector {
  public:
    FtpDataInspector(InspectorHost& host, std::shared_ptr<FtpSession> session);
    ~FtpDataInspector() override;

    StreamTransform& transform(Direction d) override;
    void on_verdict(uint64_t id, const ScanVerdict& verdict) override;
    // ABOR: the data connection is reset (see Side::abort_if_asked()).
    bool on_tick(uint64_t now_ms) override;
    size_t memory_bytes() const override;

  private:
    class Side;

    InspectorHost& host_;
    std::shared_ptr<FtpSession> session_;
    std::array<std::unique_ptr<Side>, 2> sides_;
    uint64_t next_id_ = 1;
    bool closing_ = false;  // reset_both() asked
};

}  // namespace nfqscan
