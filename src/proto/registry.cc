// The registry of inspectors: one line per protocol (DESIGN.md "The
// inspector layer": adding a protocol is a folder and a line here).
#include <array>

#include "ftp/ftp_inspector.h"
#include "http/http_inspector.h"
#include "imap/imap_inspector.h"
#include "nfqscan/inspector.h"
#include "pop3/pop3_inspector.h"
#include "smtp/smtp_inspector.h"

namespace nfqscan {

std::unique_ptr<Inspector> make_inspector(Service service, InspectorHost& host) {
    switch (service) {
        case Service::Http:
            return std::make_unique<HttpInspector>(host);
        case Service::Smtp:
            return std::make_unique<SmtpInspector>(host);
        case Service::Pop3:
            return std::make_unique<Pop3Inspector>(host);
        case Service::Imap:
            return std::make_unique<ImapInspector>(host);
        case Service::Ftp:
            // A flow an expectation claimed carries a file; any other FTP
            // flow is a control connection.
            if (std::shared_ptr<FtpSession> session = host.ftp_data())
                return std::make_unique<FtpDataInspector>(host, std::move(session));
            return std::make_unique<FtpControlInspector>(host);
        default:
            return nullptr;
    }
}

bool has_inspector(Service service) {
    return service == Service::Http || service == Service::Smtp || service == Service::Pop3 ||
           service == Service::Imap || service == Service::Ftp;
}

std::string_view release_reason_name(ReleaseReason r) {
    static constexpr std::array<std::string_view, kReleaseReasonCount> kNames = {
        "scan-false", "tls", "upgrade", "not-protocol", "allowlisted"};
    return kNames[size_t(r)];
}

}  // namespace nfqscan
