#include <nlohmann/json.hpp>

#include "nfqscan/inspector.h"

namespace nfqscan {

InspectionCounters& InspectionCounters::operator+=(const InspectionCounters& o) {
    flows += o.flows;
    objects += o.objects;
    scanned_bytes += o.scanned_bytes;
    clean += o.clean;
    infected += o.infected;
    for (size_t i = 0; i < errors.size(); ++i)
        errors[i] += o.errors[i];
    allowlisted += o.allowlisted;
    blocked += o.blocked;
    passed += o.passed;
    resets += o.resets;
    for (size_t i = 0; i < released.size(); ++i)
        released[i] += o.released[i];
    held_bytes += o.held_bytes;
    for (size_t i = 0; i < spam.size(); ++i)
        spam[i] += o.spam[i];
    for (const auto& [name, n] : o.inspector)
        inspector[name] += n;
    return *this;
}

void to_json(nlohmann::json& j, const InspectionCounters& c) {
    nlohmann::json errors = nlohmann::json::object();
    for (size_t i = 0; i < kCategoryCount; ++i)
        errors[std::string(category_name(Category(i)))] = c.errors[i];
    nlohmann::json released = nlohmann::json::object();
    for (size_t i = 0; i < kReleaseReasonCount; ++i)
        released[std::string(release_reason_name(ReleaseReason(i)))] = c.released[i];
    j = {{"flows", c.flows},
         {"objects", c.objects},
         {"scanned_bytes", c.scanned_bytes},
         {"clean", c.clean},
         {"infected", c.infected},
         {"errors", errors},
         {"allowlisted", c.allowlisted},
         {"actions", {{"block", c.blocked}, {"pass", c.passed}, {"reset", c.resets}}},
         {"released", released},
         {"held_bytes", c.held_bytes}};
    nlohmann::json spam = nlohmann::json::object();
    for (size_t i = 0; i < c.spam.size(); ++i)
        spam[std::string(spam_action_name(SpamAction(i)))] = c.spam[i];
    j["spam"] = std::move(spam);
    if (!c.inspector.empty()) {
        nlohmann::json own = nlohmann::json::object();
        for (const auto& [name, n] : c.inspector)
            own[name] = n;
        j["inspector"] = std::move(own);
    }
}

}  // namespace nfqscan
