// One SMTP submission through a relay with libcurl's SMTP client: the
// notifier's notifications and the quarantine's releases go out through it.
// It blocks for the whole transaction (at most the connect and transfer
// timeouts), so it runs on a thread of its own, never on a queue worker.
// Tests: tests/unit/notify/notifier_test.cc (FakeRelay),
// tests/unit/quarantine/quarantine_store_test.cc, and through real Postfix
// tests/lab/test_quarantine.py.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace nfqscan {

struct SmtpSubmission {
    // "host:port" ("[v6addr]:port") as configured ([notify] relay); "" =
    // none: the submission fails.
    std::string_view relay;
    std::string_view helo_name;               // the name EHLO says
    std::string_view from;                    // bare local@domain; "" = the null sender
    std::span<const std::string> recipients;  // bare addresses, already checked
    std::string_view message;                 // RFC 5322, CRLF, not dot-stuffed
    std::chrono::milliseconds connect_timeout{10000};
    std::chrono::milliseconds transfer_timeout{30000};  // the whole transaction
    // SO_MARK of the connection (the inject mark, so that a ruleset queueing
    // the gateway's own traffic lets it by); 0 = none. Not set without
    // CAP_NET_ADMIN, and the submission goes on.
    uint32_t mark = 0;
    // Turning true aborts a transfer under way (a stopping owner); null = never.
    const std::atomic<bool>* abort = nullptr;
};

// libcurl's global initialisation, once per process; throws
// std::runtime_error naming the failure. Call it while starting up, before
// threads use libcurl; smtp_submit() calls it too.
void smtp_client_init();

// Sends s.message; returns "" when the relay answered 2xx to it, else what
// failed: libcurl's error text, with " (last reply N)" when the relay
// answered, or "no relay configured ([notify] relay)", or why the relay does
// not parse.
std::string smtp_submit(const SmtpSubmission& s);

}  // namespace nfqscan
