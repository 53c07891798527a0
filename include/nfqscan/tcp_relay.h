// RelaySender: the TCP sender nfqscand becomes toward a receiver while a
// direction is relayed (store and forward). It decides which output ranges
// go out when, in the output offsets of a StreamDirection; FlowStream turns
// them into segments (the sender's header template, so timestamps and
// options stay the sender's) and injects them.
//
// It honours the receiver's window and the path's MSS, and it is a careful
// sender on a real network: slow start and congestion avoidance (RFC 5681),
// fast retransmit after three duplicate ACKs with NewReno partial-ACK
// recovery (RFC 6582), the receiver's SACK blocks (RFC 2018) so that only
// holes are sent again (in recovery, each hole once SACKed data lies past
// it, as RFC 6675's IsLost() says; after a timeout, the go-back skips what
// the receiver holds), a retransmission timer from measured round trips
// (RFC 6298: Karn's rule, 200 ms floor, exponential backoff to 60 s), and a
// persist probe when the receiver's window is zero (for as long as the
// receiver answers the probes). After kMaxBackoffs timeouts without progress
// or answer it gives up: the caller resets the connection, never leaving it
// open with bytes that will not arrive.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace nfqscan {

// Output [begin, end) to send, with a FIN after it when `fin`.
struct RelaySegment {
    uint64_t begin = 0, end = 0;
    bool fin = false;
    bool retransmission = false;
};

// How many segments of `send`, from index `first` on, go out together as
// one GSO frame: a run of contiguous segments of one kind (first
// transmissions or retransmissions), each but the last `segment_size` bytes
// long (so that the kernel cuts the frame where the RelaySender cut it), at
// most `max_bytes` of payload together; a FIN ends the run. `begin`: where
// the first segment really starts (what the receiver already acknowledged
// is left out). At least 1.
size_t frame_run(std::span<const RelaySegment> send, size_t first, uint64_t begin,
                 size_t segment_size, size_t max_bytes);

struct RelayCounters {
    uint64_t segments = 0;         // segments sent, retransmissions included
    uint64_t retransmissions = 0;  // of them, retransmissions
    uint64_t timeouts = 0;
    uint64_t fast_retransmits = 0;
    uint64_t sack_skipped = 0;  // bytes not sent again: the receiver SACKed them
};

// What the relayed stream has to offer at the time of a call.
struct RelayOutput {
    uint64_t end = 0;  // output produced so far
    bool fin = false;  // and a FIN follows it
};

// What a relay learned of its path, handed to the next relay of the same
// direction: a keep-alive connection relays each object anew, and a sender
// that started every object from the initial window would spend each
// object's first round trips in slow start on a path it already measured.
// RFC 5681 (4.1) keeps the congestion window over an idle period shorter
// than the retransmission timeout; RFC 6298's estimate carries over as is.
struct RelayPathMemo {
    uint64_t cwnd = 0;
    uint64_t ssthresh = UINT64_MAX;
    std::optional<uint64_t> srtt_ms;
    uint64_t rttvar_ms = 0;
    uint64_t rto_ms = 1000;
    uint64_t at_ms = 0;  // when the relay that left it ended
};

class RelaySender {
  public:
    static constexpr uint32_t kMaxBackoffs = 12;

    // `acked`: what the receiver has acknowledged; `sent`: output that went
    // out before the relay took over (it is retransmitted from `acked` if
    // need be). `mss`: payload bytes per segment.
    // `path`: what the previous relay of this direction left (memo()), if any.
    RelaySender(uint64_t acked, uint64_t sent, size_t mss, uint64_t now_ms,
                const RelayPathMemo* path = nullptr);
    // The path as this relay knows it now, for the next one (the window it
    // reached, not one a loss is still shrinking: a relay ends caught up).
    RelayPathMemo memo(uint64_t now_ms) const;

