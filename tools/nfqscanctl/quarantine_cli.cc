// `nfqscanctl quarantine ...` (quarantine_cli.h).
#include "quarantine_cli.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "nfqscan/control.h"
#include "nfqscan/quarantine.h"
#include "nfqscan/unique_fd.h"

namespace nfqscan {

namespace {

using nlohmann::json;

// Releases and exports of large objects take a while; the control socket's
// own deadline covers only the request and the reply.
constexpr auto kTimeout = std::chrono::seconds(120);

std::string text(const json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string verdict_text(const json& v) {
    if (text(v, "verdict") == "infected") return text(v, "name");
    return text(v, "category");
}

std::string joined(const json& list) {
    std::string out;
    for (const json& r : list)
        if (r.is_string()) out += (out.empty() ? "" : ", ") + r.get<std::string>();
    return out;
}

// One line per entry, newest first: what it is at a glance.
void print_list(const json& entries) {
    for (const json& e : entries) {
        std::string what = text(e, "object");
        if (!text(e, "subject").empty() || !text(e, "sender").empty())
            what = fmt::format("{} -> {} \"{}\"", text(e, "sender"), joined(e["recipients"]),
                               text(e, "subject"));
        std::printf("%s  %s  %-4s  %-7s  %9s  %s  %s\n", text(e, "id").c_str(),
                    text(e, "time").c_str(), text(e, "protocol").c_str(), text(e, "action").c_str(),
                    text(e, "size").c_str(),
                    verdict_text(e.value("verdict", json::object())).c_str(), what.c_str());
    }
    std::printf("%zu entries\n", entries.size());
}

void print_entry(const json& e) {
    const json v = e.value("verdict", json::object());
    std::printf(
        "id:         %s\ntime:       %s\nprotocol:   %s\nflow:       %s\ndirection:  %s\n"
        "object:     %s\nfile name:  %s\nsender:     %s\nrecipients: %s\nsubject:    %s\n"
        "verdict:    %s %s (%s%s%s)\naction:     %s\nevent:      %s\nsize:       %s bytes\n",
        text(e, "id").c_str(), text(e, "time").c_str(), text(e, "protocol").c_str(),
        text(e, "flow").c_str(), text(e, "direction").c_str(), text(e, "object").c_str(),
        text(e, "file_name").c_str(), text(e, "sender").c_str(), joined(e["recipients"]).c_str(),
        text(e, "subject").c_str(), text(v, "verdict").c_str(), verdict_text(v).c_str(),
        text(v, "category").c_str(), text(v, "engine").empty() ? "" : ", ",
        text(v, "engine").c_str(), text(e, "action").c_str(), text(e, "event_id").c_str(),
        text(e, "size").c_str());
}

}  // namespace

void add_quarantine_cli(CLI::App& app, QuarantineCli& cli) {
    cli.command = app.add_subcommand(
        "quarantine", "objects nfqscand blocked, kept in [quarantine] dir (root only)");
    cli.command->require_subcommand(1);
    cli.list = cli.command->add_subcommand("list", "entries, newest first");
    cli.list->add_flag("--json", cli.as_json, "machine-readable output");
    cli.list->add_option("--protocol", cli.protocol, "only this protocol (smtp, http, ftp, ...)");
    cli.list->add_option("--since", cli.since,
                         "only entries since a UTC time (2026-12-06T10:00) or an age (12h, 7d)");
    cli.list->add_option("--limit", cli.limit, "at most this many")->capture_default_str();
    cli.show = cli.command->add_subcommand("show", "one entry's metadata");
    cli.show->add_option("ID", cli.id, "entry id (the event id)")->required();
    cli.show->add_flag("--json", cli.as_json, "machine-readable output");
    cli.export_ = cli.command->add_subcommand(
        "export", "write an entry's original bytes (as they crossed the router, decoded) to FILE");
    cli.export_->add_option("ID", cli.id, "entry id")->required();
    cli.export_->add_option("FILE", cli.file, "file to create (\"-\": standard output)")
        ->required();
    cli.export_->add_flag("--force", cli.force, "replace FILE if it exists");
    cli.release = cli.command->add_subcommand(
        "release", "deliver an SMTP entry to its recipients through [notify] relay");
    cli.release->add_option("ID", cli.id, "entry id")->required();
    cli.remove = cli.command->add_subcommand("delete", "remove an entry");
    cli.remove->add_option("ID", cli.id, "entry id")->required();
}

int run_quarantine_cli(const QuarantineCli& cli, const std::string& control) {
    json request = {{"command", "quarantine"}};
    if (cli.list->parsed()) {
        request["op"] = "list";
        request["limit"] = cli.limit;
        if (!cli.protocol.empty()) request["protocol"] = cli.protocol;
        if (!cli.since.empty()) {
            const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
            request["since_ms"] = parse_quarantine_since(cli.since, now);
        }
        json entries = control_request(control, request, kTimeout);
        if (cli.as_json)
            std::puts(entries.dump(2).c_str());
        else
            print_list(entries);
        return 0;
    }
    request["id"] = cli.id;
    if (cli.show->parsed()) {
        request["op"] = "show";
        json e = control_request(control, request, kTimeout);
        if (cli.as_json)
            std::puts(e.dump(2).c_str());
        else
            print_entry(e);
        return 0;
    }
    if (cli.export_->parsed()) {
        request["op"] = "export";
        const bool to_stdout = cli.file == "-";
        // Opened here, as the caller, and handed over: the daemon writes into
        // it and never creates a path itself. 0600: the bytes are malware.
        UniqueFd file(to_stdout ? dup(STDOUT_FILENO)
                                : ::open(cli.file.c_str(),
                                         O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                                             (cli.force ? O_TRUNC : O_EXCL),
                                         0600));
        if (!file)
            throw std::runtime_error(fmt::format("{}: {}{}", cli.file, std::strerror(errno),
                                                 errno == EEXIST ? " (--force replaces it)" : ""));
        try {
            json r = control_request(control, request, kTimeout, {file.get()});
            if (!to_stdout)
                std::fprintf(stderr, "%s: %s bytes of %s\n", cli.file.c_str(),
                             text(r, "bytes").c_str(), cli.id.c_str());
        } catch (...) {
            if (!to_stdout) unlink(cli.file.c_str());
            throw;
        }
        return 0;
    }
    if (cli.release->parsed()) {
        request["op"] = "release";
        json r = control_request(control, request, kTimeout);
        std::printf("%s released: %s bytes from %s to %s through %s\n", text(r, "id").c_str(),
                    text(r, "bytes").c_str(), text(r, "sender").c_str(),
                    joined(r["recipients"]).c_str(), text(r, "relay").c_str());
        return 0;
    }
    request["op"] = "delete";
    control_request(control, request, kTimeout);
    std::printf("%s deleted\n", cli.id.c_str());
    return 0;
}

}  // namespace nfqscan
