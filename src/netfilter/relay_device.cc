#include "nfqscan/relay_device.h"

#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/ip.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <system_error>

namespace nfqscan {

namespace {

std::string error_text(int error) {
    return std::error_code(error, std::generic_category()).message();
}

// A sysctl of the device's namespace, or nullopt if it cannot be read.
std::optional<int> read_sysctl(const std::string& path) {
    std::ifstream in("/proc/sys/" + path);
    int value;
    if (!(in >> value)) return std::nullopt;
    return value;
}

bool write_sysctl(const std::string& path, int value) {
    std::ofstream out("/proc/sys/" + path);
    out << value << '\n';
    out.flush();
    return bool(out);
}

class Rtnetlink {
  public:
    Rtnetlink() {
        socket_ = mnl_socket_open(NETLINK_ROUTE);
        if (!socket_ || mnl_socket_bind(socket_, 0, MNL_SOCKET_AUTOPID) < 0) {
            int saved = errno;
            if (socket_) mnl_socket_close(socket_);
            throw std::runtime_error("rtnetlink socket: " + error_text(saved));
        }
        portid_ = mnl_socket_get_portid(socket_);
    }
    ~Rtnetlink() { mnl_socket_close(socket_); }
    Rtnetlink(const Rtnetlink&) = delete;
    Rtnetlink& operator=(const Rtnetlink&) = delete;

    // RTM_NEWLINK on an existing link: flags, and attributes from `put`.
    // Returns 0 or the kernel's errno.
    int set_link(int ifindex, unsigned flags, unsigned change,
                 const std::function<void(nlmsghdr*)>& put) {
        alignas(nlmsghdr) char buffer[MNL_SOCKET_BUFFER_SIZE];
        nlmsghdr* nlh = mnl_nlmsg_put_header(buffer);
        nlh->nlmsg_type = RTM_NEWLINK;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        nlh->nlmsg_seq = ++seq_;
        auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
        ifm->ifi_family = AF_UNSPEC;
        ifm->ifi_index = ifindex;
        ifm->ifi_flags = flags;
        ifm->ifi_change = change;
        if (put) put(nlh);
        if (mnl_socket_sendto(socket_, nlh, nlh->nlmsg_len) < 0) return errno;
        ssize_t n = mnl_socket_recvfrom(socket_, buffer, sizeof buffer);
        if (n < 0) return errno;
        if (mnl_cb_run(buffer, size_t(n), seq_, portid_, nullptr, nullptr) < 0) return errno;
        return 0;
    }

  private:
    mnl_socket* socket_ = nullptr;
    unsigned portid_ = 0;
    unsigned seq_ = 0;
};

int open_queue(const std::string& name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("/dev/net/tun: " + error_text(errno));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int saved = errno;
        close(fd);
        throw std::runtime_error("TUNSETIFF " + name + ": " + error_text(saved) +
                                 (saved == EPERM ? " (needs CAP_NET_ADMIN)" : ""));
    }
    // Which GSO frames the device takes: without this the kernel refuses
    // frames with a partial checksum or a gso_type (EINVAL).
    unsigned offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (ioctl(fd, TUNSETOFFLOAD, offload) < 0) {
        int saved = errno;
        close(fd);
        throw std::runtime_error("TUNSETOFFLOAD " + name + ": " + error_text(saved));
    }
    return fd;
}

int set_rp_filter_off(Rtnetlink& rtnl, int ifindex) {
    return rtnl.set_link(ifindex, 0, 0, [](nlmsghdr* nlh) {
        nlattr* spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
        nlattr* inet = mnl_attr_nest_start(nlh, AF_INET);
        nlattr* conf = mnl_attr_nest_start(nlh, IFLA_INET_CONF);
        mnl_attr_put_u32(nlh, IPV4_DEVCONF_RP_FILTER, 0);
        mnl_attr_nest_end(nlh, conf);
        mnl_attr_nest_end(nlh, inet);
        mnl_attr_nest_end(nlh, spec);
    });
}

}  // namespace

TunQueue::~TunQueue() {
    if (fd_ >= 0) close(fd_);
}

