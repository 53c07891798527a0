// Least privilege for nfqscand: the account it runs as and the two
// capabilities it keeps. Started as root (by hand, the lab), nfqscand opens
// what needs root (the relay device, the control socket), then calls
// drop_privileges() before its first thread exists: capabilities belong to
// threads, so every thread it starts later inherits exactly what is left.
// Started by systemd as the account (User=, AmbientCapabilities=), the same
// call only trims the capability sets. README "Security model" has the whole
// picture (the scanner processes' sandbox is in src/scan).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "nfqscan/config.h"

namespace nfqscan {

// A user account of the machine, resolved from its name.
struct Account {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;  // its primary group
};

// [daemon] user resolved: nullopt for "" (stay as started). An unknown name
// throws ConfigError naming the file, the line and daemon.user.
std::optional<Account> configured_account(const DaemonConfig& daemon, const std::string& source);

// Whether drop_privileges(account) will change the process's user: it runs
// as root and `account` is another user. Then the folders it writes must be
// made the account's first (prepare_owned_path).
bool switches_user(const std::optional<Account>& account);

// Makes `dir` and its missing parents exist; the ones created here belong to
// `account` (what systemd's RuntimeDirectory= and LogsDirectory= do for the
// unit). Existing folders are left as they are.
void create_owned_directories(const std::filesystem::path& dir, const Account& account);

// Gives an existing file of the daemon's own (the event log, left by a run
// as root) to `account`, so the daemon can still append to it after the
// switch. A missing file is not an error.
void give_file_to(const std::filesystem::path& file, const Account& account);

// Leaves the process running as `account` (when started as root: its
// supplementary groups, gid and uid, with no way back) with exactly
// CAP_NET_ADMIN and CAP_NET_RAW permitted and effective (those of them it
// had), nothing inheritable or ambient, a bounding set of those two (when it
// was allowed to shrink it) and no_new_privs. nullopt changes nothing.
// Must run while the process has one thread (std::logic_error otherwise).
// Throws std::runtime_error when a step fails (the process must then exit:
// it may be half switched), and ConfigError when the account cannot be
// reached (started as another user than root or the account).
void drop_privileges(const std::optional<Account>& account, const std::string& source,
                     uint32_t line);

// "user nfqscan (uid 998, gid 998), capabilities cap_net_admin,cap_net_raw=ep":
// what the process runs as now, for the log.
std::string describe_privileges();

}  // namespace nfqscan
