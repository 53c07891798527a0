#include "nfqscan/probe.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string_view>

namespace nfqscan {

namespace {

std::string_view as_text(std::span<const uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// `text` starts with `word`: Match; is a proper prefix of it: NeedMore.
ProbeVerdict starts_with(std::string_view text, std::string_view word) {
    size_t n = std::min(text.size(), word.size());
    if (text.compare(0, n, word.substr(0, n)) != 0) return ProbeVerdict::NoMatch;
    return n == word.size() ? ProbeVerdict::Match : ProbeVerdict::NeedMore;
}

bool contains_nocase(std::string_view text, std::string_view word) {
    auto it = std::search(text.begin(), text.end(), word.begin(), word.end(),
                          [](char a, char b) { return std::toupper(a) == std::toupper(b); });
    return it != text.end();
}

ProbeResult first_of(std::string_view text,
                     std::initializer_list<std::pair<std::string_view, Service>> table) {
    bool more = false;
    for (auto [word, service] : table) {
        ProbeVerdict v = starts_with(text, word);
        if (v == ProbeVerdict::Match) return {ProbeVerdict::Match, service};
        more |= v == ProbeVerdict::NeedMore;
    }
    return {more ? ProbeVerdict::NeedMore : ProbeVerdict::NoMatch, Service::None};
}

}  // namespace

ProbeResult probe_client_request(std::span<const uint8_t> bytes) {
    return first_of(as_text(bytes), {{"GET ", Service::Http},
                                     {"POST ", Service::Http},
                                     {"PUT ", Service::Http},
                                     {"HEAD ", Service::Http},
                                     {"DELETE ", Service::Http},
                                     {"OPTIONS ", Service::Http},
                                     {"PATCH ", Service::Http},
                                     {"CONNECT ", Service::Http},
                                     {"TRACE ", Service::Http},
                                     {"PROPFIND ", Service::Http},
                                     {"MKCOL ", Service::Http},
                                     {"COPY ", Service::Http},
                                     {"MOVE ", Service::Http}});
}

ProbeResult probe_server_greeting(std::span<const uint8_t> greeting,
                                  std::span<const uint8_t> client_reply) {
    std::string_view text = as_text(greeting);
    ProbeResult r = first_of(text, {{"+OK", Service::Pop3},
                                    {"* OK", Service::Imap},
                                    {"* PREAUTH", Service::Imap},
                                    {"* BYE", Service::Imap},
                                    {"HTTP/1.", Service::Http}});  // picked up mid-stream
    if (r.verdict != ProbeVerdict::NoMatch) return r;
    ProbeResult code = first_of(text, {{"220 ", Service::Smtp}, {"220-", Service::Smtp}});
    if (code.verdict != ProbeVerdict::Match) return code;

    // "220" opens both SMTP and FTP. The greeting text usually says which;
    // otherwise the client's first command does.
    std::string_view line = text.substr(0, text.find('\n'));
    if (contains_nocase(line, "FTP")) return {ProbeVerdict::Match, Service::Ftp};
    if (contains_nocase(line, "SMTP") || contains_nocase(line, "mail"))
        return {ProbeVerdict::Match, Service::Smtp};
    std::string_view reply = as_text(client_reply);
    if (reply.size() < 5) return {ProbeVerdict::NeedMore, Service::None};
    for (std::string_view smtp : {"EHLO", "HELO", "LHLO", "ehlo", "helo"})
        if (reply.substr(0, 4) == smtp) return {ProbeVerdict::Match, Service::Smtp};
    // Anything else a client says first after "220" (USER, AUTH TLS, FEAT,
    // SYST, OPTS...) is FTP: SMTP clients must greet first.
    return {ProbeVerdict::Match, Service::Ftp};
}

void ServiceProbe::feed(bool from_server, std::span<const uint8_t> payload) {
    if (payload.empty() || result_.verdict != ProbeVerdict::NeedMore) return;
    if (first_speaker_ < 0) first_speaker_ = from_server ? 1 : 0;
    uint8_t* buffer = from_server ? server_bytes_ : client_bytes_;
    uint8_t& length = from_server ? server_length_ : client_length_;
    size_t take = std::min(payload.size(), kMaxBytes - length);
    std::memcpy(buffer + length, payload.data(), take);
    length = static_cast<uint8_t>(length + take);
    evaluate();
}

void ServiceProbe::evaluate() {
    std::span<const uint8_t> server(server_bytes_, server_length_);
    std::span<const uint8_t> client(client_bytes_, client_length_);
    if (first_speaker_ == 0) {
        result_ = probe_client_request(client);
    } else {
        result_ = probe_server_greeting(server, client);
    }
    // A probe that has all the bytes it will ever look at and still wants
    // more has seen something else.
    bool full = first_speaker_ == 0 ? client_length_ == kMaxBytes
                                    : server_length_ == kMaxBytes && client_length_ == kMaxBytes;
    if (result_.verdict == ProbeVerdict::NeedMore && full) result_.verdict = ProbeVerdict::NoMatch;
}

}  // namespace nfqscan

namespace nfqscan {

ProbeResult ServiceProbe::final_result() const {
    if (result_.verdict != ProbeVerdict::NeedMore) return result_;
    // A "220" greeting whose client never said which protocol it speaks is
    // SMTP or FTP: ours either way; SMTP is the likelier on an unknown port.
    std::string_view server = as_text({server_bytes_, server_length_});
    if (first_speaker_ == 1 && (server.starts_with("220 ") || server.starts_with("220-")))
        return {ProbeVerdict::Match, Service::Smtp};
    return {ProbeVerdict::NoMatch, Service::None};
}

}  // namespace nfqscan
