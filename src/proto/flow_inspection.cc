#include "nfqscan/flow_inspection.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nfqscan/timestamp.h"

namespace nfqscan {

namespace {

std::string endpoint(const IpAddress& address, uint16_t port) {
    std::string a = address.to_string();
    if (a.find(':') != std::string::npos) return "[" + a + "]:" + std::to_string(port);
    return a + ":" + std::to_string(port);
}

const std::string& host_name() {
    static const std::string name = [] {
        char buf[256] = {};
        if (gethostname(buf, sizeof buf - 1) != 0) return std::string("nfqscan");
        return std::string(buf);
    }();
    return name;
}

std::string_view direction_label(Direction d) {
    return d == Direction::ServerToClient ? "download" : "upload";
}

}  // namespace

void FlowInspectionDeleter::operator()(FlowInspection* i) const {
    delete i;
}

void FlowInspection::Dispatch::on_bytes(uint64_t offset, std::span<const uint8_t> pending,
                                        Push push, StreamSink& sink) {
    // Bytes pass unchanged while the flow is decided: each is shown once.
    if (owner_.flow_.disposition == Disposition::Deciding && !owner_.released_)
        owner_.context_.classify(owner_.flow_, direction_, pending);
    if (owner_.inspecting()) {
        owner_.inspector_->transform(direction_).on_bytes(offset, pending, push, sink);
        return;
    }
    // Being classified, released, or without an inspector: unchanged.
    sink.relay(false);
    sink.pass(pending.size());
}

FlowInspection::FlowInspection(uint64_t id, Flow& flow, InspectionContext& context)
    : id_(id),
      flow_(flow),
      context_(context),
      dispatch_{Dispatch(*this, Direction::ClientToServer),
                Dispatch(*this, Direction::ServerToClient)} {}

FlowInspection::~FlowInspection() = default;

bool FlowInspection::attach(Service service) {
    if (inspector_ || released_ || service == Service::None) return inspecting();
    service_ = service;
    if (!context_.config().protocols[size_t(service)].policy.scan) {
        released_ = true;
        ++context_.counters(service).released[size_t(ReleaseReason::NotScanned)];
        return false;
    }
    inspector_ = make_inspector(service, *this);
    if (inspector_) ++context_.counters(service).flows;
    return inspecting();
}

void FlowInspection::count(std::string_view name, uint64_t n) {
    auto& own = context_.counters(service_).inspector;
    auto it = own.find(name);
    if (it == own.end()) it = own.emplace(std::string(name), 0).first;
    it->second += n;
}

void FlowInspection::on_verdict(uint64_t object_id, const ScanVerdict& verdict) {
    if (!inspector_) return;
    InspectionCounters& c = context_.counters(service_);
    if (verdict.is_clean())
        ++c.clean;
    else if (verdict.is_infected())
        ++c.infected;
    else
        ++c.errors[size_t(category_of(verdict.error))];
    inspector_->on_verdict(object_id, verdict);
}

void FlowInspection::on_spam_verdict(uint64_t object_id, const ScanVerdict& verdict) {
    if (inspector_) inspector_->on_verdict(object_id, verdict);
}

bool FlowInspection::check_spam(uint64_t id, SpamQuery query) {
    const SpamConfig& spam = context_.config().spam;
    if (spam.engine == SpamConfig::Engine::None) return false;
    query.url = spam.rspamd_url;
    query.timeout_ms = spam.timeout_ms;
    query.threshold = spam.threshold;
    if (service_ == Service::Smtp) query.ip = flow_.client().to_string();
    return context_.check_spam(id_, id, std::move(query));
}

bool FlowInspection::on_tick(uint64_t now_ms) {
    return wants_ticks() && inspector_->on_tick(now_ms);
}

size_t FlowInspection::memory_bytes() const {
    return sizeof(*this) + (inspector_ ? inspector_->memory_bytes() : 0);
}

void FlowInspection::scan(uint64_t id, const ObjectInfo& info,
                          std::shared_ptr<const ObjectBuffer> bytes) {
    InspectionCounters& c = context_.counters(service_);
    ++c.objects;
    c.scanned_bytes += bytes ? bytes->size() : 0;
    std::string name = info.file_name.empty() ? info.name : info.file_name;
    ScanObject object = ScanObject::in_file(std::move(bytes), std::move(name));
    object.mime_type = info.mime_type;
    object.profile = policy().profile;
    context_.submit(id_, id, std::move(object));
}

std::string FlowInspection::flow_text() const {
    return endpoint(flow_.client(), flow_.client_port()) + " -> " +
           endpoint(flow_.server(), flow_.server_port());
}

void FlowInspection::count_action(std::string_view action) {
    // Mail blocks in several ways (replace, strip, reject, drop): all of them
    // kept the object from its receiver as it was sent.
    InspectionCounters& c = context_.counters(service_);
    if (action == "pass" || action == "accept")
        ++c.passed;
    else if (action == "reset")
        ++c.resets;
    else
        ++c.blocked;
}

std::string FlowInspection::record(const ObjectInfo& info, const ScanVerdict& verdict,
                                   std::string_view action) {
    return log_event(info, verdict, {}, action);
}

std::string FlowInspection::record_fallback(const ObjectInfo& info, Category category,
                                            std::string_view reason, std::string_view action) {
    ++context_.counters(service_).errors[size_t(category)];
    // The scan service's categories come first in Category, in its order;
    // the inspectors' own (partial, protocol-error) name themselves.
    ScanError error =
        size_t(category) < kScanErrorCount ? ScanError(category) : ScanError::ContentSize;
    return log_event(info, ScanVerdict::failed(error, std::string(reason)), category_name(category),
                     action);
}

std::string FlowInspection::log_event(const ObjectInfo& info, const ScanVerdict& verdict,
                                      std::string_view category, std::string_view action) {
    ScanEvent event;
    event.id = context_.next_event_id();
    event.flow = flow_text();
    event.protocol = std::string(service_name(info.protocol));
    event.direction = std::string(direction_label(info.direction));
    event.object = info.name;
    event.verdict = verdict;
    event.category = std::string(category);
    event.action = std::string(action);
    event.quarantine = keep_original(info, event);
    count_action(action);
    if (verdict.is_infected() && verdict.detection.category == ThreatCategory::Spam)
        if (std::optional<SpamAction> a = spam_action_from_name(action))
            ++context_.counters(service_).spam[size_t(*a)];
    context_.log(event);
    return event.id;
}

std::string FlowInspection::keep_original(const ObjectInfo& info, const ScanEvent& event) {
    // Every verdict of every protocol that keeps an object from its receiver
    // goes through here (record(), record_fallback()): the one hook.
    if (!info.original || !info.original->bytes || !quarantine_keeps(event.action)) return {};
    const QuarantineSource& source = *info.original;
    QuarantineEntry entry;
    entry.id = event.id;
    entry.time = event.time;
    entry.protocol = event.protocol;
    entry.flow = event.flow;
    entry.direction = event.direction;
    entry.object = info.name;
    entry.file_name = info.file_name;
    entry.sender = source.sender;
    entry.recipients = source.recipients;
    entry.subject = source.subject;
    entry.verdict = nlohmann::json(event.verdict);
    if (!event.category.empty()) entry.verdict["category"] = event.category;
    entry.action = event.action;
    entry.event_id = event.id;
    if (!context_.quarantine(std::move(entry), source.bytes)) return {};
    return event.id;
}

void FlowInspection::send_and_close(Direction d, std::span<const uint8_t> bytes) {
    if (requests_.close) return;
    requests_.close = d;
    requests_.message.assign(bytes.begin(), bytes.end());
}

void FlowInspection::reset_both() {
    requests_.reset = true;
}

void FlowInspection::send(Direction d, std::span<const uint8_t> bytes) {
    std::vector<uint8_t>& own = requests_.own[size_t(d)];
    own.insert(own.end(), bytes.begin(), bytes.end());
}

void FlowInspection::note_allowlisted(const ObjectInfo&) {
    ++context_.counters(service_).allowlisted;
}

void FlowInspection::release(ReleaseReason reason) {
    if (released_) return;
    released_ = true;
    ++context_.counters(service_).released[size_t(reason)];
}

const ProtocolPolicy& FlowInspection::policy() const {
    return context_.config().protocols[size_t(service_)].policy;
}

const MessageTemplates& FlowInspection::messages() const {
    const Config& c = context_.config();
    return c.messages ? *c.messages : *MessageTemplates::builtin();
}

const ScanLimits& FlowInspection::limits() const {
    return context_.config().scan.limits;
}

bool FlowInspection::ended(Direction d) const {
    return flow_.state == FlowState::Closed || (flow_.fin_seen >> uint8_t(d)) & 1u;
}

FlowAddresses FlowInspection::addresses() const {
    return {flow_.client(), flow_.server(), flow_.client_port(), flow_.server_port()};
}

MessageFields FlowInspection::message_fields() const {
    MessageFields f;
    f.protocol = std::string(service_name(service_));
    f.client = endpoint(flow_.client(), flow_.client_port());
    f.server = endpoint(flow_.server(), flow_.server_port());
    f.time = iso8601(std::chrono::system_clock::now());
    f.host = host_name();
    return f;
}

std::string FlowInspection::render_message(std::string_view name,
                                           const MessageFields& fields) const {
    return messages().render(name, fields);
}

}  // namespace nfqscan
