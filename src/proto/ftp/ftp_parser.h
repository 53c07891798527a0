// The FTP control channel's text (RFC 959, RFC 2428 EPRT/EPSV, RFC 3659
// REST/MLSD, RFC 4217 AUTH TLS), as pure functions over one line: commands
// and their arguments, reply lines and where a multi-line reply ends, and
// the host-port arguments that predict data connections. Every number is
// checked digit by digit against its range (PASV's "h1,h2,h3,h4,p1,p2" and
// EPRT's fields are classic overflow sites); nothing here allocates more
// than the line it is given.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "nfqscan/packet.h"

namespace nfqscan::ftp {

struct Command {
    std::string verb;      // upper case, at most kMaxVerb letters ("" if none)
    std::string_view arg;  // after the first space, as sent (a view into the line)
};
inline constexpr size_t kMaxVerb = 8;
// `line` without its line end. Telnet IP/Synch bytes (IAC IP, IAC DM, the
// prefix clients send before ABOR) before the verb are skipped.
Command parse_command(std::string_view line);

struct ReplyLine {
    uint16_t code = 0;  // 100..599; 0: not a reply line (a middle line of a multi-line reply)
    bool more = false;  // "xyz-": a multi-line reply starts
};
ReplyLine parse_reply_line(std::string_view line);

// Where a reply ends: fed one line at a time (RFC 959 4.2: a multi-line
// reply starts with "xyz-" and ends with a line "xyz " of the same code).
class ReplyFramer {
  public:
    enum class Step : uint8_t {
        Incomplete,  // a multi-line reply goes on
        Complete,    // the reply ends with this line: code() is its code
        Invalid,     // the first line of a reply is not "xyz" + space/dash/end
    };
    Step feed(std::string_view line);
    uint16_t code() const { return code_; }
    bool inside() const { return inside_; }

  private:
    uint16_t code_ = 0;
    bool inside_ = false;
};

// An address and port a data connection goes to.
struct HostPort {
    IpAddress address;
    bool has_address = false;  // EPSV gives only a port
    uint16_t port = 0;
};

// "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)." (the text after the code;
// the six numbers anywhere in it, parentheses optional).
std::optional<HostPort> parse_pasv_reply(std::string_view text);
// "229 Entering Extended Passive Mode (|||port|)": port only.
std::optional<HostPort> parse_epsv_reply(std::string_view text);
// "PORT h1,h2,h3,h4,p1,p2"
std::optional<HostPort> parse_port_arg(std::string_view arg);
// "EPRT |1|132.235.1.2|6275|" or "EPRT |2|1080::8:800:200C:417A|5282|"
// (any delimiter in 33..126).
std::optional<HostPort> parse_eprt_arg(std::string_view arg);

// `name` joined to directory `cwd` ("" = unknown: the name as given).
std::string join_path(std::string_view cwd, std::string_view name);
// The directory a "257" reply (PWD, MKD) names: "257 "/a ""b"" dir" -> /a "b
// (RFC 959 doubled quotes); nullopt when there is none.
std::optional<std::string> parse_257(std::string_view text);

inline constexpr size_t kMaxPath = 1024;

}  // namespace nfqscan::ftp
