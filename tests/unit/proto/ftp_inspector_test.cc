// The FTP inspectors on simulated wires (mail_wire.h): a control flow and the
// data flows its expectations claim, each with its own host as on separate
// workers; the control worker's wake-ups are queued and run by pump(), as a
// worker's posted task would. What the client and server receive on both
// connections, and what is scanned and logged.
#include "../../../src/proto/ftp/ftp_inspector.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "mail_wire.h"

namespace nfqscan {
namespace {

using namespace mailtest;

IpAddress v4(const char* text) {
    uint8_t a[4];
    inet_pton(AF_INET, text, a);
    return IpAddress::from_v4(a);
}

const IpAddress kClient = v4("10.0.0.1"), kServer = v4("10.0.1.1");

class FtpHost : public FakeHost {
  public:
    FtpExpectations* expectations = nullptr;
    std::shared_ptr<FtpSession> data_session;
    int* wakes = nullptr;
    uint64_t now = 1'000'000;
    bool ticks = false;
    std::string closed_with;
    std::optional<Direction> closed_direction;
    std::array<bool, 2> ended_directions{};  // a FIN seen from that direction's sender

    FlowAddresses addresses() const override { return {kClient, kServer, 40000, 21}; }
    FtpExpectations* ftp_expectations() override { return expectations; }
    std::shared_ptr<FtpSession> ftp_data() const override { return data_session; }
    std::function<void()> waker() override {
        int* w = wakes;
        return [w] { ++*w; };
    }
    uint64_t now_ms() const override { return now; }
    void want_ticks(bool on) override { ticks = on; }
    bool ended(Direction d) const override { return ended_directions[size_t(d)]; }
    void send_and_close(Direction d, std::span<const uint8_t> bytes) override {
        closed_direction = d;
        closed_with = text_of(bytes);
        wire->close();
    }
    // The real templates (the FakeHost's stand-in names the fields).
    std::string render_message(std::string_view name, const MessageFields& f) const override {
        return MessageTemplates::builtin()->render(name, f);
    }
};

struct Data {
    FtpHost host;
    std::unique_ptr<Inspector> inspector;
    std::unique_ptr<Wire> wire;
    std::mt19937 rng{7};
};

struct Session {
    FtpExpectations expectations;
    int wakes = 0;
    FtpHost host;
    std::unique_ptr<Inspector> inspector;
    std::unique_ptr<Wire> wire;
    std::mt19937 rng{1};
    std::vector<std::unique_ptr<Data>> data;

