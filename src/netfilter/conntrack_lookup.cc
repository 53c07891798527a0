#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <system_error>

#include "nfqscan/conntrack.h"

namespace nfqscan {

std::optional<bool> conntrack_tcp_liberal(const char* path) {
    std::ifstream in(path);
    int value = 0;
    if (!(in >> value)) return std::nullopt;
    return value != 0;
}

namespace {

struct ConntrackDeleter {
    void operator()(nf_conntrack* ct) const { nfct_destroy(ct); }
};

Endpoint endpoint_of(const nf_conntrack* ct, bool v4, nf_conntrack_attr address,
                     nf_conntrack_attr port) {
    Endpoint e;
    const auto* a = static_cast<const uint8_t*>(nfct_get_attr(ct, address));
    if (a) e.address = v4 ? IpAddress::from_v4(a) : IpAddress::from_v6(a);
    e.port = ntohs(nfct_get_attr_u16(ct, port));
    return e;
}

ConnectionTuples tuples_of(const nf_conntrack* ct) {
    bool v4 = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO) == AF_INET;
    ConnectionTuples t;
    t.orig_src =
        endpoint_of(ct, v4, v4 ? ATTR_ORIG_IPV4_SRC : ATTR_ORIG_IPV6_SRC, ATTR_ORIG_PORT_SRC);
    t.orig_dst =
        endpoint_of(ct, v4, v4 ? ATTR_ORIG_IPV4_DST : ATTR_ORIG_IPV6_DST, ATTR_ORIG_PORT_DST);
    t.reply_src =
        endpoint_of(ct, v4, v4 ? ATTR_REPL_IPV4_SRC : ATTR_REPL_IPV6_SRC, ATTR_REPL_PORT_SRC);
    t.reply_dst =
        endpoint_of(ct, v4, v4 ? ATTR_REPL_IPV4_DST : ATTR_REPL_IPV6_DST, ATTR_REPL_PORT_DST);
    return t;
}

// A ctnetlink GET of the TCP connection with `src -> dst` as its original
// or reply tuple. Built by hand: libnetfilter_conntrack's builder takes the
// request's family from the original tuple, and a GET by the reply tuple
// alone came out invalid.
void build_get(nlmsghdr* nlh, uint32_t seq, const Endpoint& src, const Endpoint& dst, bool orig) {
    bool v4 = src.address.is_v4();
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = seq;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = v4 ? AF_INET : AF_INET6;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    nlattr* tuple = mnl_attr_nest_start(nlh, orig ? CTA_TUPLE_ORIG : CTA_TUPLE_REPLY);
    nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    if (v4) {
        mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, src.address.bytes.data() + 12);
        mnl_attr_put(nlh, CTA_IP_V4_DST, 4, dst.address.bytes.data() + 12);
    } else {
        mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, src.address.bytes.data());
        mnl_attr_put(nlh, CTA_IP_V6_DST, 16, dst.address.bytes.data());
    }
    mnl_attr_nest_end(nlh, ip);
    nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_TCP);
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(src.port));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(dst.port));
    mnl_attr_nest_end(nlh, proto);
    mnl_attr_nest_end(nlh, tuple);
}

int on_answer(const nlmsghdr* nlh, void* data) {
    std::unique_ptr<nf_conntrack, ConntrackDeleter> ct(nfct_new());
    if (!ct || nfct_nlmsg_parse(nlh, ct.get()) < 0) return MNL_CB_ERROR;
    *static_cast<std::optional<ConnectionTuples>*>(data) = tuples_of(ct.get());
    return MNL_CB_OK;
}

}  // namespace

ConntrackLookup::ConntrackLookup() : socket_(mnl_socket_open(NETLINK_NETFILTER)) {
    if (!socket_ || mnl_socket_bind(socket_, 0, MNL_SOCKET_AUTOPID) < 0) {
        int error = errno;
        if (socket_) mnl_socket_close(socket_);
        throw std::system_error(error, std::generic_category(), "ctnetlink");
    }
    // An answer that never comes must not stall the worker.
    timeval timeout{0, 200'000};
    setsockopt(mnl_socket_get_fd(socket_), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
}

ConntrackLookup::~ConntrackLookup() {
    mnl_socket_close(socket_);
}

std::optional<ConnectionTuples> ConntrackLookup::find(const Endpoint& src, const Endpoint& dst,
                                                      bool orig) {
    alignas(nlmsghdr) char buffer[MNL_SOCKET_BUFFER_SIZE];
    nlmsghdr* nlh = mnl_nlmsg_put_header(buffer);
    uint32_t seq = ++seq_;
    build_get(nlh, seq, src, dst, orig);
    if (mnl_socket_sendto(socket_, nlh, nlh->nlmsg_len) < 0) return std::nullopt;
    std::optional<ConnectionTuples> found;
    uint32_t port = mnl_socket_get_portid(socket_);
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(socket_, buffer, sizeof buffer);
        if (n <= 0) return std::nullopt;
        int rc = mnl_cb_run(buffer, size_t(n), seq, port, on_answer, &found);
        if (rc <= MNL_CB_STOP) break;  // the ACK (or an error: no such entry)
    }
    if (!found) return std::nullopt;
    // The entry asked for (the answer is matched by sequence number too).
    bool same = orig ? found->orig_src == src && found->orig_dst == dst
                     : found->reply_src == src && found->reply_dst == dst;
    if (!same) return std::nullopt;
    return found;
}

}  // namespace nfqscan
