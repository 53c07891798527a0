#include "nfqscan/privileges.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "nfqscan/unique_fd.h"

namespace nfqscan {

namespace {

// CAP_NET_ADMIN: NFQUEUE (every verdict is a netlink message the kernel
// checks), conntrack lookups, the relay device's rtnetlink settings, SO_MARK,
// the queue's forced receive buffer. CAP_NET_RAW: the raw injection sockets,
// opened by the workers on first use.
constexpr std::array<cap_value_t, 2> kKept = {CAP_NET_ADMIN, CAP_NET_RAW};

struct CapFree {
    void operator()(void* caps) const { cap_free(caps); }
};
using Caps = std::unique_ptr<std::remove_pointer_t<cap_t>, CapFree>;

[[noreturn]] void fail(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

bool kept(cap_value_t cap) {
    for (cap_value_t k : kKept)
        if (k == cap) return true;
    return false;
}

bool has(cap_t caps, cap_value_t cap, cap_flag_t set) {
    cap_flag_value_t value = CAP_CLEAR;
    return cap_get_flag(caps, cap, set, &value) == 0 && value == CAP_SET;
}

size_t thread_count() {
    std::error_code ec;
    size_t n = 0;
    for (std::filesystem::directory_iterator it("/proc/self/task", ec), end; !ec && it != end;
         it.increment(ec))
        ++n;
    if (ec) throw std::system_error(ec, "/proc/self/task");
    return n;
}

// Shrinking the bounding set needs CAP_SETPCAP (root has it, a unit's user
// does not: systemd's CapabilityBoundingSet= did it already).
void shrink_bounding_set() {
    // cap_max_bits(): what the running kernel knows, newer than the headers maybe.
    for (cap_value_t cap = 0; cap < cap_max_bits(); ++cap) {
        if (kept(cap) || prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            fail(fmt::format("dropping {} from the bounding set", cap));
    }
}

void switch_user(const Account& account) {
    // Without it the uid change would clear the permitted set too.
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) fail("PR_SET_KEEPCAPS");
    // The account's own groups (as systemd's User= gives them), not root's.
    if (initgroups(account.name.c_str(), account.gid) < 0) fail("initgroups " + account.name);
    if (setresgid(account.gid, account.gid, account.gid) < 0)
        fail(fmt::format("setresgid {}", account.gid));
    if (setresuid(account.uid, account.uid, account.uid) < 0)
        fail(fmt::format("setresuid {}", account.uid));
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) fail("PR_SET_KEEPCAPS");
    // No way back (a kernel that let these succeed would make the switch a
    // pretence).
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
        throw std::runtime_error("root could be regained after switching to " + account.name);
}

// Permitted and effective: the kept capabilities the process has; inheritable
// and ambient: nothing (nfqscand never executes a program).
void trim_capabilities() {
    Caps current(cap_get_proc());
    Caps wanted(cap_init());
    if (!current || !wanted) fail("cap_get_proc");
    for (cap_value_t cap : kKept) {
        if (!has(current.get(), cap, CAP_PERMITTED)) continue;
        if (cap_set_flag(wanted.get(), CAP_PERMITTED, 1, &cap, CAP_SET) < 0 ||
            cap_set_flag(wanted.get(), CAP_EFFECTIVE, 1, &cap, CAP_SET) < 0)
            fail("cap_set_flag");
    }
    if (cap_set_proc(wanted.get()) < 0) fail("cap_set_proc");
    // Lowering the permitted set already cleared the ambient set; old kernels
    // without ambient capabilities answer EINVAL.
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        fail("PR_CAP_AMBIENT_CLEAR_ALL");
}

}  // namespace

std::optional<Account> configured_account(const DaemonConfig& daemon, const std::string& source) {
    if (daemon.user.empty()) return std::nullopt;
    errno = 0;
    const passwd* pw = getpwnam(daemon.user.c_str());
    if (pw == nullptr)
        throw ConfigError(
            source, daemon.user_line, "daemon.user",
            fmt::format("no user named \"{}\" on this machine{} (systemd-sysusers "
                        "nfqscan.sysusers.conf creates it, as tools/setup does; user = \"\" "
                        "keeps the account nfqscand was started as)",
                        daemon.user, daemon.user_line == 0 ? " (the default)" : ""));
    return Account{daemon.user, pw->pw_uid, pw->pw_gid};
}

bool switches_user(const std::optional<Account>& account) {
    return account && geteuid() == 0 && account->uid != 0;
}

void create_owned_directories(const std::filesystem::path& dir, const Account& account) {
    std::filesystem::path path;
    for (const std::filesystem::path& part : dir.lexically_normal()) {
        path /= part;
        if (part.empty() || path == path.root_path()) continue;
        if (mkdir(path.c_str(), 0755) < 0) {
            if (errno == EEXIST) continue;
            fail("creating " + path.string());
        }
        // Opened without following a link: a folder swapped for a symbolic
        // link after the mkdir must not make root chown its target.
        UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd || fchown(fd.get(), account.uid, account.gid) < 0)
            fail(fmt::format("giving {} to {}", path.string(), account.name));
    }
}

void give_file_to(const std::filesystem::path& file, const Account& account) {
    UniqueFd fd(open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return;
        fail("opening " + file.string());
    }
    struct stat st {};
    if (fstat(fd.get(), &st) < 0) fail("stat " + file.string());
    if (!S_ISREG(st.st_mode)) throw std::runtime_error(file.string() + " is not a regular file");
    if (st.st_uid == account.uid) return;
    if (fchown(fd.get(), account.uid, account.gid) < 0)
        fail(fmt::format("giving {} to {}", file.string(), account.name));
}

void drop_privileges(const std::optional<Account>& account, const std::string& source,
                     uint32_t line) {
    if (!account) return;
    if (size_t threads = thread_count(); threads != 1)
        throw std::logic_error(fmt::format(
            "privileges dropped with {} threads running: threads started before keep every "
            "capability",
            threads));
    if (geteuid() != 0 && getuid() != account->uid)
        throw ConfigError(source, line, "daemon.user",
                          fmt::format("nfqscand runs as uid {}, neither root nor {} (uid {}): it "
                                      "cannot switch; start it as root or as {}, or set user = "
                                      "\"\"",
                                      getuid(), account->name, account->uid, account->name));
    {
        Caps current(cap_get_proc());
        if (!current) fail("cap_get_proc");
        if (has(current.get(), CAP_SETPCAP, CAP_EFFECTIVE)) shrink_bounding_set();
    }
    if (switches_user(account)) switch_user(*account);
    trim_capabilities();
    // Inherited by the scanner processes too; nothing nfqscand runs may gain
    // privileges through a set-user-ID or file-capability program.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("PR_SET_NO_NEW_PRIVS");
}

std::string describe_privileges() {
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    const passwd* pw = getpwuid(euid);
    std::string groups;
    std::vector<gid_t> list(size_t(std::max(0, getgroups(0, nullptr))));
    list.resize(size_t(std::max(0, getgroups(int(list.size()), list.data()))));
    for (gid_t g : list)
        groups += (groups.empty() ? "" : ",") + std::to_string(g);
    std::string caps = "?";
    if (Caps current{cap_get_proc()}) {
        if (char* text = cap_to_text(current.get(), nullptr)) {
            caps = text;
            cap_free(text);
        }
    }
    return fmt::format("user {} (uid {}, gid {}, groups {}), capabilities \"{}\"",
                       pw ? pw->pw_name : std::to_string(euid), euid, egid,
                       groups.empty() ? "none" : groups, caps);
}

}  // namespace nfqscan
