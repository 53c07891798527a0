// The mail inspectors' shared pieces: the dot-stuffed transfer form and the
// GMime rewrites (src/proto/mail/mail.h).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "../../../src/proto/mail/mail.h"

namespace nfqscan::mail {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Decodes `wire` fed in pieces of `step` bytes; returns the message and how
// many bytes were consumed in all.
std::pair<std::string, size_t> decode(std::string_view wire, size_t step, DotDecoder& d) {
    std::string out;
    size_t consumed = 0;
    while (consumed < wire.size() && !d.done() && !d.failed()) {
        std::string_view piece = wire.substr(consumed, step);
        consumed += d.feed(bytes_of(piece), [&](std::span<const uint8_t> run) {
            out.append(reinterpret_cast<const char*>(run.data()), run.size());
        });
    }
    return {out, consumed};
}

TEST(DotDecoder, UnstuffsAndStopsAtTheTerminatorInAnyPieces) {
    const std::string wire = "Subject: x\r\n\r\n..leading dot\r\n.\r\r\nmid.dle\r\n.\r\nQUIT\r\n";
    const std::string message = "Subject: x\r\n\r\n.leading dot\r\n\r\r\nmid.dle\r\n";
    for (size_t step : {1, 2, 3, 5, 100}) {
        DotDecoder d;
        auto [out, consumed] = decode(wire, step, d);
        EXPECT_TRUE(d.done()) << step;
        EXPECT_EQ(out, message) << step;
        EXPECT_EQ(wire.substr(consumed), "QUIT\r\n") << step;
    }
}

TEST(DotDecoder, AnEmptyMessageIsJustTheTerminator) {
    DotDecoder d;
    auto [out, consumed] = decode(".\r\nNEXT", 100, d);
    EXPECT_TRUE(d.done());
    EXPECT_EQ(out, "");
    EXPECT_EQ(consumed, 3u);
}

TEST(DotDecoder, RefusesBareLineFeedsAroundADotLine) {
    for (std::string wire : {"a\r\n.\nMAIL FROM:<x>\r\n", "a\n.\r\nMAIL", "a\n.\nMAIL"}) {
        DotDecoder d;
        decode(wire, 1, d);
        EXPECT_TRUE(d.failed()) << wire;
        EXPECT_FALSE(d.done()) << wire;
    }
    // A bare LF elsewhere is message content.
    DotDecoder d;
    auto [out, consumed] = decode("a\nb\r\n.\r\n", 1, d);
    EXPECT_TRUE(d.done());
    EXPECT_EQ(out, "a\nb\r\n");
}

TEST(DotStuff, RoundTripsThroughTheDecoder) {
    std::mt19937 rng(7);
    const std::string alphabet = ".\r\nab";
    for (int n = 0; n < 500; ++n) {
        std::string message;
        for (int i = rng() % 40; i > 0; --i)
            message += alphabet[rng() % alphabet.size()];
        std::string wire = dot_stuff(message);
        DotDecoder d;
        auto [out, consumed] = decode(wire, 1 + rng() % 4, d);
        ASSERT_TRUE(d.done()) << testing::PrintToString(message);
        EXPECT_EQ(consumed, wire.size());
        // Line ends come back as CRLF; everything else as it was.
        std::string normalized;
        for (size_t i = 0; i < message.size(); ++i) {
            if (message[i] == '\r' && i + 1 < message.size() && message[i + 1] == '\n') continue;
            normalized += message[i] == '\r' || message[i] == '\n' ? std::string("\r\n")
                                                                   : std::string(1, message[i]);
        }
        if (!normalized.empty() && !normalized.ends_with("\r\n")) normalized += "\r\n";
        EXPECT_EQ(out, normalized) << testing::PrintToString(message);
    }
}

const std::string kMultipart =
    "From: Alice <alice@lab.test>\r\n"
    "To: bob@lab.test\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Message-ID: <m1@lab.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\r\n"
    "--b1\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Disposition: attachment; filename=\"bad.com\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "aGVsbG8gd29ybGQ=\r\n"
    "--b1\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Disposition: attachment; filename=\"good.bin\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "Z29vZCBkYXRh\r\n"
    "--b1--\r\n";

TEST(MailRewrite, SummarizesDecodedHeaders) {
    Summary s = summarize(bytes_of(kMultipart));
    EXPECT_TRUE(s.parsed);
    EXPECT_EQ(s.subject, "Grüße");
    EXPECT_EQ(s.message_id, "m1@lab.test");
    EXPECT_NE(s.from.find("alice@lab.test"), std::string::npos);
}

TEST(MailRewrite, ReplaceKeepsTheHeaderAndSaysWhy) {
    std::string out = replace_body(bytes_of(kMultipart), "Removed: bad.com (Eicar)\n",
                                   {{"X-Nfqscan-Virus", "Eicar-Test-Signature"}});
    EXPECT_NE(out.find("Message-ID: <m1@lab.test>\r\n"), std::string::npos) << out;
    EXPECT_NE(out.find("X-Nfqscan-Virus: Eicar-Test-Signature\r\n"), std::string::npos);
    EXPECT_NE(out.find("Removed: bad.com (Eicar)"), std::string::npos);
    EXPECT_EQ(out.find("aGVsbG8gd29ybGQ="), std::string::npos) << "the old body is gone";
    EXPECT_EQ(out.find("multipart"), std::string::npos);
    Summary s = summarize(bytes_of(out));
    EXPECT_EQ(s.subject, "Grüße");
    // No bare LF: it goes out on the wire as it is.
    for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] == '\n') {
            ASSERT_TRUE(i > 0 && out[i - 1] == '\r') << i;
        }
    }
}

