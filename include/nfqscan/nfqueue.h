// NFQUEUE I/O on one queue: binds with libmnl and libnetfilter_queue's nlmsg
// API, receives packets in batches (recvmmsg), and sends verdicts back in one
// sendmsg per batch. Consecutive plain accepts are coalesced into a single
// NFQNL_MSG_VERDICT_BATCH message ("every id up to N").
//
// Options that matter for speed (DESIGN.md, measured): GSO super-packets
// (NFQA_CFG_F_GSO, ~20x fewer messages), a large receive buffer
// (SO_RCVBUFFORCE), batched verdicts. Fail-open lets the kernel accept rather
// than drop when the queue is full. ENOBUFS (the socket buffer overflowed) is
// counted and survived.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

struct mnl_socket;
struct nlmsghdr;

namespace nfqscan {

struct QueuedPacket {
    uint32_t id = 0;
    uint16_t hw_protocol = 0;  // ETH_P_IP / ETH_P_IPV6, host order
    uint32_t mark = 0;
    uint32_t original_length = 0;   // before the copy range cut it
    uint32_t skb_info = 0;          // NFQA_SKB_* (GSO, checksum not ready)
    uint32_t indev = 0;             // ifindex the packet came in on (0: none, e.g. local)
    std::span<const uint8_t> data;  // the IP packet
};

class PacketSink {
  public:
    virtual ~PacketSink() = default;
    virtual void on_packet(const QueuedPacket& packet) = 0;
};

// The newest packet id a queue answered (a verdict, or held for one). Ids
// wrap at 2^32; packets are handled in the order they are read, so the one
// being handled was answered when its id is not after the newest.
class AnsweredIds {
  public:
    void note(uint32_t id) {
        if (!any_ || int32_t(id - newest_) > 0) newest_ = id;
        any_ = true;
    }
    bool covers(uint32_t id) const { return any_ && int32_t(newest_ - id) >= 0; }

  private:
    uint32_t newest_ = 0;
    bool any_ = false;
};

// What a PacketGuard needs of a queue (NfQueue, or a test's stand-in).
class VerdictLedger {
  public:
    virtual ~VerdictLedger() = default;
    // Whether the packet has its verdict, or is held for one (of the packets
    // read so far, the newest).
    virtual bool answered(uint32_t id) const = 0;
    virtual void drop(uint32_t id) = 0;
};

// Hands each packet to `inner`. A packet whose handling threw gets a drop
// verdict unless it was answered before the throw: never a silent accept
// (a batch verdict after it would accept it, uninspected, at numbers a
// stream may have shifted), never a packet left without a verdict (it
// would sit in the kernel queue). The sender sends it again. Logged at most
// once per kLogInterval, counted in `dropped`.
class PacketGuard final : public PacketSink {
  public:
    PacketGuard(PacketSink& inner, VerdictLedger& ledger, uint16_t queue)
        : inner_(inner), ledger_(ledger), queue_(queue) {}
    void on_packet(const QueuedPacket& packet) override;
    uint64_t dropped() const { return dropped_; }  // packets dropped after a throw
    uint64_t errors() const { return errors_; }    // handling that threw

    static constexpr uint64_t kLogInterval = 1000;  // errors between log lines

  private:
    void on_error(const QueuedPacket& packet, const char* what);

    PacketSink& inner_;
    VerdictLedger& ledger_;
    uint16_t queue_;
    uint64_t dropped_ = 0, errors_ = 0;
};

struct QueueCounters;

// What a worker's packet handling needs of its queue: NfQueue live, a
// recorder when it replays a capture (replay.h).
class VerdictQueue : public VerdictLedger {
  public:
    virtual uint16_t queue() const = 0;
    virtual void accept(uint32_t id) = 0;
    // `packet`, when given, replaces the packet (headers included).
    virtual void verdict(uint32_t id, uint32_t verdict, std::optional<uint32_t> mark,
                         std::span<const uint8_t> packet = {}) = 0;
    // A packet kept without a verdict for now.
    virtual void hold(uint32_t id) = 0;
    virtual const QueueCounters& counters() const = 0;
    virtual void set_fail_open(bool on) = 0;
    virtual bool fail_open() const = 0;
};

struct QueueCounters {
    uint64_t packets = 0;
    uint64_t bytes = 0;
    uint64_t verdicts = 0;          // packets given a verdict
    uint64_t verdict_messages = 0;  // netlink messages carrying them
    uint64_t verdict_batches = 0;   // sendmsg calls
    uint64_t recv_batches = 0;      // recvmmsg calls that returned data
    uint64_t enobufs = 0;
    uint64_t netlink_errors = 0;         // error replies from the kernel
    uint64_t truncated = 0;              // packets longer than the copy range
    uint64_t replaced = 0;               // verdicts carrying a rewritten packet
    uint64_t fail_open_suspensions = 0;  // set_fail_open(false) that changed it
};

struct QueueOptions {
    uint16_t queue = 0;
    uint32_t socket_buffer_bytes = 64u << 20;
    uint32_t max_queue_length = 8192;
    bool fail_open = true;
    bool gso = true;
    uint32_t batch_size = 32;
};

class NfQueue final : public VerdictQueue {
  public:
    // Binds the queue; throws std::system_error (e.g. EBUSY: another process
    // is bound, EPERM: no CAP_NET_ADMIN).
    explicit NfQueue(const QueueOptions& options);
    ~NfQueue();
    NfQueue(const NfQueue&) = delete;
    NfQueue& operator=(const NfQueue&) = delete;

