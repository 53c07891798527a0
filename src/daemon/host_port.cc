// Splitting "host:port" (host_port.h).
#include "nfqscan/host_port.h"

#include <charconv>
#include <stdexcept>

namespace nfqscan {

HostPort split_host_port(std::string_view text, const char* shape) {
    HostPort out;
    std::string_view port;
    out.bracketed = !text.empty() && text.front() == '[';
    if (out.bracketed) {
        const size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            throw std::invalid_argument("an IPv6 address is written \"[address]:port\"");
        out.host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        const size_t colon = text.find(':');
        if (colon == std::string_view::npos || text.find(':', colon + 1) != std::string_view::npos)
            throw std::invalid_argument(shape);
        out.host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 1 ||
        value > 65535)
        throw std::invalid_argument("the port must be a number from 1 to 65535");
    out.port = static_cast<uint16_t>(value);
    return out;
}

}  // namespace nfqscan
