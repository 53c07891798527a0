// Cheap protocol probes on a flow's first bytes: the greeting of a server
// that speaks first (SMTP, FTP "220", POP3 "+OK", IMAP "* OK") or the request
// line of a client that speaks first (HTTP). They let nfqscan claim its five
// protocols on any port, whatever nDPI says (DESIGN.md: nDPI alone must never
// decide that a flow is not scanned).
#pragma once

#include <cstdint>
#include <span>

#include "nfqscan/service.h"

namespace nfqscan {

enum class ProbeVerdict : uint8_t { NeedMore, Match, NoMatch };

struct ProbeResult {
    ProbeVerdict verdict = ProbeVerdict::NeedMore;
    Service service = Service::None;
};

// Collects the first bytes of each direction (bounded) and says what they are.
class ServiceProbe {
  public:
    static constexpr size_t kMaxBytes = 96;

    // Feed payload of one direction; bytes beyond kMaxBytes are ignored.
    void feed(bool from_server, std::span<const uint8_t> payload);
    ProbeResult result() const { return result_; }
    // The answer when no more bytes will be looked at: NeedMore resolves to
    // Match or NoMatch.
    ProbeResult final_result() const;

  private:
    void evaluate();

    uint8_t server_bytes_[kMaxBytes];
    uint8_t client_bytes_[kMaxBytes];
    uint8_t server_length_ = 0;
    uint8_t client_length_ = 0;
    int8_t first_speaker_ = -1;  // 0 client, 1 server
    ProbeResult result_;
};

// Single-direction probes, exposed for tests and for the inspectors.
ProbeResult probe_client_request(std::span<const uint8_t> bytes);
ProbeResult probe_server_greeting(std::span<const uint8_t> greeting,
                                  std::span<const uint8_t> client_reply);

}  // namespace nfqscan
