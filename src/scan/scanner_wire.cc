#include "scanner_wire.h"

#include <algorithm>
#include <cstring>

namespace nfqscan {
namespace {

class Writer {
  public:
    void u8(uint8_t v) { out_.push_back(v); }
    void u64(uint64_t v) { raw(&v, sizeof v); }
    void str(std::string_view s) {
        s = s.substr(0, kScannerWireMaxString);
        const auto n = static_cast<uint32_t>(s.size());
        raw(&n, sizeof n);
        raw(s.data(), s.size());
    }
    void counters(const EngineCounters& c) {
        for (uint64_t v : {c.scans, c.detections, c.errors, c.bytes, c.busy_us})
            u64(v);
    }
    std::vector<uint8_t> take() { return std::move(out_); }

  private:
    void raw(const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }
    std::vector<uint8_t> out_;
};

// Every read checks the bounds; a short or overlong message fails decoding.
class Reader {
  public:
    explicit Reader(std::string_view in) : in_(in) {}
    bool u8(uint8_t& v) { return raw(&v, sizeof v); }
    bool u64(uint64_t& v) { return raw(&v, sizeof v); }
    bool str(std::string& s) {
        uint32_t n = 0;
        if (!raw(&n, sizeof n) || n > kScannerWireMaxString || n > in_.size()) return false;
        s.assign(in_.substr(0, n));
        in_.remove_prefix(n);
        return true;
    }
    bool counters(EngineCounters& c) {
        return u64(c.scans) && u64(c.detections) && u64(c.errors) && u64(c.bytes) && u64(c.busy_us);
    }
    bool at_end() const { return in_.empty(); }

  private:
    bool raw(void* p, size_t n) {
        if (in_.size() < n) return false;
        std::memcpy(p, in_.data(), n);
        in_.remove_prefix(n);
        return true;
    }
    std::string_view in_;
};

}  // namespace

std::vector<uint8_t> encode(const ScannerRequest& request) {
    Writer w;
    w.u64(request.size);
    w.u8(request.in_passed_fd ? 1 : 0);
    w.str(request.name);
    w.str(request.mime_type);
    w.str(request.profile);
    return w.take();
}

std::optional<ScannerRequest> decode_request(std::string_view message) {
    Reader r(message);
    ScannerRequest out;
    uint8_t in_passed_fd = 0;
    if (!r.u64(out.size) || !r.u8(in_passed_fd) || in_passed_fd > 1 || !r.str(out.name) ||
        !r.str(out.mime_type) || !r.str(out.profile) || !r.at_end())
        return std::nullopt;
    out.in_passed_fd = in_passed_fd != 0;
    return out;
}

std::vector<uint8_t> encode(const ScannerReply& reply) {
    const ScanVerdict& v = reply.verdict;
    Writer w;
    w.u8(static_cast<uint8_t>(v.kind));
    w.u8(v.skipped ? 1 : 0);
    w.u8(static_cast<uint8_t>(v.detection.engine));
    w.u8(static_cast<uint8_t>(v.detection.category));
    w.u8(static_cast<uint8_t>(v.error));
    w.str(v.detection.signature);
    w.str(v.detection.layer_path);
    w.str(v.reason);
    w.str(v.layer_path);
    w.u64(static_cast<uint64_t>(std::max<int64_t>(0, v.elapsed.count())));
    w.counters(reply.clamav);
    w.counters(reply.yara);
    return w.take();
}

std::optional<ScannerReply> decode_reply(std::string_view message) {
    Reader r(message);
    ScannerReply out;
    ScanVerdict& v = out.verdict;
    uint8_t kind = 0, skipped = 0, engine = 0, category = 0, error = 0;
    uint64_t elapsed = 0;
    if (!r.u8(kind) || !r.u8(skipped) || !r.u8(engine) || !r.u8(category) || !r.u8(error) ||
        !r.str(v.detection.signature) || !r.str(v.detection.layer_path) || !r.str(v.reason) ||
        !r.str(v.layer_path) || !r.u64(elapsed) || !r.counters(out.clamav) ||
        !r.counters(out.yara) || !r.at_end())
        return std::nullopt;
    if (kind > static_cast<uint8_t>(ScanVerdict::Kind::Error) ||
        engine > static_cast<uint8_t>(ScanEngineKind::Yara) ||
        category > static_cast<uint8_t>(ThreatCategory::Policy) || error >= kScanErrorCount)
        return std::nullopt;
    v.kind = static_cast<ScanVerdict::Kind>(kind);
    v.skipped = skipped != 0;
    v.detection.engine = static_cast<ScanEngineKind>(engine);
    v.detection.category = static_cast<ThreatCategory>(category);
    v.error = static_cast<ScanError>(error);
    v.elapsed = std::chrono::microseconds(elapsed);
    return out;
}

}  // namespace nfqscan