    // Output ranges [begin, end) a receiver's SACK blocks name.
    using SackRanges = std::span<const std::pair<uint64_t, uint64_t>>;
    // An ACK from the receiver: cumulative `acked` (and whether it covers the
    // FIN), its window in bytes, and whether it is a duplicate candidate (no
    // data, no window change: RFC 5681's definition); `sacked`: its SACK
    // blocks (what lies outside what was sent and not acknowledged is
    // ignored).
    void on_ack(uint64_t acked, bool fin_acked, uint64_t window, bool duplicate_candidate,
                const RelayOutput& output, uint64_t now_ms, std::vector<RelaySegment>& send,
                SackRanges sacked = {});
    // The receiver's acknowledgement as the stream knows it (it may have
    // advanced through packets the relay did not see, e.g. released from a
    // hold): brings the sender up to it, as an ACK without a new window: the
    // right edge the receiver offered stays where it was. (Moving it by what
    // was acknowledged would send past the receiver's window whenever its
    // window shrinks as fast as it acknowledges, e.g. a slow reader: a
    // receiver of GSO frames acknowledges 64 KiB at once, and drops what
    // lies beyond its window.)
    void catch_up(uint64_t acked, bool fin_acked, const RelayOutput& output, uint64_t now_ms,
                  std::vector<RelaySegment>& send) {
        if (acked > una_ || (fin_acked && !fin_acked_)) {
            uint64_t right_edge = una_ + rwnd_;
            on_ack(acked, fin_acked, right_edge > acked ? right_edge - acked : 0, false, output,
                   now_ms, send);
        }
    }
    // New output to send, within the windows.
    void pump(const RelayOutput& output, uint64_t now_ms, std::vector<RelaySegment>& send);
    // The retransmission (or persist) timer.
    void on_timer(const RelayOutput& output, uint64_t now_ms, std::vector<RelaySegment>& send);

    std::optional<uint64_t> deadline() const { return deadline_; }
    bool gave_up() const { return backoffs_ > kMaxBackoffs; }
    // Everything, FIN included if there is one, acknowledged.
    bool done(const RelayOutput& output) const {
        return una_ == output.end && (!output.fin || fin_acked_);
    }
    const RelayCounters& counters() const { return counters_; }
    uint64_t rto_ms() const { return rto_ms_; }
    uint64_t sent_end() const { return max_sent_; }
    std::string describe() const;
    uint64_t congestion_window() const { return cwnd_; }
    // Payload bytes per segment (the MSS it was built with, at least 64).
    size_t segment_size() const { return mss_; }
    // The SACK scoreboard: output the receiver holds above the cumulative
    // acknowledgement, merged and ascending.
    const std::vector<std::pair<uint64_t, uint64_t>>& sacked() const { return sacked_; }

  private:
    uint64_t in_flight() const { return nxt_ - una_; }
    void send_range(uint64_t begin, const RelayOutput& output, bool retransmission,
                    std::vector<RelaySegment>& send);
    void arm(uint64_t now_ms);
    void sample_rtt(uint64_t rtt_ms);
    // Adds SACK blocks to the scoreboard; drops what una_ passed.
    void note_sacked(SackRanges sacked);
    // The scoreboard range holding `at`, or the first one after it (end()).
    std::vector<std::pair<uint64_t, uint64_t>>::const_iterator sacked_from(uint64_t at) const;
    // Where holes start to count as lost: the start of the SACKed range
    // with more than two segments' worth of SACKed bytes from it up (RFC
    // 6675 IsLost()); una_ while there is none.
    uint64_t lost_edge() const;
    // Outstanding bytes the receiver does not hold (RFC 6675's pipe,
    // without the retransmissions counted twice).
    uint64_t pipe() const;
    // In recovery with SACK: the holes below the highest SACKed byte that
    // count as lost, each once, as far as the congestion window allows.
    void retransmit_holes(const RelayOutput& output, std::vector<RelaySegment>& send);

    size_t mss_;
    uint64_t una_;       // oldest unacknowledged output byte
    uint64_t nxt_;       // next byte to send
    uint64_t max_sent_;  // highest byte sent so far (for Karn's rule)
    bool fin_sent_ = false;
    bool fin_acked_ = false;
    uint64_t rwnd_;  // receiver's window, bytes
    uint64_t cwnd_;
    uint64_t ssthresh_ = UINT64_MAX;
    uint64_t avoidance_acked_ = 0;  // bytes acknowledged toward the next cwnd step
    uint32_t dupacks_ = 0;
    bool recovering_ = false;
    uint64_t recover_ = 0;  // NewReno: recovery ends when this is acknowledged
    // The SACK scoreboard (sacked()), bounded: the lowest ranges are kept,
    // they are the ones retransmission decisions look at first.
    static constexpr size_t kMaxSackRanges = 64;
    std::vector<std::pair<uint64_t, uint64_t>> sacked_;
    uint64_t high_rxt_ = 0;  // holes below this were sent again in this recovery
    // The round trip being timed: the segment ending at timed_end_ sent at
    // timed_at_ (never a retransmitted one).
    std::optional<uint64_t> timed_end_;
    uint64_t timed_at_ = 0;
    std::optional<uint64_t> srtt_ms_;
    uint64_t rttvar_ms_ = 0;
    uint64_t rto_ms_ = 1000;
    std::optional<uint64_t> deadline_;
    uint32_t backoffs_ = 0;
    RelayCounters counters_;
};

}  // namespace nfqscan
