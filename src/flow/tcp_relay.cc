#include "nfqscan/tcp_relay.h"

#include <algorithm>

namespace nfqscan {

namespace {
constexpr uint64_t kMinRtoMs = 200;
constexpr uint64_t kMaxRtoMs = 60'000;
constexpr uint64_t kInitialWindowSegments = 10;  // RFC 6928
}  // namespace

size_t frame_run(std::span<const RelaySegment> send, size_t first, uint64_t begin,
                 size_t segment_size, size_t max_bytes) {
    const RelaySegment& head = send[first];
    uint64_t end = head.end;
    uint64_t last_length = end - std::min(begin, end);
    bool fin = head.fin;
    size_t count = 1;
    for (size_t i = first + 1; i < send.size() && !fin && last_length == segment_size; ++i) {
        const RelaySegment& s = send[i];
        if (s.begin != end || s.retransmission != head.retransmission ||
            s.end - begin > max_bytes || (s.end == s.begin && !s.fin))
            break;
        last_length = s.end - s.begin;
        end = s.end;
        fin = s.fin;
        ++count;
    }
    return count;
}

RelaySender::RelaySender(uint64_t acked, uint64_t sent, size_t mss, uint64_t now_ms,
                         const RelayPathMemo* path)
    : mss_(std::max<size_t>(mss, 64)),
      una_(acked),
      nxt_(std::max(acked, sent)),
      max_sent_(nxt_),
      rwnd_(65535),
      cwnd_(kInitialWindowSegments * mss_) {
    if (path && path->cwnd > 0) {
        srtt_ms_ = path->srtt_ms;
        rttvar_ms_ = path->rttvar_ms;
        rto_ms_ = std::clamp<uint64_t>(path->rto_ms, kMinRtoMs, kMaxRtoMs);
        ssthresh_ = path->ssthresh;
        // Idle for longer than a retransmission timeout: the window reached
        // says nothing about the path any more (RFC 5681's restart window).
        bool idle_too_long = now_ms - std::min(now_ms, path->at_ms) > rto_ms_;
        cwnd_ = idle_too_long ? std::min(cwnd_, path->cwnd) : std::max(cwnd_, path->cwnd);
    }
    // Output that went out before the relay took over is covered by the
    // timer from now on.
    if (nxt_ > una_) arm(now_ms);
}

RelayPathMemo RelaySender::memo(uint64_t now_ms) const {
    RelayPathMemo m;
    m.cwnd = cwnd_;
    m.ssthresh = ssthresh_;
    m.srtt_ms = srtt_ms_;
    m.rttvar_ms = rttvar_ms_;
    // Without the backoff of a timeout: the next relay starts afresh.
    if (srtt_ms_)
        m.rto_ms = std::clamp<uint64_t>(*srtt_ms_ + std::max<uint64_t>(1, 4 * rttvar_ms_),
                                        kMinRtoMs, kMaxRtoMs);
    m.at_ms = now_ms;
    return m;
}

void RelaySender::arm(uint64_t now_ms) {
    deadline_ = now_ms + rto_ms_;
}

void RelaySender::sample_rtt(uint64_t rtt_ms) {
    // RFC 6298, section 2.
    if (!srtt_ms_) {
        srtt_ms_ = rtt_ms;
        rttvar_ms_ = rtt_ms / 2;
    } else {
        uint64_t delta = *srtt_ms_ > rtt_ms ? *srtt_ms_ - rtt_ms : rtt_ms - *srtt_ms_;
        rttvar_ms_ = (3 * rttvar_ms_ + delta) / 4;
        srtt_ms_ = (7 * *srtt_ms_ + rtt_ms) / 8;
    }
    rto_ms_ = std::clamp<uint64_t>(*srtt_ms_ + std::max<uint64_t>(1, 4 * rttvar_ms_), kMinRtoMs,
                                   kMaxRtoMs);
}

void RelaySender::send_range(uint64_t begin, const RelayOutput& output, bool retransmission,
                             std::vector<RelaySegment>& send) {
    RelaySegment s;
    s.begin = begin;
    s.end = std::min<uint64_t>(begin + mss_, output.end);
    // The FIN rides on the segment that ends the output (or alone).
    s.fin = output.fin && s.end == output.end;
    s.retransmission = retransmission;
    send.push_back(s);
    ++counters_.segments;
    if (retransmission) ++counters_.retransmissions;
}

void RelaySender::note_sacked(SackRanges sacked) {
    for (auto [begin, end] : sacked) {
        begin = std::max(begin, una_);
        end = std::min(end, max_sent_);
        if (begin >= end) continue;
        // Merge with every range it touches.
        auto first = std::lower_bound(
            sacked_.begin(), sacked_.end(), begin,
            [](const std::pair<uint64_t, uint64_t>& r, uint64_t b) { return r.second < b; });
        auto last = first;
        while (last != sacked_.end() && last->first <= end) {
            begin = std::min(begin, last->first);
            end = std::max(end, last->second);
            ++last;
        }
        first = sacked_.erase(first, last);
        sacked_.insert(first, {begin, end});
    }
    if (sacked_.size() > kMaxSackRanges) sacked_.resize(kMaxSackRanges);
}

std::vector<std::pair<uint64_t, uint64_t>>::const_iterator RelaySender::sacked_from(
    uint64_t at) const {
    return std::upper_bound(
        sacked_.begin(), sacked_.end(), at,
        [](uint64_t a, const std::pair<uint64_t, uint64_t>& r) { return a < r.second; });
}

uint64_t RelaySender::lost_edge() const {
    uint64_t above = 0;
    for (auto r = sacked_.rbegin(); r != sacked_.rend(); ++r) {
        above += r->second - r->first;
        if (above > 2 * mss_) return r->first;
    }
    return una_;
}

uint64_t RelaySender::pipe() const {
    if (sacked_.empty()) return in_flight();
    // A hole counts as lost once more than two segments' worth of SACKed
    // bytes lie past it.
    const uint64_t edge = lost_edge();
    uint64_t held = 0, lost = 0, at = una_;
    for (auto [begin, end] : sacked_) {
        if (begin >= nxt_) break;
        held += std::min(end, nxt_) - begin;
        // Lost and not sent again in this recovery: not in the network.
        uint64_t from = std::max(at, high_rxt_), to = std::min(begin, edge);
        if (to > from) lost += to - from;
        at = end;
    }
    uint64_t gone = held + lost;
    return in_flight() > gone ? in_flight() - gone : 0;
}

void RelaySender::retransmit_holes(const RelayOutput& output, std::vector<RelaySegment>& send) {
    if (sacked_.empty()) return;
    uint64_t at = std::max(high_rxt_, una_);
    const uint64_t edge = std::min(lost_edge(), nxt_);  // past nxt_, pump() sends anyway
    while (at < edge && pipe() < cwnd_) {
        auto r = sacked_from(at);
        if (r != sacked_.end() && r->first <= at) {
            at = r->second;
            continue;
        }
        uint64_t end = std::min({at + mss_, r == sacked_.end() ? edge : r->first, output.end});
        if (end <= at) break;
        RelaySegment s{at, end, output.fin && end == output.end, true};
        send.push_back(s);
        ++counters_.segments;
        ++counters_.retransmissions;
        high_rxt_ = end;
        at = end;
    }
}

void RelaySender::pump(const RelayOutput& output, uint64_t now_ms,
                       std::vector<RelaySegment>& send) {
    while (true) {
        uint64_t window = std::min(cwnd_, rwnd_);
        // What the receiver holds past a hole (SACK) is not in the network.
        uint64_t flight = pipe();
        if (nxt_ < output.end) {
            // Going back over what was sent before (after a timeout): what
            // the receiver SACKed is skipped.
            auto r = nxt_ < max_sent_ ? sacked_from(nxt_) : sacked_.end();
            if (r != sacked_.end() && r->first <= nxt_) {
                counters_.sack_skipped += r->second - nxt_;
                nxt_ = r->second;
                continue;
            }
            if (flight >= window) break;
            uint64_t room = window - flight;
            uint64_t left = std::min(output.end, r != sacked_.end() ? r->first : output.end) - nxt_;
            // No runt segments while more is in flight (the ACKs open room).
            if (room < std::min<uint64_t>(mss_, left) && flight > 0) break;
            uint64_t length = std::min({uint64_t(mss_), left, room});
            bool first_time = nxt_ >= max_sent_;
            RelaySegment segment{nxt_, nxt_ + length, output.fin && nxt_ + length == output.end,
                                 !first_time};
            send.push_back(segment);
            ++counters_.segments;
            if (!first_time) ++counters_.retransmissions;
            if (first_time && !timed_end_) {
                timed_end_ = segment.end;
                timed_at_ = now_ms;
            }
            nxt_ = segment.end;
            max_sent_ = std::max(max_sent_, nxt_);
            if (segment.fin) fin_sent_ = true;
            if (!deadline_) arm(now_ms);
        } else if (output.fin && !fin_sent_) {
            send.push_back({output.end, output.end, true});
            ++counters_.segments;
            fin_sent_ = true;
            if (!deadline_) arm(now_ms);
            break;
        } else {
            break;
        }
    }
    if (!deadline_ && nxt_ < output.end && rwnd_ == 0) arm(now_ms);  // persist
}

void RelaySender::on_ack(uint64_t acked, bool fin_acked, uint64_t window, bool duplicate_candidate,
                         const RelayOutput& output, uint64_t now_ms,
                         std::vector<RelaySegment>& send, SackRanges sacked) {
    rwnd_ = window;
    // A receiver answering while its window is closed is alive: probing goes
    // on for as long as it answers (RFC 9293 3.8.6.1), the probes spaced by
    // the backed-off timer but never counted toward giving up.
    if (window == 0 && acked == una_) backoffs_ = 0;
    if (acked > max_sent_) {
        // The receiver has data this sender did not send (it went out
        // before the relay took over): nothing to send there.
        max_sent_ = acked;
        nxt_ = std::max(nxt_, acked);
    }
    // The receiver has the FIN, whatever a timeout made of fin_sent_ since.
    bool fin_news = fin_acked && !fin_acked_;
    if (fin_news) fin_acked_ = fin_sent_ = true;
    bool sack_news = false;
    if (!sacked.empty()) {
        size_t before = sacked_.size();
        uint64_t top = before ? sacked_.back().second : 0;
        note_sacked(sacked);
        sack_news = sacked_.size() != before || (!sacked_.empty() && sacked_.back().second != top);
    }
    if (acked > una_ || fin_news) {
        uint64_t newly = acked - una_;
        una_ = std::max(una_, acked);
        nxt_ = std::max(nxt_, una_);
        // What the cumulative acknowledgement passed leaves the scoreboard.
        while (!sacked_.empty() && sacked_.front().second <= una_)
            sacked_.erase(sacked_.begin());
        if (!sacked_.empty()) sacked_.front().first = std::max(sacked_.front().first, una_);
        if (backoffs_ > 0 && srtt_ms_) {
            // Progress ends the backoff (as Linux does): the timer goes back
            // to what the measured round trips say.
            rto_ms_ = std::clamp<uint64_t>(*srtt_ms_ + std::max<uint64_t>(1, 4 * rttvar_ms_),
                                           kMinRtoMs, kMaxRtoMs);
        }
        backoffs_ = 0;
        if (timed_end_ && una_ >= *timed_end_) {
            sample_rtt(now_ms - timed_at_);
            timed_end_.reset();
        }
        if (recovering_) {
            if (una_ >= recover_) {
                recovering_ = false;
                cwnd_ = std::max<uint64_t>(ssthresh_, mss_);
            } else if (!sacked_.empty()) {
                // A partial ACK with SACK: the holes the scoreboard shows
                // lost go again, each once (RFC 6675); the window stays.
                if (una_ >= high_rxt_) {
                    send_range(una_, output, true, send);
                    high_rxt_ = send.back().end;
                }
                retransmit_holes(output, send);
            } else {
                // A partial ACK: the next hole is lost too (RFC 6582).
                send_range(una_, output, true, send);
                cwnd_ = cwnd_ > newly ? cwnd_ - newly + mss_ : mss_;
            }
        } else if (cwnd_ < ssthresh_) {
            // Slow start by the bytes acknowledged (RFC 3465), without its
            // L = 2 segments cap per ACK: a receiver that gets GSO frames
            // acknowledges dozens of segments at once (a stretch ACK), and
            // the cap would grow the window by two segments per frame. Linux
            // senders do the same. Never past ssthresh in one step.
            cwnd_ = std::min(cwnd_ + newly, std::max(ssthresh_, cwnd_ + mss_));
        } else {
            // Congestion avoidance, one segment per window acknowledged, by
            // bytes (RFC 3465 section 2.1): per ACK it would be a segment per
            // stretch ACK, dozens of times too slow.
            avoidance_acked_ += newly;
            if (avoidance_acked_ >= cwnd_) {
                avoidance_acked_ -= cwnd_;
                cwnd_ += mss_;
            }
        }
        dupacks_ = 0;
        deadline_.reset();
        if (in_flight() > 0 || (fin_sent_ && !fin_acked_)) arm(now_ms);
    } else if (duplicate_candidate && acked == una_ && in_flight() > 0) {
        // RFC 5681 also asks for an unchanged window; a Linux receiver
        // shrinks it while out-of-order data piles up, so, as Linux senders
        // do, any pure ACK repeating the cumulative one counts.
        ++dupacks_;
        // SACK tells loss sooner: more than two segments held past the
        // oldest unacknowledged byte (RFC 6675 5, IsLost(HighACK + 1)).
        bool sack_lost = false;
        if (!sacked_.empty()) {
            uint64_t above = 0;
            for (auto [begin, end] : sacked_)
                above += end - begin;
            sack_lost = above > 2 * mss_;
        }
        if ((dupacks_ == 3 || sack_lost) && !recovering_) {
            ++counters_.fast_retransmits;
            ssthresh_ = std::max<uint64_t>(in_flight() / 2, 2 * mss_);
            // With SACK the pipe counts what is in the network: no
            // inflation (RFC 6675); without, NewReno's (RFC 6582).
            cwnd_ = sacked_.empty() ? ssthresh_ + 3 * mss_ : ssthresh_;
            recover_ = nxt_;
            recovering_ = true;
            timed_end_.reset();
            send_range(una_, output, true, send);
            high_rxt_ = send.back().end;
            retransmit_holes(output, send);
        } else if (recovering_) {
            if (sacked_.empty())
                cwnd_ += mss_;
            else if (sack_news)
                retransmit_holes(output, send);
        }
    }
    pump(output, now_ms, send);
}

void RelaySender::on_timer(const RelayOutput& output, uint64_t now_ms,
                           std::vector<RelaySegment>& send) {
    if (!deadline_ || now_ms < *deadline_) return;
    deadline_.reset();
    bool unacked = in_flight() > 0 || (fin_sent_ && !fin_acked_);
    ++backoffs_;
    rto_ms_ = std::min(rto_ms_ * 2, kMaxRtoMs);
    timed_end_.reset();  // Karn: no samples from retransmitted data
    if (unacked) {
        // Go back to the oldest unacknowledged byte with one segment's window.
        ++counters_.timeouts;
        ssthresh_ = std::max<uint64_t>(in_flight() / 2, 2 * mss_);
        cwnd_ = mss_;
        avoidance_acked_ = 0;
        recovering_ = false;
        dupacks_ = 0;
        nxt_ = una_;
        high_rxt_ = una_;
        fin_sent_ = false;
        if (una_ == output.end) {
            send.push_back({una_, una_, output.fin, true});  // the FIN alone
            ++counters_.segments;
            ++counters_.retransmissions;
            fin_sent_ = output.fin;
        } else {
            send_range(una_, output, true, send);
            nxt_ = send.back().end;
            if (send.back().fin) fin_sent_ = true;
        }
        arm(now_ms);
        return;
    }
    if (nxt_ < output.end && rwnd_ == 0) {
        // Persist: one byte into the closed window draws the window update.
        // A receiver may keep its window closed for long: that is no
        // failure to give up on.
        backoffs_ = 0;
        send.push_back({nxt_, nxt_ + 1, false});
        ++counters_.segments;
        nxt_ += 1;
        max_sent_ = std::max(max_sent_, nxt_);
        arm(now_ms);
        return;
    }
    pump(output, now_ms, send);
}

std::string RelaySender::describe() const {
    return "una " + std::to_string(una_) + " nxt " + std::to_string(nxt_) + " max " +
           std::to_string(max_sent_) + " fin sent/acked " + std::to_string(fin_sent_) + "/" +
           std::to_string(fin_acked_) + " cwnd " + std::to_string(cwnd_) + " rwnd " +
           std::to_string(rwnd_) + " rto " + std::to_string(rto_ms_) + " deadline " +
           std::to_string(deadline_.value_or(0)) + " backoffs " + std::to_string(backoffs_);
}

}  // namespace nfqscan
