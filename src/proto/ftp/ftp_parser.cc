#include "ftp_parser.h"

#include <arpa/inet.h>

#include <array>
#include <cctype>
#include <cstring>

namespace nfqscan::ftp {

namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// A decimal number of at most `max_digits` digits and at most `max` at `s`
// (advanced past it); nullopt for none, too many digits or too large.
std::optional<uint32_t> number(std::string_view& s, size_t max_digits, uint32_t max) {
    size_t n = 0;
    uint32_t value = 0;
    while (n < s.size() && is_digit(s[n])) {
        if (n == max_digits) return std::nullopt;
        value = value * 10 + uint32_t(s[n] - '0');
        ++n;
    }
    if (n == 0 || value > max) return std::nullopt;
    s.remove_prefix(n);
    return value;
}

// "h1,h2,h3,h4,p1,p2" at the start of `s`, spaces around commas allowed.
std::optional<HostPort> six_numbers(std::string_view s) {
    std::array<uint32_t, 6> v{};
    for (size_t i = 0; i < 6; ++i) {
        while (!s.empty() && s.front() == ' ')
            s.remove_prefix(1);
        std::optional<uint32_t> n = number(s, 3, 255);
        if (!n) return std::nullopt;
        v[i] = *n;
        while (!s.empty() && s.front() == ' ')
            s.remove_prefix(1);
        if (i < 5) {
            if (s.empty() || s.front() != ',') return std::nullopt;
            s.remove_prefix(1);
        }
    }
    // A seventh number would make this something else.
    if (!s.empty() && (s.front() == ',' || is_digit(s.front()))) return std::nullopt;
    HostPort hp;
    uint8_t a[4] = {uint8_t(v[0]), uint8_t(v[1]), uint8_t(v[2]), uint8_t(v[3])};
    hp.address = IpAddress::from_v4(a);
    hp.has_address = true;
    hp.port = uint16_t(v[4] << 8 | v[5]);
    if (hp.port == 0) return std::nullopt;
    return hp;
}

// The fields of an RFC 2428 argument: "<d>f1<d>f2<d>f3<d>", nullopt unless
// exactly that shape.
std::optional<std::array<std::string_view, 3>> fields3(std::string_view s) {
    if (s.size() < 4) return std::nullopt;
    char d = s.front();
    if (d < 33 || d > 126) return std::nullopt;
    std::array<std::string_view, 3> f;
    s.remove_prefix(1);
    for (size_t i = 0; i < 3; ++i) {
        size_t end = s.find(d);
        if (end == std::string_view::npos) return std::nullopt;
        f[i] = s.substr(0, end);
        s.remove_prefix(end + 1);
    }
    if (!s.empty()) return std::nullopt;
    return f;
}

std::optional<uint16_t> port_field(std::string_view s) {
    std::optional<uint32_t> p = number(s, 5, 65535);
    if (!p || !s.empty() || *p == 0) return std::nullopt;
    return uint16_t(*p);
}

}  // namespace

Command parse_command(std::string_view line) {
    // Telnet IAC (255) with IP (244), DM (242) or Synch: what clients put
    // before ABOR (RFC 959 4.1.3).
    while (!line.empty() && (uint8_t(line.front()) == 255 || uint8_t(line.front()) == 244 ||
                             uint8_t(line.front()) == 242))
        line.remove_prefix(1);
    Command c;
    size_t n = 0;
    while (n < line.size() && n <= kMaxVerb && std::isalpha(static_cast<unsigned char>(line[n])))
        ++n;
    if (n == 0 || n > kMaxVerb || (n < line.size() && line[n] != ' ')) return c;
    c.verb.resize(n);
    for (size_t i = 0; i < n; ++i)
        c.verb[i] = char(std::toupper(static_cast<unsigned char>(line[i])));
    if (n < line.size()) c.arg = line.substr(n + 1);
    return c;
}