TEST(MailRewrite, AnUnparsableMessageBecomesTheNoticeAlone) {
    std::string out = replace_body(bytes_of(""), "why", {{"X-Nfqscan-Virus", "V"}});
    EXPECT_NE(out.find("why"), std::string::npos);
    EXPECT_NE(out.find("X-Nfqscan-Virus: V"), std::string::npos);
}

TEST(MailRewrite, TaggedEncodedSubjectStaysValid) {
    std::string out = tag_subject(bytes_of(kMultipart), "***UNCHECKED***", {});
    EXPECT_EQ(summarize(bytes_of(out)).subject, "***UNCHECKED*** Grüße");
    // The rest is untouched: the attachments decode as before.
    std::vector<Part> before = parts(bytes_of(kMultipart)), after = parts(bytes_of(out));
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < before.size(); ++i)
        EXPECT_EQ(before[i].content, after[i].content);
}

TEST(MailRewrite, PartsAreDecodedLeaves) {
    bool complete = false;
    std::vector<Part> p = parts(bytes_of(kMultipart), &complete);
    EXPECT_TRUE(complete);
    ASSERT_EQ(p.size(), 3u);
    EXPECT_EQ(p[1].file_name, "bad.com");
    EXPECT_EQ(std::string(p[1].content.begin(), p[1].content.end()), "hello world");
    EXPECT_EQ(std::string(p[2].content.begin(), p[2].content.end()), "good data");
}

TEST(MailRewrite, StripReplacesOnlyTheNamedParts) {
    std::string out =
        strip(bytes_of(kMultipart), {1}, [](const Part& p) { return "removed " + p.file_name; },
              {{"X-Nfqscan-Stripped", "1"}});
    std::vector<Part> p = parts(bytes_of(out));
    ASSERT_EQ(p.size(), 3u);
    EXPECT_EQ(std::string(p[0].content.begin(), p[0].content.end()), "hello");
    EXPECT_NE(std::string(p[1].content.begin(), p[1].content.end()).find("removed bad.com"),
              std::string::npos);
    EXPECT_EQ(std::string(p[2].content.begin(), p[2].content.end()), "good data");
    EXPECT_EQ(out.find("aGVsbG8gd29ybGQ="), std::string::npos);
    EXPECT_NE(out.find("Z29vZCBkYXRh"), std::string::npos) << "kept as it was sent";
}

TEST(MailRewrite, NestedMessagesAreWalked) {
    std::string outer =
        "From: a@lab.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n"
        "--o\r\nContent-Type: message/rfc822\r\n\r\n" +
        kMultipart + "--o--\r\n";
    std::vector<Part> p = parts(bytes_of(outer));
    ASSERT_EQ(p.size(), 3u);
    EXPECT_EQ(p[1].file_name, "bad.com");
    std::string out = strip(bytes_of(outer), {1}, [](const Part&) { return "gone"; }, {});
    EXPECT_EQ(out.find("aGVsbG8gd29ybGQ="), std::string::npos);
    EXPECT_NE(out.find("Z29vZCBkYXRh"), std::string::npos);
}

}  // namespace
}  // namespace nfqscan::mail
