#include <gtest/gtest.h>

#include <filesystem>

#include "../scan/scan_test_support.h"
#include "nfqscan/config.h"
#include "nfqscan/policy.h"

namespace nfqscan {
namespace {

ScanVerdict infected(ThreatCategory category) {
    Detection d;
    d.signature = "Eicar-Signature";
    d.category = category;
    return ScanVerdict::infected(d);
}

TEST(PolicyCategory, NamesRoundTripAndFollowScanErrors) {
    for (size_t i = 0; i < kCategoryCount; ++i) {
        const Category c = static_cast<Category>(i);
        EXPECT_EQ(category_from_name(category_name(c)), c);
    }
    for (size_t i = 0; i < kScanErrorCount; ++i) {
        const ScanError e = static_cast<ScanError>(i);
        EXPECT_EQ(category_name(category_of(e)), scan_error_name(e));
    }
    EXPECT_EQ(category_name(Category::Partial), "partial");
    EXPECT_EQ(category_name(Category::ProtocolError), "protocol-error");
    EXPECT_FALSE(category_from_name("default"));
    EXPECT_EQ(action_name(Action::Block), "block");
    EXPECT_EQ(action_from_name("pass"), Action::Pass);
    EXPECT_FALSE(action_from_name("drop"));
}

TEST(PolicyDecide, CleanPassesInfectedFollowsItsCategory) {
    ProtocolPolicy p;
    EXPECT_EQ(p.decide(ScanVerdict::clean()), Action::Pass);
    EXPECT_EQ(p.decide(ScanVerdict::skipped_clean()), Action::Pass);
    EXPECT_EQ(p.decide(infected(ThreatCategory::Virus)), Action::Block);
    EXPECT_EQ(p.decide(infected(ThreatCategory::Policy)), Action::Block);
    EXPECT_EQ(p.decide(infected(ThreatCategory::Spam)), Action::Pass);

    p.on_virus = Action::Pass;
    EXPECT_EQ(p.decide(infected(ThreatCategory::Virus)), Action::Pass);
    EXPECT_EQ(p.decide(infected(ThreatCategory::Policy)), Action::Block);
    p.on_virus = Action::Block;
    p.on_policy = Action::Pass;
    EXPECT_EQ(p.decide(infected(ThreatCategory::Virus)), Action::Block);
    EXPECT_EQ(p.decide(infected(ThreatCategory::Policy)), Action::Pass);
}

TEST(PolicyDecide, ErrorsTakeTheFallbackOfTheirCategory) {
    ProtocolPolicy p;
    // Defaults: pass, except too-many-requests (a flooded queue must not open
    // the gate) and protocol-error; engine-not-ready passes (a restart).
    for (size_t i = 0; i < kScanErrorCount; ++i) {
        const ScanError e = static_cast<ScanError>(i);
        const Action want = e == ScanError::TooManyRequests ? Action::Block : Action::Pass;
        EXPECT_EQ(p.decide(ScanVerdict::failed(e, "test")), want) << scan_error_name(e);
    }
    EXPECT_EQ(p.fallback_for(Category::EngineNotReady), Action::Pass);
    EXPECT_EQ(p.fallback_for(Category::Partial), Action::Pass);
    EXPECT_EQ(p.fallback_for(Category::ProtocolError), Action::Block);

    p.fallback[size_t(Category::Encrypted)] = Action::Block;
    EXPECT_EQ(p.decide(ScanVerdict::failed(ScanError::Encrypted, "zip")), Action::Block);
    EXPECT_EQ(p.decide(ScanVerdict::failed(ScanError::Corrupt, "pe")), Action::Pass);
}

TEST(PolicyAllowlist, HostsMatchWithoutCaseAndPort) {
    ProtocolPolicy p;
    p.allow_hosts = {"updates.example.com", "10.0.0.1", "2001:db8::1"};
    EXPECT_TRUE(p.allowlisted("updates.example.com", ""));
    EXPECT_TRUE(p.allowlisted("Updates.EXAMPLE.com", ""));
    EXPECT_TRUE(p.allowlisted("updates.example.com:8080", ""));
    EXPECT_TRUE(p.allowlisted("updates.example.com.", ""));
    EXPECT_TRUE(p.allowlisted("10.0.0.1:80", ""));
    EXPECT_TRUE(p.allowlisted("[2001:db8::1]:80", ""));
    EXPECT_TRUE(p.allowlisted("[2001:DB8::1]", ""));
    EXPECT_FALSE(p.allowlisted("example.com", ""));
    EXPECT_FALSE(p.allowlisted("a.updates.example.com", ""));
    EXPECT_FALSE(p.allowlisted("updates.example.com.evil.net", ""));
    EXPECT_FALSE(p.allowlisted("", ""));
}

TEST(PolicyAllowlist, DotEntriesMatchSubdomainsOnly) {
    ProtocolPolicy p;
    p.allow_hosts = {".example.com"};
    EXPECT_TRUE(p.allowlisted("www.example.com", ""));
    EXPECT_TRUE(p.allowlisted("a.b.EXAMPLE.COM:81", ""));
    EXPECT_FALSE(p.allowlisted("example.com", ""));
    EXPECT_FALSE(p.allowlisted("badexample.com", ""));
    EXPECT_FALSE(p.allowlisted("www.example.com.evil.net", ""));
}

TEST(PolicyAllowlist, UrlsMatchByPrefixWithHostWhole) {
    ProtocolPolicy p;
    p.allow_urls = {"http://example.com/downloads/", "HTTP://Mirror.Example.org",
                    "http://files.example.net:8080/pub"};
    EXPECT_TRUE(p.allowlisted("", "http://example.com/downloads/a.zip"));
    EXPECT_TRUE(p.allowlisted("", "HTTP://EXAMPLE.COM/downloads/a.zip"));
    EXPECT_TRUE(p.allowlisted("", "http://example.com:80/downloads/"));
    EXPECT_FALSE(p.allowlisted("", "http://example.com/Downloads/a.zip"));  // path: exact case
    EXPECT_FALSE(p.allowlisted("", "http://example.com/other"));
    EXPECT_FALSE(p.allowlisted("", "http://example.com:8080/downloads/a.zip"));
    EXPECT_TRUE(p.allowlisted("", "http://mirror.example.org/"));
    EXPECT_TRUE(p.allowlisted("", "http://mirror.example.org/any/thing?x=1"));
    EXPECT_FALSE(p.allowlisted("", "http://mirror.example.org.evil.net/"));
    EXPECT_FALSE(p.allowlisted("", "http://mirror.example.org@evil.net/"));
    EXPECT_TRUE(p.allowlisted("", "http://files.example.net:8080/pub/x.iso"));
    EXPECT_FALSE(p.allowlisted("", "http://files.example.net/pub/x.iso"));
    EXPECT_FALSE(p.allowlisted("", "not a url"));
    EXPECT_FALSE(p.allowlisted("example.com", ""));
}

TEST(PolicyAllowlist, OnlyHostsHoldForAWholeConnection) {
    ProtocolPolicy p;
    EXPECT_TRUE(p.allowlist_release);  // the default
    p.allow_hosts = {"updates.example.com", ".cdn.example.net"};
    p.allow_urls = {"http://example.com/downloads/"};
    EXPECT_TRUE(p.host_allowlisted("Updates.Example.com:8080"));
    EXPECT_TRUE(p.host_allowlisted("a.cdn.example.net"));
    EXPECT_FALSE(p.host_allowlisted("cdn.example.net"));
    EXPECT_FALSE(p.host_allowlisted(""));
    // A URL on allow_urls is allowlisted, its host is not.
    EXPECT_TRUE(p.allowlisted("example.com", "http://example.com/downloads/a.zip"));
    EXPECT_FALSE(p.host_allowlisted("example.com"));
}

MessageFields sample_fields() {
    MessageFields f;
    f.detection = "Eicar-Signature";
    f.category = "virus";
    f.object = "http://example.com/a?x=<script>&y='1'\"";
    f.protocol = "http";
    f.client = "192.0.2.10:40000";
    f.server = "198.51.100.1:80";
    f.time = "2024-05-01T12:00:00Z";
    f.host = "router";
    f.event_id = "e-42";
    f.action = "block";
    return f;
}

class MessageTemplatesTest : public ::testing::Test {
  protected:
    void write(const std::string& name, std::string_view text) {
        test::write_file(dir_.file(name), text);
    }
    // Adds the required template, so a test can focus on another one.
    void write_required() {
        write("http-block.html", "<p>{{object}}</p>");
        write("mail-virus-notice.txt", "{{detection}} {{sender}} {{recipients}}");
    }