bool TunQueue::send(std::span<const uint8_t> frame) {
    // One write is one frame; the kernel forwards it before write returns.
    ssize_t n = write(fd_, frame.data(), frame.size());
    if (n != ssize_t(frame.size())) {
        if (n >= 0) errno = EIO;
        ++counters_.failed;
        return false;
    }
    ++counters_.frames;
    return true;
}

RelayDevice open_relay_device(const std::string& name, size_t queues) {
    if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos)
        throw std::runtime_error("bad device name \"" + name + "\"");
    RelayDevice device;
    device.name = name;
    for (size_t i = 0; i < std::max<size_t>(queues, 1); ++i)
        device.queues.push_back(std::make_unique<TunQueue>(open_queue(name)));
    device.ifindex = int(if_nametoindex(name.c_str()));
    if (device.ifindex == 0) throw std::runtime_error(name + ": no such device after TUNSETIFF");

    Rtnetlink rtnl;
    // IPv4: the reverse path filter off for the device; it only helps if
    // conf/all is off too (the kernel uses the larger of the two).
    if (int error = set_rp_filter_off(rtnl, device.ifindex)) {
        device.warnings.push_back("cannot turn rp_filter off on " + name + ": " +
                                  error_text(error) + "; IPv4 relays use raw sockets");
    } else if (int all = read_sysctl("net/ipv4/conf/all/rp_filter").value_or(0); all != 0) {
        device.warnings.push_back(
            "net.ipv4.conf.all.rp_filter = " + std::to_string(all) +
            ": the kernel would drop the relay's IPv4 frames (their source is routed through "
            "another interface); IPv4 relays use raw sockets");
    } else {
        device.ipv4 = true;
    }
    // IPv6: no addresses (no link-local, no router solicitations or MLD
    // reports queueing up on a device nobody reads), but IPv6 enabled, or the
    // kernel drops what arrives on it.
    int error = rtnl.set_link(device.ifindex, 0, 0, [](nlmsghdr* nlh) {
        nlattr* spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
        nlattr* inet6 = mnl_attr_nest_start(nlh, AF_INET6);
        mnl_attr_put_u8(nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
        mnl_attr_nest_end(nlh, inet6);
        mnl_attr_nest_end(nlh, spec);
    });
    std::string disable = "net/ipv6/conf/" + name + "/disable_ipv6";
    if (error == EAFNOSUPPORT || !read_sysctl(disable)) {
        device.warnings.push_back("no IPv6 on " + name + "; IPv6 relays use raw sockets");
    } else if (read_sysctl(disable) != 0 &&
               !(write_sysctl(disable, 0) && read_sysctl(disable) == 0)) {
        device.warnings.push_back("IPv6 is disabled on " + name +
                                  " (net.ipv6.conf.default.disable_ipv6?) and cannot be enabled; "
                                  "IPv6 relays use raw sockets");
    } else {
        device.ipv6 = true;  // the address generation mode is a nicety
    }
    if (!device.ipv4 && !device.ipv6) {
        std::string why;
        for (const std::string& w : device.warnings)
            why += (why.empty() ? "" : "; ") + w;
        throw std::runtime_error(why);
    }
    if (int e = rtnl.set_link(device.ifindex, IFF_UP, IFF_UP, nullptr))
        throw std::runtime_error("cannot bring " + name + " up: " + error_text(e));
    return device;
}

std::string recheck_relay_device(const RelayDevice& device) {
    if (!device.ipv4) return "";
    std::string path = "net/ipv4/conf/" + device.name + "/rp_filter";
    std::optional<int> value = read_sysctl(path);
    if (!value || *value == 0) return "";
    try {
        Rtnetlink rtnl;
        if (int error = set_rp_filter_off(rtnl, device.ifindex))
            return "net.ipv4.conf." + device.name + ".rp_filter is " + std::to_string(*value) +
                   " and cannot be set to 0: " + error_text(error);
    } catch (const std::exception& e) {
        return e.what();
    }
    return "net.ipv4.conf." + device.name + ".rp_filter was set to " + std::to_string(*value) +
           " (udev's systemd-sysctl?); set to 0 again";
}

}  // namespace nfqscan
