#include "nfqscan/nfqueue.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <functional>
#include <sstream>
#include <system_error>

#include <spdlog/spdlog.h>

extern "C" {
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
}

namespace nfqscan {

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Room for one netlink message carrying a full 64 KiB copy of a packet.
constexpr size_t kSlotSize = 0xffff + 4096;
// Room for several verdicts carrying a full 64 KiB packet each.
constexpr size_t kVerdictBufferSize = 512 * 1024;
constexpr size_t kMaxVerdictMessage = 64;  // header + verdict + mark attributes

}  // namespace

NfQueue::NfQueue(const QueueOptions& options) : options_(options), receive_slot_size_(kSlotSize) {
    socket_ = mnl_socket_open(NETLINK_NETFILTER);
    if (!socket_) throw_errno("netlink socket");
    try {
        if (mnl_socket_bind(socket_, 0, MNL_SOCKET_AUTOPID) < 0) throw_errno("netlink bind");
        portid_ = mnl_socket_get_portid(socket_);
        int fd = mnl_socket_get_fd(socket_);
        int size = static_cast<int>(options_.socket_buffer_bytes);
        // FORCE ignores rmem_max (needs CAP_NET_ADMIN, which we have to bind anyway).
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0 &&
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0)
            throw_errno("SO_RCVBUF");
        // One sendmsg carries a batch of verdicts, some with a rewritten
        // 64 KiB packet each: it must fit the send buffer whole.
        int send_size = int(kVerdictBufferSize * 2);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &send_size, sizeof send_size) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_size, sizeof send_size);
        configure();
    } catch (...) {
        mnl_socket_close(socket_);
        throw;
    }
    receive_buffers_.resize(receive_slot_size_ * options_.batch_size);
    verdict_buffer_.resize(kVerdictBufferSize);
}

NfQueue::~NfQueue() {
    if (socket_) {
        flush();
        mnl_socket_close(socket_);  // the kernel unbinds the queue with it
    }
}

int NfQueue::fd() const {
    return mnl_socket_get_fd(socket_);
}

void NfQueue::send_config(const std::function<void(nlmsghdr*)>& fill) {
    char buffer[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = nfq_nlmsg_put(buffer, NFQNL_MSG_CONFIG, options_.queue);
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = static_cast<uint32_t>(time(nullptr));
    fill(nlh);
    if (mnl_socket_sendto(socket_, nlh, nlh->nlmsg_len) < 0) throw_errno("netlink send");
    // Wait for the kernel's acknowledgement so that errors surface here.
    char reply[MNL_SOCKET_BUFFER_SIZE];
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(socket_, reply, sizeof reply);
        if (n < 0) throw_errno("netlink receive");
        int rc =
            mnl_cb_run(reply, static_cast<size_t>(n), nlh->nlmsg_seq, portid_, nullptr, nullptr);
        if (rc < 0) throw_errno("queue " + std::to_string(options_.queue) + " configuration");
        if (rc == MNL_CB_STOP) return;
    }
}

void NfQueue::configure() {
    send_config([&](nlmsghdr* nlh) { nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND); });
    send_config([&](nlmsghdr* nlh) {
        nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 0xffff);
        nfq_nlmsg_cfg_put_qmaxlen(nlh, options_.max_queue_length);
        uint32_t flags =
            (options_.gso ? NFQA_CFG_F_GSO : 0) | (options_.fail_open ? NFQA_CFG_F_FAIL_OPEN : 0);
        uint32_t mask = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN;
        mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
        mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(mask));
    });
    fail_open_now_ = options_.fail_open;
}

void NfQueue::set_fail_open(bool on) {
    on = on && options_.fail_open;
    if (on == fail_open_now_) return;
    fail_open_now_ = on;
    if (!on) ++counters_.fail_open_suspensions;
    // Sent with the verdicts, without an acknowledgement: packets share the
    // socket, so waiting for a reply here would read them. A refusal comes
    // back as an error message and is counted like a refused verdict.
    end_accept_run();
    char* p = reserve(kMaxVerdictMessage);
    nlmsghdr* nlh = nfq_nlmsg_put(p, NFQNL_MSG_CONFIG, options_.queue);
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(on ? NFQA_CFG_F_FAIL_OPEN : 0));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_FAIL_OPEN));
    verdict_used_ += NLMSG_ALIGN(nlh->nlmsg_len);
}

