// The replay's capture reading path on hostile files: libpcap's reader
// (pcap and pcapng: bad lengths, records cut short, absurd headers), then
// parse_frame() and decode_packet() on every record, for each link type the
// file names and for the others too. No read outside a record (ASan), what
// an Ok frame returns lies inside the record, a bounded number of records.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>

#include "fuzz_check.h"
#include "nfqscan/capture.h"
#include "nfqscan/packet.h"

namespace {

constexpr int kLinkTypes[] = {0, 1, 12, 108, 113, 228, 229, 276};
constexpr int kMaxRecords = 256;

void check_frame(int dlt, std::span<const uint8_t> record) {
    nfqscan::CaptureFrame frame;
    if (nfqscan::parse_frame(dlt, record, frame) != nfqscan::FrameStatus::Ok) return;
    FUZZ_CHECK(!frame.ip.empty());
    FUZZ_CHECK(frame.ip.data() >= record.data());
    FUZZ_CHECK(frame.ip.data() + frame.ip.size() == record.data() + record.size());
    FUZZ_CHECK(frame.ethertype == 0x0800 || frame.ethertype == 0x86dd);
    nfqscan::DecodedPacket p;
    (void)nfqscan::decode_packet(frame.ip, p);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::span<const uint8_t> input(data, size);
    // The bytes as one frame of every link type.
    for (int dlt : kLinkTypes)
        check_frame(dlt, input);
    // The bytes as a capture file.
    if (size == 0) return 0;
    FILE* file = fmemopen(const_cast<uint8_t*>(data), size, "r");
    if (!file) return 0;
    try {
        nfqscan::CaptureReader reader(file, "fuzz");
        nfqscan::CapturedPacket packet;
        for (int i = 0; i < kMaxRecords && reader.next(packet); ++i) {
            FUZZ_CHECK(packet.data.size() <= size);
            check_frame(reader.link_type(), packet.data);
        }
    } catch (const nfqscan::CaptureError&) {
        // Not a capture libpcap reads: refused with its reason.
    }
    return 0;
}
