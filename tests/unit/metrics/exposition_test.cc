// The text format itself: HELP/TYPE once per family, samples grouped,
// escaping, numbers, cumulative histogram buckets.
#include <gtest/gtest.h>

#include <array>
#include <limits>

#include "nfqscan/metrics.h"

namespace nfqscan {
namespace {

using Type = Exposition::Type;

TEST(Exposition, GroupsSamplesUnderOneHelpAndTypeInFirstUseOrder) {
    Exposition e;
    e.sample("a_total", Type::Counter, "first", {{"queue", "0"}}, 3);
    e.sample("b", Type::Gauge, "second", {}, 1.5);
    e.sample("a_total", Type::Counter, "ignored", {{"queue", "1"}}, 4);
    EXPECT_EQ(e.text(),
              "# HELP a_total first\n"
              "# TYPE a_total counter\n"
              "a_total{queue=\"0\"} 3\n"
              "a_total{queue=\"1\"} 4\n"
              "# HELP b second\n"
              "# TYPE b gauge\n"
              "b 1.5\n");
}

TEST(Exposition, WritesNumbersAndBoolsAndSkipsWhatIsNotANumber) {
    Exposition e;
    e.sample("big", Type::Counter, "h", {}, std::numeric_limits<uint64_t>::max());
    e.sample("flag", Type::Gauge, "h", {{"x", "y"}}, true);
    e.sample("flag", Type::Gauge, "h", {{"x", "z"}}, false);
    e.sample("none", Type::Gauge, "h", {}, nullptr);
    e.sample("text", Type::Gauge, "h", {}, "string");
    e.sample("negative", Type::Gauge, "h", {}, -2);
    const std::string t = e.text();
    EXPECT_NE(t.find("big 18446744073709551615\n"), std::string::npos) << t;
    EXPECT_NE(t.find("flag{x=\"y\"} 1\nflag{x=\"z\"} 0\n"), std::string::npos) << t;
    EXPECT_NE(t.find("negative -2\n"), std::string::npos) << t;
    EXPECT_EQ(t.find("none"), std::string::npos) << t;
    EXPECT_EQ(t.find("text"), std::string::npos) << t;
}

TEST(Exposition, EscapesLabelValuesAndHelpAndMakesNamesValid) {
    EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    EXPECT_EQ(metric_name("content-size"), "content_size");
    EXPECT_EQ(metric_name("9lives"), "_9lives");
    EXPECT_EQ(metric_name(""), "_");
    Exposition e;
    e.sample("nfqscan_x-y", Type::Gauge, "line\none \\ two", {{"bad-label", "v\"\n"}}, 1);
    EXPECT_EQ(e.text(),
              "# HELP nfqscan_x_y line\\none \\\\ two\n"
              "# TYPE nfqscan_x_y gauge\n"
              "nfqscan_x_y{bad_label=\"v\\\"\\n\"} 1\n");
}

TEST(Exposition, HistogramBucketsAreCumulativeWithInfSumAndCount) {
    Exposition e;
    const std::array<double, 3> bounds = {0.0005, 0.001, 0.5};
    const std::array<uint64_t, 4> counts = {2, 0, 3, 1};  // the last: above 0.5
    e.histogram("lat_seconds", "h", {{"engine", "x"}}, bounds, counts, 1.25);
    EXPECT_EQ(e.text(),
              "# HELP lat_seconds h\n"
              "# TYPE lat_seconds histogram\n"
              "lat_seconds_bucket{engine=\"x\",le=\"0.0005\"} 2\n"
              "lat_seconds_bucket{engine=\"x\",le=\"0.001\"} 2\n"
              "lat_seconds_bucket{engine=\"x\",le=\"0.5\"} 5\n"
              "lat_seconds_bucket{engine=\"x\",le=\"+Inf\"} 6\n"
              "lat_seconds_sum{engine=\"x\"} 1.25\n"
              "lat_seconds_count{engine=\"x\"} 6\n");
}

}  // namespace
}  // namespace nfqscan
