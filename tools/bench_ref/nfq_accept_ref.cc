// nfq-accept-ref: the minimal accept-all NFQUEUE consumer that tools/bench
// compares nfqscand with. It sets its queues up as nfqscand does (libmnl and
// libnetfilter_queue's nlmsg API, NFQA_CFG_F_GSO, fail-open, copy range
// 0xffff, a 64 MiB SO_RCVBUFFORCE receive buffer, recvmmsg batches of 32, one
// sendmsg per batch carrying one NFQNL_MSG_VERDICT_BATCH) and does nothing
// else: no decoding, no flow table, no classification. The gap between the
// two is what nfqscand's own work costs.
//
//   nfq-accept-ref [--queues N|N-M] [--batch N] [--rcvbuf-mb N] [--no-gso]
//                  [--stats FILE]
//
// One thread per queue. SIGUSR1 writes the counters as one JSON object to
// FILE (atomically: FILE.tmp then rename); SIGTERM/SIGINT stop, write them a
// last time and print them.
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
}

namespace {

constexpr size_t kSlotSize = 0xffff + 4096;  // one message with a 64 KiB packet copy
constexpr size_t kMaxBatch = 256;

struct Options {
    unsigned first_queue = 0, last_queue = 1;
    unsigned batch = 32;
    unsigned rcvbuf_mb = 64;
    bool gso = true;
    std::string stats_path;
};

struct Counters {
    std::atomic<uint64_t> packets{0}, bytes{0}, verdict_messages{0}, verdict_batches{0},
        recv_batches{0}, enobufs{0}, send_errors{0};
};

std::atomic<bool> g_running{true};

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "nfq-accept-ref: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

class Queue {
  public:
    Queue(unsigned number, const Options& options) : number_(number), options_(options) {
        socket_ = mnl_socket_open(NETLINK_NETFILTER);
        if (!socket_) die("netlink socket");
        if (mnl_socket_bind(socket_, 0, MNL_SOCKET_AUTOPID) < 0) die("netlink bind");
        portid_ = mnl_socket_get_portid(socket_);
        int size = static_cast<int>(options.rcvbuf_mb << 20);
        int fd = mnl_socket_get_fd(socket_);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0 &&
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0)
            die("SO_RCVBUF");
        configure([&](nlmsghdr* nlh) { nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND); });
        configure([&](nlmsghdr* nlh) {
            nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 0xffff);
            nfq_nlmsg_cfg_put_qmaxlen(nlh, 8192);
            uint32_t flags = (options.gso ? NFQA_CFG_F_GSO : 0) | NFQA_CFG_F_FAIL_OPEN;
            mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
            mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN));
        });
        buffers_.resize(kSlotSize * options.batch);
    }

    ~Queue() { mnl_socket_close(socket_); }
    Queue(const Queue&) = delete;
    Queue& operator=(const Queue&) = delete;

    const Counters& counters() const { return counters_; }
    unsigned number() const { return number_; }

    void run() {
        std::string name = "nfq-ref-" + std::to_string(number_);
        pthread_setname_np(pthread_self(), name.c_str());
        pollfd p{mnl_socket_get_fd(socket_), POLLIN, 0};
        while (g_running.load(std::memory_order_relaxed)) {
            int ready = poll(&p, 1, 200);
            if (ready < 0 && errno != EINTR) die("poll");
            if (ready <= 0) continue;
            // Drain what waits, answering each batch at once (as nfqscand does).
            while (receive_and_answer() == options_.batch) {
            }
        }
    }

  private:
    template <class Fill>
    void configure(Fill fill) {
        char buffer[MNL_SOCKET_BUFFER_SIZE];
        nlmsghdr* nlh = nfq_nlmsg_put(buffer, NFQNL_MSG_CONFIG, number_);
        nlh->nlmsg_flags |= NLM_F_ACK;
        nlh->nlmsg_seq = ++seq_;
        fill(nlh);
        if (mnl_socket_sendto(socket_, nlh, nlh->nlmsg_len) < 0) die("netlink send");
        char reply[MNL_SOCKET_BUFFER_SIZE];
        for (;;) {
            ssize_t n = mnl_socket_recvfrom(socket_, reply, sizeof reply);
            if (n < 0) die("netlink receive");
            int rc = mnl_cb_run(reply, static_cast<size_t>(n), seq_, portid_, nullptr, nullptr);
            if (rc < 0) die("queue " + std::to_string(number_) + " configuration");
            if (rc == MNL_CB_STOP) return;
        }
    }

    // One recvmmsg, one sendmsg. Returns the number of datagrams read.
    unsigned receive_and_answer() {
        mmsghdr messages[kMaxBatch];
        iovec vectors[kMaxBatch];
        for (unsigned i = 0; i < options_.batch; ++i) {
            vectors[i] = {buffers_.data() + i * kSlotSize, kSlotSize};
            messages[i] = {};
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        int n =
            recvmmsg(mnl_socket_get_fd(socket_), messages, options_.batch, MSG_DONTWAIT, nullptr);
        if (n < 0) {
            if (errno == ENOBUFS) {
                counters_.enobufs.fetch_add(1, std::memory_order_relaxed);
                return 1;  // the socket stays usable; keep draining
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            die("recvmmsg");
        }
        if (n == 0) return 0;
        counters_.recv_batches.fetch_add(1, std::memory_order_relaxed);
        uint32_t last_id = 0, packets = 0;
        uint64_t bytes = 0;
        for (int i = 0; i < n; ++i) {
            const auto* nlh = reinterpret_cast<const nlmsghdr*>(vectors[i].iov_base);
            int remaining = static_cast<int>(messages[i].msg_len);
            for (; mnl_nlmsg_ok(nlh, remaining); nlh = mnl_nlmsg_next(nlh, &remaining)) {
                if ((nlh->nlmsg_type & 0xff) != NFQNL_MSG_PACKET) continue;
                nlattr* attr[NFQA_MAX + 1] = {};
                if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR]) continue;
                auto* header = static_cast<const nfqnl_msg_packet_hdr*>(
                    mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
                uint32_t id = ntohl(header->packet_id);
                if (id > last_id) last_id = id;
                ++packets;
                bytes += attr[NFQA_CAP_LEN]   ? ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN]))
                         : attr[NFQA_PAYLOAD] ? mnl_attr_get_payload_len(attr[NFQA_PAYLOAD])
                                              : 0;
            }
        }
        if (packets > 0) {
            // Ids grow per queue: one message accepts every packet up to last_id.
            char buffer[MNL_SOCKET_BUFFER_SIZE];
            int type = packets > 1 ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT;
            nlmsghdr* out = nfq_nlmsg_put(buffer, type, number_);
            nfq_nlmsg_verdict_put(out, static_cast<int>(last_id), NF_ACCEPT);
            if (mnl_socket_sendto(socket_, out, out->nlmsg_len) < 0)
                counters_.send_errors.fetch_add(1, std::memory_order_relaxed);
            counters_.verdict_messages.fetch_add(1, std::memory_order_relaxed);
            counters_.verdict_batches.fetch_add(1, std::memory_order_relaxed);
            counters_.packets.fetch_add(packets, std::memory_order_relaxed);
            counters_.bytes.fetch_add(bytes, std::memory_order_relaxed);
        }
        return static_cast<unsigned>(n);
    }

    unsigned number_;
    const Options& options_;
    mnl_socket* socket_ = nullptr;
    uint32_t portid_ = 0;
    uint32_t seq_ = 0;
    std::vector<char> buffers_;
    Counters counters_;
};

