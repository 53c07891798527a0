// The IMAP inspector (make_inspector(Service::Imap, host)) in the
// simulator of inspector_simulator.h; layout and setup in
// mail_inspector_fuzz.h.
#include "mail_inspector_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return nfqscan::fuzz::run_mail_inspector(nfqscan::Service::Imap, data, size);
}