    void expect_error(uint32_t line, const std::string& file, const std::string& key,
                      const std::string& fragment) {
        try {
            MessageTemplates::load(dir_.path());
            FAIL() << "accepted";
        } catch (const ConfigError& e) {
            EXPECT_EQ(e.file(), dir_.file(file)) << e.what();
            EXPECT_EQ(e.line(), line) << e.what();
            EXPECT_EQ(e.key(), key) << e.what();
            EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
        }
    }

    test::TempDir dir_;
};

TEST_F(MessageTemplatesTest, RenderEscapesValuesInHtmlOnly) {
    write_required();
    write("http-block.html", "<b>{{detection}}</b> {{ object }}|{{\tcategory }}");
    write("note.txt", "object: {{object}}\nid {{event_id}}{{event_id}}\n");
    write("README", "not a template {{nope");
    auto t = MessageTemplates::load(dir_.path());
    EXPECT_EQ(t->names(), (std::vector<std::string>{"http-block", "mail-virus-notice", "note"}));
    EXPECT_TRUE(t->is_html("http-block"));
    EXPECT_FALSE(t->is_html("note"));
    EXPECT_FALSE(t->has("README"));
    const MessageFields f = sample_fields();
    EXPECT_EQ(t->render("http-block", f),
              "<b>Eicar-Signature</b> "
              "http://example.com/a?x=&lt;script&gt;&amp;y=&#39;1&#39;&quot;|virus");
    EXPECT_EQ(t->render("note", f),
              "object: http://example.com/a?x=<script>&y='1'\"\nid e-42e-42\n");
    EXPECT_THROW(t->render("missing", f), std::out_of_range);
}

TEST_F(MessageTemplatesTest, ValuesCannotAddLines) {
    write_required();
    write("note.txt", "[{{object}}]");
    auto t = MessageTemplates::load(dir_.path());
    MessageFields f;
    f.object = "a\r\n.\r\nRSET\tb";
    EXPECT_EQ(t->render("note", f), "[a??.??RSET b]");
    EXPECT_EQ(t->render("http-block", f), "<p>a??.??RSET b</p>");
}

TEST_F(MessageTemplatesTest, UnknownPlaceholderNamesFileLineAndPlaceholder) {
    write_required();
    write("ftp-drop.txt", "line one\nline two {{object}}\n\nbad {{ virus_name }} here\n");
    expect_error(4, "ftp-drop.txt", "{{virus_name}}", "unknown placeholder; known: detection");
}

TEST_F(MessageTemplatesTest, UnclosedPlaceholderNamesItsLine) {
    write_required();
    write("http-block.html", "<html>\n<p>{{detection}}</p>\n<p>{{ object </p>\n}}\n");
    expect_error(3, "http-block.html", "{{ object </p>", "unclosed placeholder");
}

TEST_F(MessageTemplatesTest, RequiredTemplateMissing) {
    write("ftp-drop.txt", "{{object}}");
    try {
        MessageTemplates::load(dir_.path());
        FAIL() << "accepted";
    } catch (const ConfigError& e) {
        EXPECT_EQ(e.file(), dir_.path());
        EXPECT_EQ(e.key(), "http-block");
        EXPECT_NE(std::string(e.what()).find("http-block.html or http-block.txt"),
                  std::string::npos)
            << e.what();
    }
}

TEST_F(MessageTemplatesTest, OversizedAndDuplicateTemplatesAreErrors) {
    write_required();
    write("big.txt", std::string(MessageTemplates::kMaxTemplateSize + 1, 'x'));
    expect_error(0, "big.txt", "big", "larger than 65536 bytes");
    std::filesystem::remove(dir_.file("big.txt"));
    write("fits.txt", std::string(MessageTemplates::kMaxTemplateSize, 'x'));
    EXPECT_TRUE(MessageTemplates::load(dir_.path())->has("fits"));
    write("http-block.txt", "{{object}}");
    expect_error(0, "http-block.txt", "http-block", "exists already");
}

TEST(MessageTemplates, MissingFolderIsAnError) {
    EXPECT_THROW(MessageTemplates::load("/nonexistent/messages"), ConfigError);
}

// The templates nfqscan ships: every required one there, every placeholder
// filled, and the same texts compiled in.
TEST(MessageTemplates, ShippedTemplatesLoadAndRenderCompletely) {
    auto shipped = MessageTemplates::load("rules/messages");
    auto builtin = MessageTemplates::builtin();
    EXPECT_EQ(shipped->names(), (std::vector<std::string>{"ftp-drop", "ftp-virus-notice",
                                                          "http-block", "mail-virus-notice"}));
    EXPECT_EQ(builtin->names(), shipped->names());
    const MessageFields f = sample_fields();
    for (const std::string& name : shipped->names()) {
        const std::string text = shipped->render(name, f);
        EXPECT_EQ(text, builtin->render(name, f)) << name;
        EXPECT_EQ(text.find("{{"), std::string::npos) << name;
        EXPECT_EQ(text.find("}}"), std::string::npos) << name;
        for (const std::string* value : {&f.detection, &f.category, &f.event_id})
            EXPECT_NE(text.find(*value), std::string::npos) << name << ": " << *value;
        // ftp-virus-notice is the one line of a "550" reply: the rest is in
        // the drop message and the event.
        if (name == "ftp-virus-notice") {
            EXPECT_NE(text.find(f.object), std::string::npos);
            EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line";
            continue;
        }
        for (const std::string* value : {&f.client, &f.server, &f.time})
            EXPECT_NE(text.find(*value), std::string::npos) << name << ": " << *value;
    }
    const std::string page = shipped->render("http-block", f);
    EXPECT_TRUE(shipped->is_html("http-block"));
    EXPECT_NE(page.find("<title>Blocked by nfqscan</title>"), std::string::npos);
    EXPECT_NE(page.find(html_escape(f.object)), std::string::npos);
    EXPECT_EQ(page.find("<script>"), std::string::npos);
    // Self-contained: nothing fetched from elsewhere.
    EXPECT_EQ(page.find("src="), std::string::npos);
    EXPECT_EQ(page.find("href="), std::string::npos);
}

TEST(MessageTemplates, HtmlEscape) {
    EXPECT_EQ(html_escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    EXPECT_EQ(html_escape("plain"), "plain");
}

TEST(Policy, SpamActionNamesRoundTrip) {
    for (SpamAction a : {SpamAction::Accept, SpamAction::Tag, SpamAction::Reject, SpamAction::Drop,
                         SpamAction::Forward})
        EXPECT_EQ(spam_action_from_name(spam_action_name(a)), a);
    EXPECT_EQ(spam_action_name(SpamAction::Tag), "tag");
    EXPECT_FALSE(spam_action_from_name("bounce"));
    EXPECT_EQ(ProtocolPolicy{}.on_spam, SpamAction::Tag) << "tag is the default";
}

}  // namespace
}  // namespace nfqscan
