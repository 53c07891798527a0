// parse_quarantine_entry() on arbitrary text (an ID.json someone edited, or
// a disk that returned garbage): it returns an entry or nullopt, never
// throws, and an entry it returns names a safe id and survives a round trip.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "nfqscan/quarantine.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    std::optional<nfqscan::QuarantineEntry> e = nfqscan::parse_quarantine_entry(text);
    if (!e) return 0;
    FUZZ_CHECK(nfqscan::valid_quarantine_id(e->id));
    const std::string again = nfqscan::quarantine_entry_json(*e).dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::optional<nfqscan::QuarantineEntry> back = nfqscan::parse_quarantine_entry(again);
    FUZZ_CHECK(back && back->id == e->id && back->size == e->size && back->time == e->time);
    return 0;
}
