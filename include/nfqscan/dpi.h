// nDPI wrapper: one DpiEngine (nDPI detection module) per queue worker thread,
// one DpiFlow per flow while it is being classified. nDPI's label is shown to
// the user and can claim a flow, but never alone releases one (nDPI 4.2 calls
// plain IMAP "IMAPS" and misses POP3 off port 110; DESIGN.md).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "nfqscan/service.h"

struct ndpi_detection_module_struct;
struct ndpi_flow_struct;

namespace nfqscan {

struct DpiLabel {
    uint16_t master = 0;  // e.g. HTTP for HTTP.Google
    uint16_t app = 0;
    bool known() const { return master != 0 || app != 0; }
};

class DpiFlow {
  public:
    DpiFlow();
    ~DpiFlow();
    DpiFlow(const DpiFlow&) = delete;
    DpiFlow& operator=(const DpiFlow&) = delete;
    ndpi_flow_struct* get() const { return flow_; }
    bool detected = false;  // nDPI reached a final answer
    uint8_t packets = 0;

  private:
    ndpi_flow_struct* flow_;
};

class DpiEngine {
  public:
    DpiEngine();
    ~DpiEngine();
    DpiEngine(const DpiEngine&) = delete;
    DpiEngine& operator=(const DpiEngine&) = delete;

    // Feed one IP packet of the flow. Returns the label so far.
    DpiLabel process(DpiFlow& flow, std::span<const uint8_t> ip_packet, uint64_t now_ms);
    // No more packets will come: nDPI's best answer (port guesses excluded).
    DpiLabel give_up(DpiFlow& flow);

    std::string name(DpiLabel label) const;
    // The scanned service nDPI's label names, or None.
    static Service service_of(DpiLabel label);

    // Bytes nDPI holds on this thread (module and flows), from allocation hooks.
    static size_t allocated_bytes();

  private:
    ndpi_detection_module_struct* module_;
};

}  // namespace nfqscan