ReplyLine parse_reply_line(std::string_view line) {
    ReplyLine r;
    if (line.size() < 3 || line[0] < '1' || line[0] > '5' || !is_digit(line[1]) ||
        !is_digit(line[2]))
        return r;
    if (line.size() > 3 && line[3] != ' ' && line[3] != '-') return r;
    r.code = uint16_t((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
    r.more = line.size() > 3 && line[3] == '-';
    return r;
}

ReplyFramer::Step ReplyFramer::feed(std::string_view line) {
    ReplyLine r = parse_reply_line(line);
    if (!inside_) {
        if (r.code == 0) return Step::Invalid;
        code_ = r.code;
        inside_ = r.more;
        return r.more ? Step::Incomplete : Step::Complete;
    }
    // Inside: only "xyz " (or "xyz" alone) of the same code ends it; other
    // lines, "xyz-" ones included, are its text.
    if (r.code == code_ && !r.more) {
        inside_ = false;
        return Step::Complete;
    }
    return Step::Incomplete;
}

std::optional<HostPort> parse_pasv_reply(std::string_view text) {
    // The first digit that starts a run of six comma-separated numbers.
    for (size_t i = 0; i < text.size(); ++i) {
        // A run starts after none of its own characters (a digit, a comma)
        // nor a sign: "1,2,3,4,5,6,7" and "-1,..." are no addresses.
        if (!is_digit(text[i]) ||
            (i > 0 && (is_digit(text[i - 1]) || text[i - 1] == ',' || text[i - 1] == '-')))
            continue;
        if (std::optional<HostPort> hp = six_numbers(text.substr(i))) return hp;
    }
    return std::nullopt;
}

std::optional<HostPort> parse_epsv_reply(std::string_view text) {
    size_t open = text.find('(');
    if (open == std::string_view::npos) return std::nullopt;
    size_t close = text.find(')', open);
    if (close == std::string_view::npos) return std::nullopt;
    std::optional<std::array<std::string_view, 3>> f =
        fields3(text.substr(open + 1, close - open - 1));
    if (!f || !(*f)[0].empty() || !(*f)[1].empty()) return std::nullopt;
    std::optional<uint16_t> port = port_field((*f)[2]);
    if (!port) return std::nullopt;
    HostPort hp;
    hp.port = *port;
    return hp;
}

std::optional<HostPort> parse_port_arg(std::string_view arg) {
    while (!arg.empty() && arg.front() == ' ')
        arg.remove_prefix(1);
    while (!arg.empty() && arg.back() == ' ')
        arg.remove_suffix(1);
    std::optional<HostPort> hp = six_numbers(arg);
    if (!hp) return std::nullopt;
    // six_numbers stops at the sixth number: nothing may follow it.
    size_t commas = 0, digits_end = 0;
    for (size_t i = 0; i < arg.size(); ++i) {
        if (arg[i] == ',') ++commas;
        if (is_digit(arg[i])) digits_end = i + 1;
    }
    if (commas != 5 || digits_end != arg.size()) return std::nullopt;
    return hp;
}

std::optional<HostPort> parse_eprt_arg(std::string_view arg) {
    while (!arg.empty() && arg.back() == ' ')
        arg.remove_suffix(1);
    std::optional<std::array<std::string_view, 3>> f = fields3(arg);
    if (!f) return std::nullopt;
    const auto& [proto, address, port_text] = *f;
    std::optional<uint16_t> port = port_field(port_text);
    if (!port) return std::nullopt;
    // inet_pton needs a terminated copy, bounded by the longest address.
    char buf[INET6_ADDRSTRLEN] = {};
    if (address.empty() || address.size() >= sizeof buf) return std::nullopt;
    std::memcpy(buf, address.data(), address.size());
    HostPort hp;
    hp.port = *port;
    hp.has_address = true;
    if (proto == "1") {
        uint8_t a[4];
        if (inet_pton(AF_INET, buf, a) != 1) return std::nullopt;
        hp.address = IpAddress::from_v4(a);
    } else if (proto == "2") {
        uint8_t a[16];
        if (inet_pton(AF_INET6, buf, a) != 1) return std::nullopt;
        hp.address = IpAddress::from_v6(a);
    } else {
        return std::nullopt;
    }
    return hp;
}

std::string join_path(std::string_view cwd, std::string_view name) {
    std::string out;
    if (name.starts_with('/') || cwd.empty()) {
        out = name;
    } else {
        out = cwd;
        if (!out.ends_with('/')) out += '/';
        out += name;
    }
    if (out.size() > kMaxPath) out.resize(kMaxPath);
    return out;
}

std::optional<std::string> parse_257(std::string_view text) {
    size_t open = text.find('"');
    if (open == std::string_view::npos) return std::nullopt;
    std::string dir;
    for (size_t i = open + 1; i < text.size(); ++i) {
        if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
                dir += '"';
                ++i;
                continue;
            }
            if (dir.size() > kMaxPath) return std::nullopt;
            return dir;
        }
        dir += text[i];
    }
    return std::nullopt;
}

}  // namespace nfqscan::ftp
