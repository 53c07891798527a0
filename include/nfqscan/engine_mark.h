// The engine mark ([marks] engine): how flows whose peers can no longer talk
// without nfqscand fail closed when it is gone.
//
// Once the stream engine shifts a flow's sequence numbers or holds its data
// (FlowStream::needs_engine()), a raw segment of either peer would reach the
// other at numbers it misreads. The rulesets queue every other flow with
// `bypass` (traffic flows unscanned while nfqscand is down), but a flow
// whose conntrack mark carries the engine bit without it: with nfqscand gone
// its packets are dropped, and the peers retransmit or time out.
//
// The bit gets there as the release mark does (NFQA_CT verdicts are missing
// on some kernels): the first packet of the flow nfqscand sees after the
// engine took it over is answered with NF_REPEAT and the bit in its packet
// mark, unprocessed; the ruleset saves the bit to the conntrack mark, copies
// it back to the packet mark of every packet of the flow from then on, and
// queues the packet again, now processed. A packet that carries the bit on
// a flow this nfqscand never marked belongs to a flow whose engine state
// is lost (nfqscand restarted, or the flow left its table): it is dropped,
// and both peers are reset (orphan_answers), so that neither waits for the
// rest of a transfer that cannot come right.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "nfqscan/conntrack.h"
#include "nfqscan/flow.h"
#include "nfqscan/packet.h"

namespace nfqscan {

enum class EngineMarkStep : uint8_t {
    Proceed,      // handle the packet
    RequestMark,  // answer it NF_REPEAT with the engine bit added, unprocessed
    Orphan,       // drop it, reset its peers (orphan_answers)
    // Handle it, but it lacks the mark its flow's conntrack mark should have
    // given it: the ruleset misses the rules that save and copy the mark,
    // and the flow would pass raw while nfqscand is down.
    MarkMissing,
};

// For packet `p` of `flow`; `packet_marked`: its packet mark has the engine
// bit. Notes on the flow what it decides.
EngineMarkStep engine_mark_step(Flow& flow, const DecodedPacket& p, bool packet_marked);

// What answers an orphan packet `p` of direction d: a RST to its sender as
// from its peer, at p's acknowledgement number (what the sender expects
// next, in its own space whatever the shifts were); and an ACK to its
// receiver as from its sender, at a number far outside any window: the
// receiver answers it with an ACK of its own (RFC 9293 3.10.7.4), an orphan
// packet in turn, whose sender, the receiver, is then reset the same way.
// The receiver's next number is not known here (the shift is lost), and a
// RST at a guess would be ignored. Addressed as conntrack knows the
// connection when `nat` is given (toward the client its reply tuple, toward
// the server its original one; see conntrack.h). A RST is not answered; a
// segment without ACK gets no RST (no number known to be exact).
std::vector<std::vector<uint8_t>> orphan_answers(const DecodedPacket& p, Direction d,
                                                 const std::optional<ConnectionTuples>& nat);

}  // namespace nfqscan
