#include <malloc.h>

#include <cstring>

#include <mutex>

#include "nfqscan/dpi.h"

extern "C" {
#include <ndpi/ndpi_api.h>
}

namespace nfqscan {

namespace {

// nDPI allocates through hooks that are process-wide; count the usable size
// per thread (every nDPI call of a worker happens on that worker's thread).
thread_local size_t tl_ndpi_bytes = 0;

void* counting_malloc(size_t size) {
    void* p = std::malloc(size);
    if (p) tl_ndpi_bytes += malloc_usable_size(p);
    return p;
}

void counting_free(void* p) {
    if (!p) return;
    size_t size = malloc_usable_size(p);
    tl_ndpi_bytes = tl_ndpi_bytes > size ? tl_ndpi_bytes - size : 0;
    std::free(p);
}

std::once_flag hooks_once;
std::mutex init_mutex;  // nDPI module set-up touches shared tables

}  // namespace

DpiFlow::DpiFlow() {
    flow_ = static_cast<ndpi_flow_struct*>(ndpi_flow_malloc(SIZEOF_FLOW_STRUCT));
    if (!flow_) throw std::bad_alloc();
    std::memset(flow_, 0, SIZEOF_FLOW_STRUCT);
}

DpiFlow::~DpiFlow() {
    ndpi_flow_free(flow_);
}

DpiEngine::DpiEngine() {
    std::call_once(hooks_once, [] {
        set_ndpi_malloc(counting_malloc);
        set_ndpi_free(counting_free);
    });
    std::lock_guard lock(init_mutex);
    module_ = ndpi_init_detection_module(ndpi_no_prefs);
    if (!module_) throw std::runtime_error("nDPI: cannot create a detection module");
    NDPI_PROTOCOL_BITMASK all;
    NDPI_BITMASK_SET_ALL(all);
    ndpi_set_protocol_detection_bitmask2(module_, &all);
    ndpi_finalize_initialization(module_);
}

DpiEngine::~DpiEngine() {
    ndpi_exit_detection_module(module_);
}

DpiLabel DpiEngine::process(DpiFlow& flow, std::span<const uint8_t> ip_packet, uint64_t now_ms) {
    // nDPI takes a 16-bit length; a larger GSO packet's first 64 KiB suffice.
    auto length = static_cast<unsigned short>(std::min<size_t>(ip_packet.size(), 65535));
    ndpi_protocol p =
        ndpi_detection_process_packet(module_, flow.get(), ip_packet.data(), length, now_ms);
    ++flow.packets;
    DpiLabel label{p.master_protocol, p.app_protocol};
    if (label.known() && !ndpi_extra_dissection_possible(module_, flow.get())) flow.detected = true;
    return label;
}

DpiLabel DpiEngine::give_up(DpiFlow& flow) {
    uint8_t guessed = 0;
    ndpi_protocol p = ndpi_detection_giveup(module_, flow.get(), 0, &guessed);
    flow.detected = true;
    return {p.master_protocol, p.app_protocol};
}

std::string DpiEngine::name(DpiLabel label) const {
    if (!label.known()) return "Unknown";
    char buffer[64];
    ndpi_protocol p{label.master, label.app, NDPI_PROTOCOL_CATEGORY_UNSPECIFIED};
    return ndpi_protocol2name(module_, p, buffer, sizeof buffer);
}

Service DpiEngine::service_of(DpiLabel label) {
    for (uint16_t id : {label.master, label.app}) {
        switch (id) {
            case NDPI_PROTOCOL_HTTP:
            case NDPI_PROTOCOL_HTTP_CONNECT:
            case NDPI_PROTOCOL_HTTP_PROXY:
                return Service::Http;
            case NDPI_PROTOCOL_MAIL_SMTP:
                return Service::Smtp;
            case NDPI_PROTOCOL_MAIL_POP:
                return Service::Pop3;
            case NDPI_PROTOCOL_MAIL_IMAP:
                return Service::Imap;
            case NDPI_PROTOCOL_FTP_CONTROL:
                return Service::Ftp;
            default:
                break;
        }
    }
    return Service::None;
}

size_t DpiEngine::allocated_bytes() {
    return tl_ndpi_bytes;
}

}  // namespace nfqscan