std::string stats_json(const std::vector<std::unique_ptr<Queue>>& queues, uint64_t seq) {
    std::string out = "{\"seq\": " + std::to_string(seq) + ", \"queues\": [";
    for (size_t i = 0; i < queues.size(); ++i) {
        const Counters& c = queues[i]->counters();
        char line[512];
        std::snprintf(line, sizeof line,
                      "%s{\"queue\": %u, \"packets\": %" PRIu64 ", \"bytes\": %" PRIu64
                      ", \"verdict_messages\": %" PRIu64 ", \"verdict_batches\": %" PRIu64
                      ", \"recv_batches\": %" PRIu64 ", \"enobufs\": %" PRIu64
                      ", \"send_errors\": %" PRIu64 "}",
                      i ? ", " : "", queues[i]->number(), c.packets.load(), c.bytes.load(),
                      c.verdict_messages.load(), c.verdict_batches.load(), c.recv_batches.load(),
                      c.enobufs.load(), c.send_errors.load());
        out += line;
    }
    return out + "]}\n";
}

void write_stats(const std::string& path, const std::string& text) {
    if (path.empty()) return;
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) die("open " + tmp);
    std::fputs(text.c_str(), f);
    if (std::fclose(f) != 0) die("write " + tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) die("rename " + tmp);
}

