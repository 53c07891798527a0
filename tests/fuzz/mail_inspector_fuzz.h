// The POP3 and IMAP fuzz targets: their inspector in the simulator of
// inspector_simulator.h (its layout and checks). Setup bits 5-6: starttls
// allow (0), strip (1), block (2, 3); bit 7: on_virus strip instead of
// replace, notify_recipient_on_error_pass and notify_sender_on_virus /
// notify_sender_on_error_drop.
#pragma once

#include "inspector_simulator.h"

namespace nfqscan::fuzz {

// The mail protocols' simulator settings and setup bits 5-7.
inline int run_mail_inspector(Service service, const uint8_t* data, size_t size) {
    const SimulatedProtocol protocol = {
        .service = service,
        // A message below max_content_size in a memory file (whole pages, twice
        // it at most), per direction, and a header kept for a fallback.
        .max_memory = 2 * (2 * kMaxContentSize + 4096) + (64 << 10),
        .block_ends_flow = false,
        .speaks_for_peers = true,
    };
    FuzzInput in(data, size);
    Simulator simulator(in, protocol);
    simulator.run([](ProtocolPolicy& policy, uint8_t setup) {
        int tls = (setup >> 5) & 3;
        policy.starttls = tls == 0 ? StartTls::Allow : tls == 1 ? StartTls::Strip : StartTls::Block;
        if (setup & 128) {
            policy.mail_on_virus = MailBlock::Strip;
            policy.notify_recipient_on_error_pass = true;
            policy.notify_sender_on_virus = policy.notify_sender_on_error_drop = true;
        }
    });
    return 0;
}

}  // namespace nfqscan::fuzz