    int fd() const;
    uint16_t queue() const override { return options_.queue; }

    // Reads what is waiting (one recvmmsg, non-blocking) and hands each packet
    // to `sink`. Returns the number of datagrams read; 0 when none waited.
    size_t receive(PacketSink& sink);

    // Verdicts, sent at the next flush(). Ids arrive in increasing order.
    void accept(uint32_t id) override;
    void drop(uint32_t id) override;
    // `packet`, when given, replaces the packet (headers included).
    void verdict(uint32_t id, uint32_t verdict, std::optional<uint32_t> mark,
                 std::span<const uint8_t> packet = {}) override;
    void flush();

    // A packet kept without a verdict for now. While any is held, accepts are
    // not coalesced into batch verdicts (those would accept it too).
    void hold(uint32_t id) override {
        held_.insert(id);
        answered_.note(id);
    }
    size_t held() const { return held_.size(); }
    bool answered(uint32_t id) const override;

    const QueueCounters& counters() const override { return counters_; }

    // Fail-open (when configured) turned off or on again, with the next
    // flush(). A packet the kernel accepts on its own bypasses nfqscand: fine
    // for a flow nfqscand only watches, but a flow whose sequence numbers are
    // shifted or whose data a relay stores would get a packet the receiver
    // misreads (bytes at the wrong offset). The owner turns fail-open off
    // while such a flow lives on the queue.
    void set_fail_open(bool on) override;
    bool fail_open() const override { return fail_open_now_; }

  private:
    void configure();
    void send_config(const std::function<void(nlmsghdr*)>& fill);
    void end_accept_run();
    void send_pending();
    char* reserve(size_t bytes);
    void handle_datagram(const uint8_t* data, size_t length, PacketSink& sink);

    QueueOptions options_;
    mnl_socket* socket_ = nullptr;
    uint32_t portid_ = 0;

    // Receive side: one buffer per message slot of recvmmsg.
    std::vector<uint8_t> receive_buffers_;
    size_t receive_slot_size_;

    // Verdict side.
    std::vector<char> verdict_buffer_;
    size_t verdict_used_ = 0;
    bool accept_run_ = false;
    uint32_t accept_run_last_ = 0;
    uint32_t accept_run_count_ = 0;
    std::unordered_set<uint32_t> held_;
    AnsweredIds answered_;
    bool fail_open_now_ = false;

    QueueCounters counters_;
};

// The kernel's view of a queue, from /proc/net/netfilter/nfnetlink_queue of
// the caller's network namespace.
struct KernelQueueStats {
    uint16_t queue = 0;
    uint32_t peer_portid = 0;
    uint32_t queue_total = 0;  // packets waiting for a verdict now
    uint32_t copy_mode = 0;
    uint32_t copy_range = 0;
    uint64_t queue_dropped = 0;  // dropped: queue full (without fail-open)
    uint64_t user_dropped = 0;   // dropped: netlink could not deliver
    uint64_t id_sequence = 0;    // last packet id: packets queued so far
};

std::vector<KernelQueueStats> parse_kernel_queue_stats(std::string_view text);

// The kernel's queue table, opened once (the file is root's, mode 0440) and
// read again at every call: nfqscand opens it before it switches to its
// account. Empty when it could not be opened (a unit started as the account
// directly) or read.
class KernelQueueStatsReader {
  public:
    explicit KernelQueueStatsReader(
        const std::string& path = "/proc/net/netfilter/nfnetlink_queue");
    ~KernelQueueStatsReader();
    KernelQueueStatsReader(const KernelQueueStatsReader&) = delete;
    KernelQueueStatsReader& operator=(const KernelQueueStatsReader&) = delete;

    bool open() const { return fd_ >= 0; }
    std::vector<KernelQueueStats> read() const;

  private:
    int fd_ = -1;
};

}  // namespace nfqscan
