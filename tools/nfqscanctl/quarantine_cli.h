// `nfqscanctl quarantine ...`: list, show, export, release and delete the
// objects nfqscand kept (src/quarantine). Every operation goes through the
// control socket as a root-only command, so the daemon's thread stays the
// folder's only writer and its counters stay true; export passes the file
// nfqscanctl opened (as its caller) to the daemon, which never creates a path
// for a client.
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <string>

namespace nfqscan {

struct QuarantineCli {
    CLI::App* command = nullptr;
    CLI::App* list = nullptr;
    CLI::App* show = nullptr;
    CLI::App* export_ = nullptr;
    CLI::App* release = nullptr;
    CLI::App* remove = nullptr;
    bool as_json = false;
    std::string protocol;
    std::string since;
    size_t limit = 1000;
    std::string id;
    std::string file;
    bool force = false;
};

// Adds the subcommands to `app`; the returned object must outlive parsing.
void add_quarantine_cli(CLI::App& app, QuarantineCli& cli);
// Runs the parsed subcommand; the exit status.
int run_quarantine_cli(const QuarantineCli& cli, const std::string& control);

}  // namespace nfqscan
