// OwnCounters: an inspector's own counters (SmtpCounters, Pop3Counters,
// ImapCounters), kept per flow for the inspector and its tests, and told to
// the host by name as they change, so that the worker sums them over flows
// into InspectionCounters::inspector (nfqscanctl status). A counters struct
// C lists its fields in C::kFields: {name, &C::member} pairs.
#pragma once

#include <cstdint>

#include "nfqscan/inspector.h"

namespace nfqscan {

template <typename C>
class OwnCounters {
  public:
    // Every counter is made known to the host at 0: status lists them all
    // from the first flow of the protocol on.
    explicit OwnCounters(InspectorHost& host) : host_(host) {
        for (const auto& [name, field] : C::kFields)
            host_.count(name, 0);
    }

    void add(uint64_t C::*field, uint64_t n = 1) {
        values_.*field += n;
        for (const auto& [name, f] : C::kFields)
            if (f == field) host_.count(name, n);
    }
    const C& values() const { return values_; }

  private:
    InspectorHost& host_;
    C values_;
};

}  // namespace nfqscan
