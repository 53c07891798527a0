// InspectionCounters: summed over flows and workers, and how status shows
// them (the inspectors' own counters under "inspector").
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "nfqscan/inspector.h"

namespace nfqscan {
namespace {

TEST(InspectionCounters, OwnCountersAreSummedByNameAndShownUnderInspector) {
    InspectionCounters a, b;
    a.flows = 1;
    a.inspector["commands"] = 5;
    a.inspector["messages_blocked"] = 1;
    b.flows = 2;
    b.inspector["commands"] = 7;
    b.inspector["partial"] = 0;
    a += b;
    EXPECT_EQ(a.flows, 3u);
    EXPECT_EQ(a.inspector.at("commands"), 12u);
    EXPECT_EQ(a.inspector.at("messages_blocked"), 1u);
    EXPECT_EQ(a.inspector.at("partial"), 0u) << "a counter at 0 is still listed";
    nlohmann::json j = a;
    EXPECT_EQ(j["flows"], 3);
    EXPECT_EQ(j["inspector"]["commands"], 12);
    EXPECT_EQ(j["inspector"]["partial"], 0);
    // A protocol whose inspector keeps no counters of its own has no entry.
    nlohmann::json none = InspectionCounters{};
    EXPECT_FALSE(none.contains("inspector"));
}

}  // namespace
}  // namespace nfqscan