unsigned parse_number(const char* text, const char* what) {
    char* end = nullptr;
    unsigned long value = std::strtoul(text, &end, 10);
    if (!*text || (*end && *end != '-') || value > 65535) {
        std::fprintf(stderr, "nfq-accept-ref: bad %s: %s\n", what, text);
        std::exit(2);
    }
    return static_cast<unsigned>(value);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "nfq-accept-ref: %s needs a value\n", arg.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--queues") {
            const char* spec = value();
            o.first_queue = o.last_queue = parse_number(spec, "queue");
            if (const char* dash = std::strchr(spec, '-'))
                o.last_queue = parse_number(dash + 1, "queue");
        } else if (arg == "--batch") {
            o.batch = parse_number(value(), "batch");
        } else if (arg == "--rcvbuf-mb") {
            o.rcvbuf_mb = parse_number(value(), "buffer size");
        } else if (arg == "--no-gso") {
            o.gso = false;
        } else if (arg == "--stats") {
            o.stats_path = value();
        } else {
            std::fprintf(stderr,
                         "usage: nfq-accept-ref [--queues N|N-M] [--batch N] [--rcvbuf-mb N] "
                         "[--no-gso] [--stats FILE]\n");
            std::exit(2);
        }
    }
    if (o.last_queue < o.first_queue || o.batch < 1 || o.batch > kMaxBatch || o.rcvbuf_mb < 1 ||
        o.rcvbuf_mb > 2047) {
        std::fprintf(stderr, "nfq-accept-ref: bad queue range, batch (1-%zu) or buffer size\n",
                     kMaxBatch);
        std::exit(2);
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    Options options = parse_options(argc, argv);

    // Signals are taken by the main thread only (sigwait): block them before
    // any thread starts.
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGUSR1})
        sigaddset(&signals, s);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    std::vector<std::unique_ptr<Queue>> queues;
    for (unsigned q = options.first_queue; q <= options.last_queue; ++q)
        queues.push_back(std::make_unique<Queue>(q, options));
    std::vector<std::thread> threads;
    for (auto& q : queues)
        threads.emplace_back([&q] { q->run(); });
    std::printf("nfq-accept-ref: queues %u-%u bound, batch %u, buffer %u MiB, gso %s\n",
                options.first_queue, options.last_queue, options.batch, options.rcvbuf_mb,
                options.gso ? "on" : "off");
    std::fflush(stdout);

    uint64_t seq = 0;
    for (;;) {
        int sig = 0;
        if (sigwait(&signals, &sig) != 0) continue;
        if (sig == SIGUSR1) {
            write_stats(options.stats_path, stats_json(queues, ++seq));
            continue;
        }
        break;
    }
    g_running = false;
    for (auto& t : threads)
        t.join();
    std::string final_stats = stats_json(queues, ++seq);
    write_stats(options.stats_path, final_stats);
    std::fputs(final_stats.c_str(), stdout);
    queues.clear();  // closing the sockets unbinds the queues
    return 0;
}
