// A clamd client for the INSTREAM protocol: one connection per object (clamd
// answers one command per session), the object sent in chunks, one reply
// line back. Every step has a deadline so that a hung clamd costs a timeout
// verdict, not a pool thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace nfqscan {

struct ClamdReply {
    enum class Status : uint8_t {
        Clean,        // "stream: OK"
        Found,        // "stream: NAME FOUND"; text = NAME
        SizeLimit,    // clamd's StreamMaxLength exceeded
        Error,        // "... ERROR" or an unexpected answer; text = the answer
        Unreachable,  // cannot connect
        Timeout,      // no answer within the deadline
    };
    Status status = Status::Error;
    std::string text;
};

class ClamdClient {
  public:
    // `address`: a unix socket path (starting with '/') or host:port / [v6]:port.
    ClamdClient(std::string address, std::chrono::milliseconds connect_timeout);

    ClamdReply scan(std::span<const uint8_t> bytes, std::chrono::milliseconds timeout) const;
    // clamd's VERSION answer ("ClamAV 1.4.6/27000/..."), nullopt if unreachable.
    std::optional<std::string> version(std::chrono::milliseconds timeout) const;

    const std::string& address() const { return address_; }

  private:
    int connect_with_deadline(std::chrono::steady_clock::time_point deadline) const;

    std::string address_;
    std::chrono::milliseconds connect_timeout_;
};

}  // namespace nfqscan