size_t NfQueue::receive(PacketSink& sink) {
    const size_t slots = options_.batch_size;
    mmsghdr messages[256];
    iovec vectors[256];
    for (size_t i = 0; i < slots; ++i) {
        vectors[i] = {receive_buffers_.data() + i * receive_slot_size_, receive_slot_size_};
        messages[i] = {};
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd(), messages, static_cast<unsigned>(slots), MSG_DONTWAIT, nullptr);
    if (n < 0) {
        if (errno == ENOBUFS) {
            // The kernel could not deliver some packets (fail-open accepted
            // them); the socket stays usable.
            ++counters_.enobufs;
            return 1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        throw_errno("netlink receive");
    }
    if (n > 0) ++counters_.recv_batches;
    for (int i = 0; i < n; ++i)
        handle_datagram(static_cast<const uint8_t*>(vectors[i].iov_base), messages[i].msg_len,
                        sink);
    return static_cast<size_t>(n);
}

void NfQueue::handle_datagram(const uint8_t* data, size_t length, PacketSink& sink) {
    const nlmsghdr* nlh = reinterpret_cast<const nlmsghdr*>(data);
    int remaining = static_cast<int>(length);
    for (; mnl_nlmsg_ok(nlh, remaining); nlh = mnl_nlmsg_next(nlh, &remaining)) {
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            const nlmsgerr* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            if (err->error != 0) {
                // A verdict the kernel refused leaves its packet queued: worth
                // a log line (rate-limited by the counter).
                if (++counters_.netlink_errors <= 10)
                    spdlog::warn("queue {}: kernel refused a message: {}", options_.queue,
                                 strerror(-err->error));
            }
            continue;
        }
        if ((nlh->nlmsg_type & 0xff) != NFQNL_MSG_PACKET) continue;
        nlattr* attr[NFQA_MAX + 1] = {};
        if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR]) {
            ++counters_.netlink_errors;
            continue;
        }
        auto* header =
            static_cast<const nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
        QueuedPacket packet;
        packet.id = ntohl(header->packet_id);
        packet.hw_protocol = ntohs(header->hw_protocol);
        if (attr[NFQA_MARK]) packet.mark = ntohl(mnl_attr_get_u32(attr[NFQA_MARK]));
        if (attr[NFQA_SKB_INFO]) packet.skb_info = ntohl(mnl_attr_get_u32(attr[NFQA_SKB_INFO]));
        if (attr[NFQA_IFINDEX_INDEV])
            packet.indev = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_INDEV]));
        if (attr[NFQA_PAYLOAD]) {
            packet.data = {static_cast<const uint8_t*>(mnl_attr_get_payload(attr[NFQA_PAYLOAD])),
                           mnl_attr_get_payload_len(attr[NFQA_PAYLOAD])};
        }
        packet.original_length = attr[NFQA_CAP_LEN] ? ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN]))
                                                    : static_cast<uint32_t>(packet.data.size());
        if (packet.original_length > packet.data.size()) ++counters_.truncated;
        ++counters_.packets;
        counters_.bytes += packet.original_length;
        sink.on_packet(packet);
    }
}

char* NfQueue::reserve(size_t bytes) {
    if (verdict_used_ + bytes > verdict_buffer_.size()) send_pending();
    return verdict_buffer_.data() + verdict_used_;
}

void NfQueue::end_accept_run() {
    if (!accept_run_) return;
    accept_run_ = false;
    char* p = reserve(kMaxVerdictMessage);
    // One message accepts every packet up to this id that still waits: all of
    // them are ours to accept (nothing is held back in the run).
    int type = accept_run_count_ > 1 ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT;
    nlmsghdr* nlh = nfq_nlmsg_put(p, type, options_.queue);
    nfq_nlmsg_verdict_put(nlh, static_cast<int>(accept_run_last_), NF_ACCEPT);
    verdict_used_ += NLMSG_ALIGN(nlh->nlmsg_len);
    ++counters_.verdict_messages;
    accept_run_count_ = 0;
}

