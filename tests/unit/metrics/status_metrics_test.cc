// The status snapshot as metrics: the fields land under the documented
// names and labels, and the whole exposition keeps the format's rules.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "nfqscan/metrics.h"

namespace nfqscan {
namespace {

using nlohmann::json;

// A status result in the shape Daemon::status() gives, small.
json sample_status() {
    json buckets = json::array();
    for (uint64_t le : {500, 1000, 2000})
        buckets.push_back({{"le_us", le}, {"count", le == 1000 ? 2 : 1}});
    buckets.push_back({{"le_us", "inf"}, {"count", 1}});
    json errors = {{"timeout", 2}, {"content-size", 0}};
    return {
        {"version", "0.1.0"},
        {"uptime_s", 12.5},
        {"queues",
         {{{"queue", 0}, {"packets", 41}, {"fail_open", false}, {"kernel", {{"queue_dropped", 3}}}},
          {{"queue", 1}, {"packets", 7}, {"fail_open", true}}}},
        {"flows", {{"active", 2}, {"total", 9}, {"max", 262144}}},
        {"services", {{{"name", "http"}, {"active", 2}, {"total", 5}}}},
        {"dpi_protocols", {{{"name", "HTTP \"odd\""}, {"active", 1}, {"total", 1}}}},
        {"packets", {{"tcp", 41}, {"udp", 1}, {"other", 0}, {"malformed", 4}}},
        {"protocols",
         {{"http",
           {{"objects", 4},
            {"clean", 1},
            {"infected", 2},
            {"errors", errors},
            {"actions", {{"block", 2}, {"pass", 0}, {"reset", 0}}},
            {"released", {{"tls", 1}}},
            {"held_bytes", 100}}},
          {"smtp",
           {{"objects", 0},
            {"inspector", {{"messages", 3}}},
            {"spam", {{"tag", 4}, {"reject", 1}}}}}}},
        {"streams",
         {{"memory_bytes", 1000},
          {"conntrack_tcp_liberal", nullptr},
          {"overflow", {{"bypassed", 1}, {"dropped", 0}, {"refused_segments", 5}}},
          {"relay", {{"started", 6}, {"device", "nfqscan0"}}},
          {"inject", {{"failed", 0}, {"busy", 2}}},
          {"peer_checks", {{"syns_refused", 1}}}}},
        {"scan",
         {{"ready", true},
          {"generation", 3},
          {"backend", "inprocess"},
          {"isolation", "process"},
          {"scanner_pids", {10, 11}},
          {"last_reload_error", nullptr},
          {"signatures", {{"builds", 2}, {"checks", {{"inotify", 5}, {"self_check", 1}}}}},
          {"clean", 5},
          {"skipped", 1},
          {"infected", 2},
          {"errors", errors},
          {"scan_latency", {{"count", 5}, {"total_us", 2500000}, {"buckets", buckets}}},
          {"engines", {{"clamav", {{"scans", 4}, {"busy_us", 1500000}}}}},
          {"cache", {{"hits", 7}, {"entries", 3}}},
          {"event_log", {{"open", true}, {"written", 2}, {"path", "/x"}}}}},
        {"notify", {{"sent", 1}, {"failed", 2}, {"queued_now", 0}, {"relay", ""}}},
        {"ftp", {{"sessions", 2}, {"expected_now", 1}}},
    };
}

bool has_line(const std::string& text, const std::string& line) {
    return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(StatusMetrics, FieldsBecomeTheDocumentedMetrics) {
    const std::string t = metrics_text(sample_status());
    for (const char* line : {
             "nfqscan_build_info{version=\"0.1.0\"} 1",
             "nfqscan_uptime_seconds 12.5",
             "nfqscan_queue_packets_total{queue=\"0\"} 41",
             "nfqscan_queue_packets_total{queue=\"1\"} 7",
             "nfqscan_queue_fail_open{queue=\"1\"} 1",
             "nfqscan_kernel_queue_dropped_packets_total{queue=\"0\"} 3",
             "nfqscan_flows_active 2",
             "nfqscan_flows_created_total 9",
             "nfqscan_service_flows_total{service=\"http\"} 5",
             "nfqscan_dpi_flows_active{dpi_protocol=\"HTTP \\\"odd\\\"\"} 1",
             "nfqscan_packets_total{transport=\"udp\"} 1",
             "nfqscan_packets_malformed_total 4",
             "nfqscan_objects_total{protocol=\"http\"} 4",
             "nfqscan_objects_scanned_total{protocol=\"http\",result=\"infected\"} 2",
             "nfqscan_object_errors_total{protocol=\"http\",category=\"timeout\"} 2",
             "nfqscan_actions_total{protocol=\"http\",action=\"block\"} 2",
             "nfqscan_protocol_flows_released_total{protocol=\"http\",reason=\"tls\"} 1",
             "nfqscan_protocol_held_bytes{protocol=\"http\"} 100",
             "nfqscan_inspector_events_total{protocol=\"smtp\",event=\"messages\"} 3",
             "nfqscan_spam_total{protocol=\"smtp\",action=\"reject\"} 1",
             "nfqscan_signature_rebuilds_total 2",
             "nfqscan_signature_checks_total{trigger=\"self_check\"} 1",
             "nfqscan_stream_memory_bytes 1000",
             "nfqscan_stream_overflow_total{outcome=\"bypassed\"} 1",
             "nfqscan_stream_memory_refused_segments_total 5",
             "nfqscan_relays_started_total 6",
             "nfqscan_inject_failures_total{reason=\"busy\"} 2",
             "nfqscan_stream_peer_checks_total{check=\"syns_refused\"} 1",
             "nfqscan_scan_engines_ready 1",
             "nfqscan_scan_engine_generation 3",
             "nfqscan_scanner_processes 2",
             "nfqscan_scan_last_reload_failed 0",
             "nfqscan_scan_info{backend=\"inprocess\",isolation=\"process\"} 1",
             "nfqscan_scan_verdicts_total{result=\"skipped\"} 1",
             "nfqscan_scan_errors_total{category=\"timeout\"} 2",
             "nfqscan_scan_duration_seconds_bucket{le=\"0.0005\"} 1",
             "nfqscan_scan_duration_seconds_bucket{le=\"0.001\"} 3",
             "nfqscan_scan_duration_seconds_bucket{le=\"0.002\"} 4",
             "nfqscan_scan_duration_seconds_bucket{le=\"+Inf\"} 5",
             "nfqscan_scan_duration_seconds_sum 2.5",
             "nfqscan_scan_duration_seconds_count 5",
             "nfqscan_engine_scans_total{engine=\"clamav\"} 4",
             "nfqscan_engine_busy_seconds_total{engine=\"clamav\"} 1.5",
             "nfqscan_verdict_cache_hits_total 7",
             "nfqscan_verdict_cache_entries 3",
             "nfqscan_event_log_open 1",
             "nfqscan_event_log_written_total 2",
             "nfqscan_notifications_total{outcome=\"failed\"} 2",
             "nfqscan_notifications_waiting 0",
             "nfqscan_ftp_sessions_total 2",
             "nfqscan_ftp_expectations_waiting 1",
         })
        EXPECT_TRUE(has_line(t, line)) << "missing: " << line << "\n" << t;
    // Unknown (null) is absent, not 0; strings are not samples.
    EXPECT_EQ(t.find("nfqscan_conntrack_tcp_liberal "), std::string::npos);
    EXPECT_EQ(t.find("relay=\"\""), std::string::npos);
    EXPECT_EQ(t.find("nfqscan_notifications_total{outcome=\"queued_now\"}"), std::string::npos);
}

// The rules promtool checks, on the whole output: every sample under its
// family's HELP and TYPE, each family once, counters named _total,
// histograms' series named _bucket/_sum/_count.
TEST(StatusMetrics, EveryFamilyHasHelpAndTypeOnceAndCountersEndInTotal) {
    const std::string t = metrics_text(sample_status());
    std::istringstream in(t);
    std::string line, family, type;
    std::set<std::string> seen;
    size_t samples = 0;
    while (std::getline(in, line)) {
        if (line.starts_with("# HELP ")) {
            family = line.substr(7, line.find(' ', 7) - 7);
            EXPECT_TRUE(seen.insert(family).second) << "family twice: " << family;
            ASSERT_TRUE(std::getline(in, line));
            ASSERT_TRUE(line.starts_with("# TYPE " + family + " ")) << line;
            type = line.substr(8 + family.size());
            EXPECT_EQ(type == "counter", family.ends_with("_total")) << family << " " << type;
            EXPECT_TRUE(family.starts_with("nfqscan_")) << family;
            continue;
        }
        ASSERT_FALSE(family.empty()) << line;
        const std::string name = line.substr(0, line.find_first_of("{ "));
        if (type == "histogram")
            EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" ||
                        name == family + "_count")
                << line;
        else
            EXPECT_EQ(name, family) << line;
        ++samples;
    }
    EXPECT_GT(samples, 50u);
}

TEST(StatusMetrics, AnEmptyOrOddStatusGivesWhatItCanWithoutThrowing) {
    EXPECT_NO_THROW(metrics_text(json::object()));
    EXPECT_NO_THROW(metrics_text(json::array()));
    EXPECT_NO_THROW(metrics_text({{"queues", 5}, {"scan", {{"scan_latency", "x"}}}}));
    EXPECT_TRUE(has_line(metrics_text(json::object()), "nfqscan_build_info{version=\"null\"} 1"));
}

}  // namespace
}  // namespace nfqscan
