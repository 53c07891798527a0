// The FTP control channel (issue 12): the parser's functions on hostile
// lines (PASV/EPSV/PORT/EPRT arguments are classic overflow sites), and the
// control inspector (make_inspector(Service::Ftp, host) without a data
// session) in the simulator of inspector_simulator.h.
//
// Input layout (make_corpus.py): u8 mode, then
//   mode bit 0 clear: text, split at LF; each line goes to every parser;
//   mode bit 0 set:   the simulator's script (setup byte, then operations,
//                     see inspector_simulator.h).
// Checked, beyond the simulator's invariants: a parsed port is never 0; a
// PASV/PORT/EPRT address is present and an EPSV one absent; a verb is upper
// case and short; a reply code is 100..599; paths stay within kMaxPath.
#include <cctype>
#include <string>

#include "../../src/proto/ftp/ftp_parser.h"
#include "inspector_simulator.h"

namespace nfqscan::fuzz {
namespace {

void check_host_port(const std::optional<ftp::HostPort>& hp, bool with_address) {
    if (!hp) return;
    FUZZ_CHECK(hp->port != 0);
    FUZZ_CHECK(hp->has_address == with_address);
}

void parse_lines(std::string_view text) {
    ftp::ReplyFramer framer;
    std::string cwd = "/";
    while (!text.empty()) {
        size_t lf = text.find('\n');
        std::string_view line = text.substr(0, lf);
        text = lf == std::string_view::npos ? std::string_view() : text.substr(lf + 1);
        ftp::Command c = ftp::parse_command(line);
        FUZZ_CHECK(c.verb.size() <= ftp::kMaxVerb);
        for (char ch : c.verb)
            FUZZ_CHECK(ch >= 'A' && ch <= 'Z');
        FUZZ_CHECK(c.arg.size() <= line.size());
        ftp::ReplyLine r = ftp::parse_reply_line(line);
        FUZZ_CHECK(r.code == 0 || (r.code >= 100 && r.code <= 599));
        if (framer.feed(line) == ftp::ReplyFramer::Step::Complete)
            FUZZ_CHECK(framer.code() >= 100 && framer.code() <= 599);
        check_host_port(ftp::parse_pasv_reply(line), true);
        check_host_port(ftp::parse_epsv_reply(line), false);
        check_host_port(ftp::parse_port_arg(c.arg), true);
        check_host_port(ftp::parse_eprt_arg(c.arg), true);
        if (std::optional<std::string> dir = ftp::parse_257(line))
            FUZZ_CHECK(dir->size() <= ftp::kMaxPath + 1);
        cwd = ftp::join_path(cwd, c.arg);
        FUZZ_CHECK(cwd.size() <= ftp::kMaxPath);
    }
}

}  // namespace
}  // namespace nfqscan::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace nfqscan;
    fuzz::FuzzInput in(data, size);
    uint8_t mode = in.u8();
    if ((mode & 1) == 0) {
        fuzz::parse_lines(fuzz::as_text(in.rest()));
        return 0;
    }
    // The control inspector holds no object: its memory is its state.
    static const fuzz::SimulatedProtocol kFtp{Service::Ftp, 64 * 1024, false, true};
    fuzz::Simulator simulator(in, kFtp);
    simulator.run([](ProtocolPolicy&, uint8_t) {});
    return 0;
}