void NfQueue::accept(uint32_t id) {
    answered_.note(id);
    if (!held_.empty()) {
        verdict(id, NF_ACCEPT, std::nullopt);
        return;
    }
    ++counters_.verdicts;
    accept_run_ = true;
    accept_run_last_ = id;
    ++accept_run_count_;
}

void NfQueue::verdict(uint32_t id, uint32_t verdict, std::optional<uint32_t> mark,
                      std::span<const uint8_t> packet) {
    end_accept_run();
    if (!held_.empty()) held_.erase(id);
    answered_.note(id);
    ++counters_.verdicts;
    char* p = reserve(kMaxVerdictMessage + MNL_ALIGN(packet.size()) + MNL_ATTR_HDRLEN);
    nlmsghdr* nlh = nfq_nlmsg_put(p, NFQNL_MSG_VERDICT, options_.queue);
    nfq_nlmsg_verdict_put(nlh, static_cast<int>(id), static_cast<int>(verdict));
    if (mark) nfq_nlmsg_verdict_put_mark(nlh, *mark);
    if (!packet.empty()) {
        nfq_nlmsg_verdict_put_pkt(nlh, packet.data(), static_cast<uint32_t>(packet.size()));
        ++counters_.replaced;
    }
    verdict_used_ += NLMSG_ALIGN(nlh->nlmsg_len);
    ++counters_.verdict_messages;
}

void NfQueue::drop(uint32_t id) {
    verdict(id, NF_DROP, std::nullopt);
}

bool NfQueue::answered(uint32_t id) const {
    return answered_.covers(id);
}

void PacketGuard::on_packet(const QueuedPacket& packet) {
    try {
        inner_.on_packet(packet);
    } catch (const std::exception& e) {
        on_error(packet, e.what());
    } catch (...) {
        on_error(packet, "unknown exception");
    }
}

void PacketGuard::on_error(const QueuedPacket& packet, const char* what) {
    if (errors_++ % kLogInterval == 0)
        spdlog::error("queue {}: handling packet {} failed ({} so far): {}; dropped", queue_,
                      packet.id, errors_, what);
    if (ledger_.answered(packet.id)) return;
    ledger_.drop(packet.id);
    ++dropped_;
}

void NfQueue::flush() {
    end_accept_run();
    send_pending();
}

void NfQueue::send_pending() {
    if (verdict_used_ == 0) return;
    // A failed send leaves the packets queued; fail-open and the bypass keep
    // traffic moving if the daemon cannot recover.
    if (mnl_socket_sendto(socket_, verdict_buffer_.data(), verdict_used_) < 0 &&
        ++counters_.netlink_errors <= 10)
        spdlog::warn("queue {}: sending {} bytes of verdicts: {}", options_.queue, verdict_used_,
                     strerror(errno));
    ++counters_.verdict_batches;
    verdict_used_ = 0;
}

std::vector<KernelQueueStats> parse_kernel_queue_stats(std::string_view text) {
    std::vector<KernelQueueStats> result;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        KernelQueueStats s;
        uint64_t queue, portid, total, mode, range;
        if (fields >> queue >> portid >> total >> mode >> range >> s.queue_dropped >>
            s.user_dropped >> s.id_sequence) {
            s.queue = static_cast<uint16_t>(queue);
            s.peer_portid = static_cast<uint32_t>(portid);
            s.queue_total = static_cast<uint32_t>(total);
            s.copy_mode = static_cast<uint32_t>(mode);
            s.copy_range = static_cast<uint32_t>(range);
            result.push_back(s);
        }
    }
    return result;
}

KernelQueueStatsReader::KernelQueueStatsReader(const std::string& path)
    : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}

KernelQueueStatsReader::~KernelQueueStatsReader() {
    if (fd_ >= 0) ::close(fd_);
}

std::vector<KernelQueueStats> KernelQueueStatsReader::read() const {
    if (fd_ < 0) return {};
    // A proc seq_file regenerates its text when read from offset 0 again.
    std::string text;
    char buffer[4096];
    for (;;) {
        ssize_t n = ::pread(fd_, buffer, sizeof buffer, off_t(text.size()));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(buffer, size_t(n));
    }
    return parse_kernel_queue_stats(text);
}

}  // namespace nfqscan
