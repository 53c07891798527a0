// One SMTP submission with libcurl (smtp_submit.h).
#include "nfqscan/smtp_submit.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <sys/socket.h>
#include <algorithm>
#include <memory>
#include <stdexcept>

#include "nfqscan/notifier.h"

namespace nfqscan {

namespace {

struct CurlEasyDeleter {
    void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;

struct CurlSlistDeleter {
    void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

struct Upload {
    std::string_view data;
    size_t offset = 0;
};

size_t read_upload(char* buffer, size_t size, size_t count, void* user) {
    auto* upload = static_cast<Upload*>(user);
    const size_t n = std::min(size * count, upload->data.size() - upload->offset);
    std::copy_n(upload->data.data() + upload->offset, n, buffer);
    upload->offset += n;
    return n;
}

int abort_when_set(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<const std::atomic<bool>*>(user)->load() ? 1 : 0;
}

int set_mark(void* user, curl_socket_t fd, curlsocktype) {
    const uint32_t mark = *static_cast<const uint32_t*>(user);
    // Without CAP_NET_ADMIN the mark is not set; the submission still goes.
    (void)setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
    return CURL_SOCKOPT_OK;
}

}  // namespace

void smtp_client_init() {
    static const CURLcode result = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (result != CURLE_OK)
        throw std::runtime_error(std::string("curl_global_init: ") + curl_easy_strerror(result));
}

std::string smtp_submit(const SmtpSubmission& s) {
    RelayAddress relay;
    try {
        smtp_client_init();
        if (s.relay.empty()) return "no relay configured ([notify] relay)";
        relay = RelayAddress::parse(s.relay);
    } catch (const std::exception& e) {
        return e.what();
    }
    CurlSlist rcpt;
    for (const std::string& r : s.recipients) {
        curl_slist* list = curl_slist_append(rcpt.get(), fmt::format("<{}>", r).c_str());
        if (!list) return "out of memory";
        (void)rcpt.release();  // `list` is the same list, grown
        rcpt.reset(list);
    }
    CurlEasy curl(curl_easy_init());
    if (!curl) return "curl_easy_init failed";
    // The URL's path is the name libcurl says EHLO with.
    const std::string url = fmt::format("{}/{}", relay.url(), s.helo_name);
    const std::string from = fmt::format("<{}>", s.from);
    Upload upload{s.message};
    char errbuf[CURL_ERROR_SIZE] = {};
    CURL* h = curl.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp");
    curl_easy_setopt(h, CURLOPT_PROXY, "");  // no proxy from the environment
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from.c_str());
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt.get());
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(s.message.size()));
    curl_easy_setopt(h, CURLOPT_READFUNCTION, read_upload);
    curl_easy_setopt(h, CURLOPT_READDATA, &upload);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // called on a thread: no SIGALRM
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(s.connect_timeout.count()));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(s.transfer_timeout.count()));
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (s.abort) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, abort_when_set);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, s.abort);
    }
    if (s.mark != 0) {
        curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, set_mark);
        curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, &s.mark);
    }
    const CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) return {};
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    std::string error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (code) error += fmt::format(" (last reply {})", code);
    return error;
}

}  // namespace nfqscan