    Session() {
        host.expectations = &expectations;
        host.wakes = &wakes;
        inspector = make_inspector(Service::Ftp, host);
        wire = std::make_unique<Wire>(*inspector, host);
    }
    FtpControlInspector& control() { return static_cast<FtpControlInspector&>(*inspector); }
    void client(const std::string& s) { wire->send(C2S, s, rng, 16); }
    void server(const std::string& s) { wire->send(S2C, s, rng, 16); }
    // The control worker runs its posted wake-ups.
    void pump() {
        while (wakes > 0) {
            --wakes;
            wire->redrive();
        }
    }
    // A SYN from `from` to `to`:`port`: the data flow the classifier makes
    // of it (nullptr: no expectation claims it).
    Data* connect(const IpAddress& from, const IpAddress& to, uint16_t port) {
        std::shared_ptr<FtpSession> s = expectations.claim(from, to, port, host.now);
        if (!s) return nullptr;
        auto d = std::make_unique<Data>();
        d->host.data_session = s;
        d->host.wakes = &wakes;
        d->inspector = make_inspector(Service::Ftp, d->host);
        d->wire = std::make_unique<Wire>(*d->inspector, d->host);
        data.push_back(std::move(d));
        return data.back().get();
    }
    void login() {
        server("220 (vsFTPd 3.0.3)\r\n");
        client("USER ftp\r\n");
        server("331 Please specify the password.\r\n");
        client("PASS secret\r\n");
        server("230 Login successful.\r\n");
    }
    // PASV and the data connection it predicts.
    Data* passive(uint16_t port) {
        client("PASV\r\n");
        server("227 Entering Passive Mode (10,0,1,1," + std::to_string(port >> 8) + "," +
               std::to_string(port & 0xff) + ").\r\n");
        return connect(kClient, kServer, port);
    }
};

// Answers the data flow's scans: infected when the bytes hold EICAR.
void judge(Data& d) {
    for (size_t i = 0; i < d.host.scans.size(); ++i) {
        FakeHost::Scan& s = d.host.scans[i];
        if (s.answered) continue;
        s.answered = true;
        bool eicar = s.bytes.find(kEicar) != std::string::npos;
        d.inspector->on_verdict(s.id, eicar ? virus() : ScanVerdict::clean());
        d.wire->redrive();
    }
}

// The receiver of a file `from` the sender of that direction closes the data
// connection, having read it: the data flow's next tick tells the session.
void receiver_closes(Data& d, Direction from) {
    d.host.ended_directions[size_t(from == C2S ? S2C : C2S)] = true;
    d.inspector->on_tick(d.host.now);
}

std::string file_of(size_t n, char seed) {
    std::string s;
    for (size_t i = 0; i < n; ++i)
        s += char(seed + i % 23);
    return s;
}

const std::string kLogin =
    "220 (vsFTPd 3.0.3)\r\n331 Please specify the password.\r\n230 Login successful.\r\n";

TEST(FtpInspector, PassiveRetrCleanIsByteIdenticalAnd226WaitsForTheVerdict) {
    Session s;
    s.login();
    Data* d = s.passive(50000);
    ASSERT_NE(d, nullptr) << "the 227 reply predicted the data connection";
    EXPECT_EQ(s.expectations.size(), 0u) << "claimed";
    s.client("CWD /pub\r\n");
    s.server("250 Directory successfully changed.\r\n");
    s.client("RETR report.pdf\r\n");
    s.server("150 Opening BINARY mode data connection for report.pdf (30000 bytes).\r\n");
    std::string file = file_of(30000, 'a');
    d->wire->send(S2C, file, d->rng, 1400);
    d->wire->fin(S2C);
    s.server("226 Transfer complete.\r\n");
    EXPECT_EQ(d->wire->out(S2C), "") << "held whole until its verdict";
    std::string before = s.wire->out(S2C);
    EXPECT_EQ(before.find("226"), std::string::npos) << "the completion waits too";
    ASSERT_EQ(d->host.scans.size(), 1u);
    EXPECT_EQ(d->host.scans[0].info.name, "/pub/report.pdf");
    EXPECT_EQ(d->host.scans[0].info.file_name, "report.pdf");
    EXPECT_EQ(d->host.scans[0].info.direction, S2C);
    EXPECT_EQ(d->host.scans[0].bytes, file);
    judge(*d);
    EXPECT_EQ(d->wire->out(S2C), file);
    s.pump();
    EXPECT_EQ(s.wire->out(S2C), before + "226 Transfer complete.\r\n");
    EXPECT_TRUE(d->host.records.empty());
    EXPECT_EQ(s.expectations.counters().files_scanned.load(), 1u);
}

TEST(FtpInspector, InfectedDownloadGetsTheDropMessageAnd550ThenTheSessionGoesOn) {
    for (unsigned seed = 1; seed <= 10; ++seed) {
        Session s;
        s.rng.seed(seed);
        s.login();
        Data* d = s.passive(50001);
        ASSERT_NE(d, nullptr);
        s.client("RETR /pub/eicar.com\r\n");
        s.server("150 Opening BINARY mode data connection.\r\n");
        d->wire->send(S2C, kEicar, d->rng, 16);
        d->wire->fin(S2C);
        s.server("226 Transfer complete.\r\n");
        // The client asks for the next file before the verdict: it waits
        // behind the held completion, in order.
        s.client("PWD\r\n");
        s.server("257 \"/pub\" is the current directory\r\n");
        judge(*d);
        const std::string& got = d->wire->out(S2C);
        EXPECT_EQ(got.find("EICAR"), std::string::npos);
        EXPECT_NE(got.find("/pub/eicar.com"), std::string::npos) << got;
        EXPECT_NE(got.find("Eicar-Test-Signature"), std::string::npos) << got;
        EXPECT_NE(got.find("was blocked"), std::string::npos) << got;
        s.pump();
        EXPECT_TRUE(s.wire->out(S2C).ends_with("150 Opening BINARY mode data connection.\r\n"))
            << "the 550 waits until the client has read the drop message: " << s.wire->out(S2C);
        receiver_closes(*d, S2C);
        s.pump();
        std::string control = s.wire->out(S2C).substr(kLogin.size());
        size_t at = control.find(
            "550 Transfer of /pub/eicar.com refused by nfqscan: "
            "Eicar-Test-Signature (virus), event ev-1\r\n");
        ASSERT_NE(at, std::string::npos) << control;
        EXPECT_EQ(control.find("226"), std::string::npos) << control;
        EXPECT_TRUE(control.ends_with("257 \"/pub\" is the current directory\r\n")) << control;
        ASSERT_EQ(d->host.records.size(), 1u);
        EXPECT_EQ(d->host.records[0].action, "block");
        EXPECT_EQ(d->host.records[0].info.name, "/pub/eicar.com");

        // The next transfer on the same session arrives intact.
        Data* next = s.passive(50002);
        ASSERT_NE(next, nullptr);
        s.client("RETR clean.txt\r\n");
        s.server("150 ok\r\n");
        next->wire->send(S2C, "hello\n", next->rng);
        next->wire->fin(S2C);
        s.server("226 Transfer complete.\r\n");
        judge(*next);
        s.pump();
        EXPECT_EQ(next->wire->out(S2C), "hello\n");
        EXPECT_EQ(next->host.scans.at(0).info.name, "/pub/clean.txt") << "PWD told the directory";
        EXPECT_TRUE(s.wire->out(S2C).ends_with("150 ok\r\n226 Transfer complete.\r\n"));
        EXPECT_EQ(s.expectations.counters().replies_replaced.load(), 1u);
    }
}

// curl in active mode checks the control connection before it accepts the
// data connection: a 550 read together with the 150 ends the transfer with
// "FTP accept failed" and the drop message unread. So a blocked download's
// 550 goes once its receiver closed the data connection, or after a grace
// for clients that read the control connection first, or when the data flow
// is gone. A blocked upload's is the server's own reply, after it read.
TEST(FtpInspector, ABlocked550WaitsForTheDropMessagesReaderAtMostAGrace) {
    for (int ending : {0, 1, 2}) {  // receiver closes, grace, flow gone
        SCOPED_TRACE(ending);
        Session s;
        s.login();
        // Active: the data connection's TCP client is the FTP server.
        s.client("PORT 10,0,0,1,200,11\r\n");
        s.server("200 PORT command successful.\r\n");
        s.client("RETR eicar.com\r\n");
        Data* d = s.connect(kServer, kClient, 200 * 256 + 11);
        ASSERT_NE(d, nullptr);
        s.server("150 Opening BINARY mode data connection.\r\n");
        d->wire->send(C2S, kEicar, d->rng);
        d->wire->fin(C2S);
        s.server("226 Transfer complete.\r\n");
        judge(*d);
        EXPECT_NE(d->wire->out(C2S).find("was blocked"), std::string::npos);
        s.pump();
        const std::string held = s.wire->out(S2C);
        EXPECT_EQ(held.find("550"), std::string::npos) << held;
        EXPECT_TRUE(s.host.ticks);
        d->host.ended_directions[size_t(C2S)] = true;  // the sender's FIN: not the reader's
        d->inspector->on_tick(d->host.now);
        s.pump();
        s.host.now += FtpControlInspector::kDropReadGraceMs - 1;
        s.inspector->on_tick(s.host.now);
        s.wire->redrive();
        EXPECT_EQ(s.wire->out(S2C), held) << "the sender's FIN does not release it";
        if (ending == 0) {
            receiver_closes(*d, C2S);
            s.pump();
        } else if (ending == 1) {
            s.host.now += 1;
            ASSERT_TRUE(s.inspector->on_tick(s.host.now));
            s.wire->redrive();
        } else {
            d->wire.reset();
            d->inspector.reset();  // the flow leaves the table
            s.pump();
        }
        EXPECT_TRUE(
            s.wire->out(S2C).ends_with("550 Transfer of eicar.com refused by nfqscan: "
                                       "Eicar-Test-Signature (virus), event ev-1\r\n"))
            << s.wire->out(S2C);
        EXPECT_FALSE(s.host.ticks);
    }
}

TEST(FtpInspector, OnVirusPassDeliversAndLogs) {
    Session s;
    s.login();
    Data* d = s.passive(50003);
    d->host.policy_.on_virus = Action::Pass;
    s.client("RETR eicar.com\r\n");
    s.server("150 ok\r\n");
    d->wire->send(S2C, kEicar, d->rng);
    d->wire->fin(S2C);
    s.server("226 Transfer complete.\r\n");
    judge(*d);
    s.pump();
    EXPECT_EQ(d->wire->out(S2C), kEicar);
    EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
    ASSERT_EQ(d->host.records.size(), 1u);
    EXPECT_EQ(d->host.records[0].action, "pass");
}

TEST(FtpInspector, ActiveStorInfectedTheServerStoresTheDropMessage) {
    Session s;
    s.login();
    // Active: the server connects to the address the client names.
    s.client("PORT 10,0,0,1,200,10\r\n");
    s.server("200 PORT command successful.\r\n");
    s.client("STOR upload.bin\r\n");
    Data* d = s.connect(kServer, kClient, 200 * 256 + 10);
    ASSERT_NE(d, nullptr);
    s.server("150 Ok to send data.\r\n");
    // The data connection's TCP client is the FTP server: the file goes
    // from the TCP server (the FTP client) to it.
    d->wire->send(S2C, "MZ" + kEicar, d->rng);
    d->wire->fin(S2C);
    ASSERT_EQ(d->host.scans.size(), 1u);
    EXPECT_EQ(d->host.scans[0].info.direction, C2S) << "an upload";
    judge(*d);
    EXPECT_NE(d->wire->out(S2C).find("was blocked"), std::string::npos);
    EXPECT_EQ(d->wire->out(S2C).find("EICAR"), std::string::npos);
    s.server("226 Transfer complete.\r\n");
    s.pump();
    EXPECT_NE(s.wire->out(S2C).find("550 Transfer of upload.bin refused"), std::string::npos)
        << s.wire->out(S2C);
}

TEST(FtpInspector, EprtAndEpsvOverIPv6) {
    Session s;
    s.login();
    s.client("EPSV\r\n");
    s.server("229 Entering Extended Passive Mode (|||6446|)\r\n");
    // EPSV names no address: the control connection's server.
    EXPECT_NE(s.connect(kClient, kServer, 6446), nullptr);
    s.client("EPRT |2|fd00::1|5282|\r\n");
    s.server("200 EPRT command successful.\r\n");
    uint8_t a[16];
    inet_pton(AF_INET6, "fd00::1", a);
    EXPECT_NE(s.connect(kServer, IpAddress::from_v6(a), 5282), nullptr);
    s.client("EPRT |2|fd00::1|99999|\r\n");
    s.server("200 EPRT command successful.\r\n");
    EXPECT_EQ(s.expectations.counters().refused_addresses.load(), 1u);
    EXPECT_EQ(s.expectations.size(), 0u);
}

TEST(FtpInspector, ListingsPassUnscanned) {
    Session s;
    s.login();
    Data* d = s.passive(50004);
    s.client("LIST\r\n");
    s.server("150 Here comes the directory listing.\r\n");
    d->wire->send(S2C, "-rw-r--r-- 1 0 0 68 eicar.com\r\n", d->rng);
    EXPECT_EQ(d->wire->out(S2C), "-rw-r--r-- 1 0 0 68 eicar.com\r\n");
    d->wire->fin(S2C);
    s.server("226 Directory send OK.\r\n");
    EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Directory send OK.\r\n"));
    EXPECT_TRUE(d->host.scans.empty());
}

TEST(FtpInspector, RestIsPartialAndItsFallbackDecides) {
    for (Action partial : {Action::Pass, Action::Block}) {
        Session s;
        s.login();
        Data* d = s.passive(50005);
        d->host.policy_.fallback[size_t(Category::Partial)] = partial;
        s.client("REST 100\r\n");
        s.server("350 Restart position accepted (100).\r\n");
        s.client("RETR big.iso\r\n");
        s.server("150 ok\r\n");
        d->wire->send(S2C, "tail of the file", d->rng);
        EXPECT_TRUE(d->host.scans.empty()) << "a part is not scanned";
        ASSERT_EQ(d->host.fallbacks.size(), 1u);
        EXPECT_EQ(d->host.fallbacks[0].what, "partial");
        if (partial == Action::Pass) {
            EXPECT_EQ(d->wire->out(S2C), "tail of the file");
            s.server("226 Transfer complete.\r\n");
            EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
        } else {
            EXPECT_NE(d->host.closed_with.find("was blocked"), std::string::npos);
            // The server, reset mid-file, says so; the client hears 550.
            s.server("426 Failure writing network stream.\r\n");
            s.pump();
            EXPECT_EQ(s.wire->out(S2C).find("426"), std::string::npos);
            EXPECT_NE(s.wire->out(S2C).find("550 Transfer of big.iso refused by nfqscan: partial"),
                      std::string::npos)
                << s.wire->out(S2C);
        }
        EXPECT_EQ(s.expectations.counters().resumed.load(), 1u);
    }
}

TEST(FtpInspector, AborEndsTheObjectWithoutAVerdict) {
    Session s;
    s.login();
    Data* d = s.passive(50006);
    s.client("RETR eicar.com\r\n");
    s.server("150 ok\r\n");
    d->wire->send(S2C, file_of(5000, 'x'), d->rng, 500);
    s.client(
        "\xff\xf4\xff\xf2"
        "ABOR\r\n");
    ASSERT_EQ(s.host.fallbacks.size(), 1u) << "logged";
    EXPECT_EQ(s.host.fallbacks[0].what, "partial");
    EXPECT_EQ(s.host.fallbacks[0].action, "drop");
    d->wire->fin(S2C);
    EXPECT_TRUE(d->host.scans.empty());
    EXPECT_EQ(d->wire->out(S2C), "") << "nothing of the aborted file";
    s.server("426 Failure writing network stream.\r\n226 ABOR successful.\r\n");
    s.pump();
    EXPECT_TRUE(
        s.wire->out(S2C).ends_with("426 Failure writing network stream.\r\n"
                                   "226 ABOR successful.\r\n"));
    EXPECT_EQ(s.expectations.counters().aborted.load(), 1u);
}

TEST(FtpInspector, AborWhileTheFileIsDeliveredResetsTheDataConnection) {
    // A server that waits on its data connection does not see ABOR (its
    // urgent flag does not cross the engine): the data connection is reset
    // so the server goes on to answer it.
    Session s;
    s.login();
    Data* d = s.passive(50010);
    s.client("RETR big.bin\r\n");
    s.server("150 ok\r\n");
    d->wire->send(S2C, file_of(3000, 'b'), d->rng);
    d->wire->fin(S2C);
    judge(*d);
    EXPECT_TRUE(d->host.ticks) << "a held file looks for ABOR";
    EXPECT_FALSE(d->inspector->on_tick(1)) << "no ABOR yet";
    s.client("ABOR\r\n");
    EXPECT_TRUE(d->inspector->on_tick(2));
    EXPECT_EQ(d->host.resets, 1);
    s.server("426 Failure writing network stream.\r\n226 ABOR successful.\r\n");
    EXPECT_TRUE(
        s.wire->out(S2C).ends_with("426 Failure writing network stream.\r\n"
                                   "226 ABOR successful.\r\n"));
}

TEST(FtpInspector, ADataFlowThatEndsUnfinishedLetsTheCompletionGo) {
    Session s;
    s.login();
    Data* d = s.passive(50011);
    s.client("RETR x\r\n");
    s.server("150 ok\r\n");
    d->wire->send(S2C, "partial", d->rng);  // then the connection is reset
    s.server("226 Transfer complete.\r\n");
    EXPECT_FALSE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
    d->wire.reset();
    d->inspector.reset();  // the flow leaves the table
    s.pump();
    EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
}

TEST(FtpInspector, AnEmptyFileWaitsAGraceForBytesThatMayBeOnTheirWay) {
    Session s;
    s.login();
    Data* d = s.passive(50007);
    ASSERT_NE(d, nullptr);
    s.client("RETR empty\r\n");
    s.server("150 ok\r\n");
    d->wire->fin(S2C);  // no byte: the inspector never hears of it
    s.server("226 Transfer complete.\r\n");
    EXPECT_FALSE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
    EXPECT_TRUE(s.host.ticks);
    s.host.now += FtpControlInspector::kEmptyTransferGraceMs;
    ASSERT_TRUE(s.inspector->on_tick(s.host.now));
    s.wire->redrive();
    EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
    EXPECT_FALSE(s.host.ticks);
}

TEST(FtpInspector, DataThatNeverCrossedIsLoggedNotWaitedFor) {
    Session s;
    s.login();
    s.client("PASV\r\n");
    s.server("227 Entering Passive Mode (10,0,1,1,200,1).\r\n");
    s.client("RETR x\r\n");  // its data connection takes another path
    s.server("150 ok\r\n226 Transfer complete.\r\n");
    EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
    ASSERT_EQ(s.host.fallbacks.size(), 1u);
    EXPECT_EQ(s.expectations.counters().data_unseen.load(), 1u);
}

TEST(FtpInspector, ContentSizeFallback) {
    for (Action size : {Action::Pass, Action::Block}) {
        Session s;
        s.login();
        Data* d = s.passive(50008);
        d->host.limits_.max_content_size = 4096;
        d->host.policy_.fallback[size_t(Category::ContentSize)] = size;
        s.client("RETR big\r\n");
        s.server("150 ok\r\n");
        std::string file = file_of(10000, 'k');
        d->wire->send(S2C, file, d->rng, 1000);
        if (size == Action::Pass) {
            d->wire->fin(S2C);
            EXPECT_EQ(d->wire->out(S2C), file);
            s.server("226 Transfer complete.\r\n");
            EXPECT_TRUE(s.wire->out(S2C).ends_with("226 Transfer complete.\r\n"));
        } else {
            EXPECT_EQ(d->host.closed_direction, S2C);
            EXPECT_NE(d->host.closed_with.find("content-size"), std::string::npos);
            EXPECT_EQ(d->wire->out(S2C), "");
            s.server("226 Transfer complete.\r\n");
            s.pump();
            EXPECT_EQ(s.wire->out(S2C).find("550 "), std::string::npos);
            receiver_closes(*d, S2C);
            s.pump();
            EXPECT_NE(s.wire->out(S2C).find("550 "), std::string::npos);
        }
        ASSERT_EQ(d->host.fallbacks.size(), 1u);
        EXPECT_EQ(d->host.fallbacks[0].what, "content-size");
    }
}

TEST(FtpInspector, AuthTlsReleasesTheControlFlow) {
    Session s;
    s.server("220 (vsFTPd 3.0.3)\r\n");
    s.client("AUTH TLS\r\n");
    s.client(std::string("\x16\x03\x01\x00\x05hello", 10));  // waits for the reply
    EXPECT_EQ(s.wire->out(C2S), "AUTH TLS\r\n");
    s.server("234 Proceed with negotiation.\r\n");
    ASSERT_EQ(s.host.releases.size(), 1u);
    EXPECT_EQ(s.host.releases[0], ReleaseReason::Tls);
    EXPECT_EQ(s.wire->out(C2S), "AUTH TLS\r\n" + std::string("\x16\x03\x01\x00\x05hello", 10));
    EXPECT_EQ(s.expectations.counters().tls.load(), 1u);
}

TEST(FtpInspector, MultiLineCompletionIsHeldWholeAndHostileLinesAreProtocolErrors) {
    Session s;
    s.login();
    Data* d = s.passive(50009);
    s.client("RETR a\r\n");
    s.server("150 ok\r\n");
    d->wire->send(S2C, "data", d->rng);
    d->wire->fin(S2C);
    s.server("226-Transfer complete.\r\n226-Stats: 4 bytes\r\n");
    EXPECT_EQ(s.wire->out(S2C).find("226-"), std::string::npos);
    s.server("226 Bye.\r\n");
    judge(*d);
    s.pump();
    EXPECT_TRUE(
        s.wire->out(S2C).ends_with("226-Transfer complete.\r\n226-Stats: 4 bytes\r\n226 Bye.\r\n"));
    s.server("garbage that is no reply\r\n");
    EXPECT_EQ(s.host.resets, 1) << "protocol-error blocks by default";
    EXPECT_EQ(s.expectations.counters().protocol_errors.load(), 1u);
}

TEST(FtpInspector, NotAnFtpServerIsReleased) {
    Session s;
    s.server("SSH-2.0-OpenSSH_9.2\r\n");
    ASSERT_EQ(s.host.releases.size(), 1u);
    EXPECT_EQ(s.host.releases[0], ReleaseReason::NotProtocol);
}

TEST(FtpInspector, TheControlFlowsEndForgetsItsExpectations) {
    {
        Session s;
        s.login();
        s.client("PASV\r\n");
        s.server("227 Entering Passive Mode (10,0,1,1,200,3).\r\n");
        EXPECT_EQ(s.expectations.size(), 1u);
        s.inspector.reset();  // the flow ends
        EXPECT_EQ(s.expectations.size(), 0u);
        s.wire.reset();
    }
}

}  // namespace
}  // namespace nfqscan
