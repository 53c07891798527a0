// The quarantine's configuration and what inspectors hand it: the small
// part of quarantine.h that the configuration and the inspector layer need
// (the store and its thread are in quarantine.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/object_buffer.h"

namespace nfqscan {

// [quarantine] of nfqscan.toml.
struct QuarantineConfig {
    std::string dir;                    // "" = no quarantine
    uint64_t max_size = 1ull << 30;     // bytes of all kept objects
    uint32_t max_age_days = 30;         // 0 = kept until max_size needs the room
    uint64_t queue_bytes = 256u << 20;  // objects waiting for the disk, at most
};

// Actions that keep an object from its receiver as it was sent: the
// quarantine keeps those (not "pass", nor a spam "tag", "forward", "accept").
inline constexpr std::array<std::string_view, 6> kKeptActions = {"block", "reset",  "replace",
                                                                 "strip", "reject", "drop"};
bool quarantine_keeps(std::string_view action);

// What an inspector attaches to an object so that the quarantine can keep it
// (ObjectInfo::original): the decoded bytes (the SMTP message dot-unstuffed,
// the HTTP body de-chunked, the FTP file, the POP3/IMAP message) and, for
// mail, the envelope.
struct QuarantineSource {
    std::shared_ptr<const ObjectBuffer> bytes;
    std::string sender;                   // "<a@b>" as given, "<>" the null sender
    std::vector<std::string> recipients;  // "b@c" each, without brackets
    std::string subject;
};

// Splits "<a@b>, <c@d>" (mail::Envelope::recipients) into {"a@b", "c@d"}.
std::vector<std::string> split_recipients(std::string_view text);

}  // namespace nfqscan
