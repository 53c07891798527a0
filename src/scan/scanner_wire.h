// The messages between the scan service and its scanner processes, one per
// SOCK_SEQPACKET datagram (so a message is never split or merged, and the
// framing is the socket's). The object's bytes do not travel here: they are in
// the scanner's memfd, or in the memory file whose descriptor comes with the
// request (SCM_RIGHTS), and the request only says how many there are.
//
//   request  u64 size, u8 in_passed_fd, str name, str mime_type, str profile
//   reply    verdict (u8 kind, u8 skipped, u8 engine, u8 category, u8 error,
//            str signature, str detection layer, str reason, str error layer,
//            u64 elapsed_us), then the ClamAV and YARA counters of this scan
//            (5 x u64 each)
//
// str is u32 length + bytes. Integers are in host order: both ends are the
// same binary on the same machine.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nfqscan/scan.h"

namespace nfqscan {

// Strings longer than this are cut (names and layer paths are far shorter;
// the bound keeps every message well inside one datagram).
inline constexpr size_t kScannerWireMaxString = 8192;
// Enough for any message built with the bound above.
inline constexpr size_t kScannerWireMaxMessage = 6 * kScannerWireMaxString + 256;

struct ScannerRequest {
    uint64_t size = 0;  // object bytes at the start of the scanner's memfd
    std::string name;
    std::string mime_type;
    std::string profile;
    // The bytes are at the start of the file whose descriptor is attached to
    // this request instead (an ObjectBuffer's), mapped for this scan only.
    bool in_passed_fd = false;
};

struct ScannerReply {
    ScanVerdict verdict;
    EngineCounters clamav, yara;  // what this scan added
};

std::vector<uint8_t> encode(const ScannerRequest& request);
std::optional<ScannerRequest> decode_request(std::string_view message);

std::vector<uint8_t> encode(const ScannerReply& reply);
std::optional<ScannerReply> decode_reply(std::string_view message);

}  // namespace nfqscan
