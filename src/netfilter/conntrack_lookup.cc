#include <arpa/inet.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

#include "nfqscan/conntrack.h"

namespace nfqscan {

namespace {

struct ConntrackDeleter {
    void operator()(nf_conntrack* ct) const { nfct_destroy(ct); }
};

void set_endpoints(nf_conntrack* ct, const Endpoint& src, const Endpoint& dst, bool orig) {
    bool v4 = src.address.is_v4();
    if (orig) {
        nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, v4 ? AF_INET : AF_INET6);
        nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, IPPROTO_TCP);
        if (v4) {
            nfct_set_attr(ct, ATTR_ORIG_IPV4_SRC, src.address.bytes.data() + 12);
            nfct_set_attr(ct, ATTR_ORIG_IPV4_DST, dst.address.bytes.data() + 12);
        } else {
            nfct_set_attr(ct, ATTR_ORIG_IPV6_SRC, src.address.bytes.data());
            nfct_set_attr(ct, ATTR_ORIG_IPV6_DST, dst.address.bytes.data());
        }
        nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(src.port));
        nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(dst.port));
    } else {
        nfct_set_attr_u8(ct, ATTR_REPL_L3PROTO, v4 ? AF_INET : AF_INET6);
        nfct_set_attr_u8(ct, ATTR_REPL_L4PROTO, IPPROTO_TCP);
        if (v4) {
            nfct_set_attr(ct, ATTR_REPL_IPV4_SRC, src.address.bytes.data() + 12);
            nfct_set_attr(ct, ATTR_REPL_IPV4_DST, dst.address.bytes.data() + 12);
        } else {
            nfct_set_attr(ct, ATTR_REPL_IPV6_SRC, src.address.bytes.data());
            nfct_set_attr(ct, ATTR_REPL_IPV6_DST, dst.address.bytes.data());
        }
        nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, htons(src.port));
        nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, htons(dst.port));
    }
}

Endpoint endpoint_of(const nf_conntrack* ct, bool v4, nf_conntrack_attr address,
                     nf_conntrack_attr port) {
    Endpoint e;
    const auto* a = static_cast<const uint8_t*>(nfct_get_attr(ct, address));
    if (a) e.address = v4 ? IpAddress::from_v4(a) : IpAddress::from_v6(a);
    e.port = ntohs(nfct_get_attr_u16(ct, port));
    return e;
}

int on_entry(enum nf_conntrack_msg_type, nf_conntrack* ct, void* data) {
    auto* out = static_cast<std::optional<ConnectionTuples>*>(data);
    bool v4 = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO) == AF_INET;
    ConnectionTuples t;
    t.orig_src = endpoint_of(ct, v4, v4 ? ATTR_ORIG_IPV4_SRC : ATTR_ORIG_IPV6_SRC,
                             ATTR_ORIG_PORT_SRC);
    t.orig_dst = endpoint_of(ct, v4, v4 ? ATTR_ORIG_IPV4_DST : ATTR_ORIG_IPV6_DST,
                             ATTR_ORIG_PORT_DST);
    t.reply_src = endpoint_of(ct, v4, v4 ? ATTR_REPL_IPV4_SRC : ATTR_REPL_IPV6_SRC,
                              ATTR_REPL_PORT_SRC);
    t.reply_dst = endpoint_of(ct, v4, v4 ? ATTR_REPL_IPV4_DST : ATTR_REPL_IPV6_DST,
                              ATTR_REPL_PORT_DST);
    *out = t;
    // Not STOP: the library must read the rest of the answer (its ACK), or
    // the next query on this socket reads it as its own answer.
    return NFCT_CB_CONTINUE;
}

}  // namespace

ConntrackLookup::ConntrackLookup() : handle_(nfct_open(CONNTRACK, 0)) {
    if (!handle_) throw std::system_error(errno, std::generic_category(), "ctnetlink");
}

ConntrackLookup::~ConntrackLookup() {
    if (handle_) nfct_close(handle_);
}

std::optional<ConnectionTuples> ConntrackLookup::find(const Endpoint& src, const Endpoint& dst,
                                                      bool orig) {
    std::unique_ptr<nf_conntrack, ConntrackDeleter> ct(nfct_new());
    if (!ct) return std::nullopt;
    set_endpoints(ct.get(), src, dst, orig);
    std::optional<ConnectionTuples> found;
    nfct_callback_register(handle_, NFCT_T_ALL, on_entry, &found);
    int rc = nfct_query(handle_, NFCT_Q_GET, ct.get());
    nfct_callback_unregister(handle_);
    if (rc < 0 || !found) return std::nullopt;
    // The entry asked for, not another answer left on the socket.
    bool same = orig ? found->orig_src == src && found->orig_dst == dst
                     : found->reply_src == src && found->reply_dst == dst;
    if (!same) return std::nullopt;
    return found;
}

}  // namespace nfqscan
