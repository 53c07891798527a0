// The text exposition format 0.0.4: families, samples, escaping, numbers.
#include <fmt/format.h>

#include <cmath>

#include "nfqscan/metrics.h"

namespace nfqscan {

namespace {

std::string_view type_name(Exposition::Type type) {
    switch (type) {
        case Exposition::Type::Counter:
            return "counter";
        case Exposition::Type::Gauge:
            return "gauge";
        case Exposition::Type::Histogram:
            return "histogram";
    }
    return "untyped";
}

// Backslash and newline escaped; with `quote`, '"' too (label values; HELP
// text leaves it).
std::string escape(std::string_view text, bool quote) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else if (c == '"' && quote)
            out += "\\\"";
        else
            out += c;
    }
    return out;
}

std::string format_double(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", v);  // shortest form that reads back the same
}

// The sample value of a JSON scalar; "" when it has none.
std::string format_value(const nlohmann::json& value) {
    if (value.is_number_unsigned()) return std::to_string(value.get<uint64_t>());
    if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
    if (value.is_number_float()) return format_double(value.get<double>());
    if (value.is_boolean()) return value.get<bool>() ? "1" : "0";
    return "";
}

std::string label_text(const Exposition::Labels& labels) {
    if (labels.empty()) return "";
    std::string out = "{";
    for (size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) out += ',';
        out += metric_name(labels[i].first);
        out += "=\"";
        out += escape_label_value(labels[i].second);
        out += '"';
    }
    return out + "}";
}

}  // namespace

std::string escape_label_value(std::string_view value) {
    return escape(value, true);
}

std::string metric_name(std::string_view name) {
    std::string out;
    out.reserve(name.size() + 1);
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == ':';
        out += ok ? c : '_';
    }
    if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out.insert(out.begin(), '_');
    return out;
}

Exposition::Family& Exposition::family(std::string_view name, Type type, std::string_view help) {
    const std::string valid = metric_name(name);
    if (auto it = index_.find(valid); it != index_.end()) return families_[it->second];
    index_.emplace(valid, families_.size());
    families_.push_back(Family{valid, type, std::string(help), {}});
    return families_.back();
}

void Exposition::sample(std::string_view name, Type type, std::string_view help,
                        const Labels& labels, const nlohmann::json& value) {
    const std::string v = format_value(value);
    if (v.empty()) return;
    Family& f = family(name, type, help);
    f.samples += f.name + label_text(labels) + ' ' + v + '\n';
}

void Exposition::histogram(std::string_view name, std::string_view help, const Labels& labels,
                           std::span<const double> bounds, std::span<const uint64_t> counts,
                           double sum) {
    Family& f = family(name, Type::Histogram, help);
    uint64_t total = 0;
    for (uint64_t n : counts)
        total += n;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds.size(); ++i) {
        // The +Inf bucket holds every observation.
        cumulative = i < bounds.size() ? cumulative + (i < counts.size() ? counts[i] : 0) : total;
        Labels with_le = labels;
        with_le.emplace_back("le", i < bounds.size() ? format_double(bounds[i]) : "+Inf");
        f.samples +=
            f.name + "_bucket" + label_text(with_le) + ' ' + std::to_string(cumulative) + '\n';
    }
    f.samples += f.name + "_sum" + label_text(labels) + ' ' + format_double(sum) + '\n';
    f.samples += f.name + "_count" + label_text(labels) + ' ' + std::to_string(total) + '\n';
}

std::string Exposition::text() const {
    std::string out;
    for (const Family& f : families_) {
        out += "# HELP " + f.name + ' ' + escape(f.help, false) + '\n';
        out += "# TYPE " + f.name + ' ' + std::string(type_name(f.type)) + '\n';
        out += f.samples;
    }
    return out;
}

}  // namespace nfqscan
