// What the mail inspectors hand the quarantine (ObjectInfo::original on the
// record() that blocks, see src/quarantine/dev_notes.txt): the message as
// the server sent it, dot-unstuffed, with the header's sender, recipients
// and Subject; nothing for a clean or passed message, nothing when the
// quarantine is off.
#include <gtest/gtest.h>

#include "../../../src/proto/mail/mail.h"
#include "../../../src/proto/pop3/pop3_inspector.h"
#include "../proto/mail_wire.h"

namespace nfqscan {
namespace {

using namespace mailtest;
using Flow = MailFlow<Pop3Inspector>;

const std::string kInfected =
    "From: Mallory <mallory@example.org>\r\nTo: bob@example.org, carol@example.org\r\n"
    "Subject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n"
    "\r\n--b1\r\nContent-Type: text/plain\r\n\r\n.a line with a dot\r\n"
    "--b1\r\nContent-Type: application/octet-stream\r\n"
    "Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n" +
    kEicar + "\r\n--b1--\r\n";

void retrieve(Flow& f, const std::string& message) {
    f.server("+OK Dovecot ready.\r\n");
    f.client("USER bob\r\n");
    f.server("+OK\r\n");
    f.client("PASS secret\r\n");
    f.server("+OK Logged in.\r\n");
    f.client("RETR 1\r\n");
    f.server("+OK " + std::to_string(message.size()) + " octets\r\n" + mail::dot_stuff(message));
    f.answer_all();
}

TEST(QuarantineHook, ABlockedMailCarriesItsOriginalAndEnvelope) {
    Flow f;
    f.host.keep = true;
    retrieve(f, kInfected);
    ASSERT_EQ(f.host.records.size(), 1u);
    const auto& r = f.host.records[0];
    EXPECT_EQ(r.action, "replace");
    EXPECT_TRUE(quarantine_keeps(r.action));
    ASSERT_TRUE(r.info.original && r.info.original->bytes);
    EXPECT_EQ(text_of(r.info.original->bytes->bytes()), kInfected);
    EXPECT_EQ(r.info.original->subject, "invoice");
    EXPECT_NE(r.info.original->sender.find("mallory@example.org"), std::string::npos)
        << r.info.original->sender;
    EXPECT_EQ(r.info.original->recipients.size(), 2u);
}

TEST(QuarantineHook, NothingIsAttachedWhenOffOrPassed) {
    {
        Flow f;  // quarantine off
        retrieve(f, kInfected);
        ASSERT_EQ(f.host.records.size(), 1u);
        EXPECT_FALSE(f.host.records[0].info.original);
    }
    {
        Flow f;
        f.host.keep = true;
        f.host.policy_.on_virus = Action::Pass;
        retrieve(f, kInfected);
        ASSERT_EQ(f.host.records.size(), 1u);
        EXPECT_EQ(f.host.records[0].action, "pass");
        EXPECT_FALSE(f.host.records[0].info.original);
    }
    for (std::string_view action : {"pass", "tag", "forward", "accept", ""})
        EXPECT_FALSE(quarantine_keeps(action)) << action;
    for (std::string_view action : {"block", "reset", "replace", "strip", "reject", "drop"})
        EXPECT_TRUE(quarantine_keeps(action)) << action;
}

}  // namespace
}  // namespace nfqscan
