#include "clamav_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <system_error>

namespace nfqscan {
namespace {

namespace fs = std::filesystem;

// libclamav has one process-wide message callback. While a thread loads
// databases it collects the messages (they name the broken file and line);
// otherwise messages go to the log, at debug level during scans because the
// scanned content (attacker-controlled) decides how many there are.
thread_local std::vector<std::string>* t_load_messages = nullptr;
std::atomic<bool> g_messages_silenced{false};

void on_clamav_message(enum cl_msg severity, const char* /*fullmsg*/, const char* msg, void*) {
    if (g_messages_silenced.load(std::memory_order_relaxed)) return;
    std::string text = msg ? msg : "";
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
        text.pop_back();
    if (t_load_messages != nullptr && severity >= CL_MSG_WARN) {
        t_load_messages->push_back(text);
        return;
    }
    spdlog::debug("libclamav: {}", text);
}

void ensure_clamav_initialized() {
    static std::once_flag once;
    static cl_error_t rc = CL_SUCCESS;
    std::call_once(once, [] {
        cl_set_clcb_msg(on_clamav_message);
        rc = cl_init(CL_INIT_DEFAULT);
    });
    if (rc != CL_SUCCESS) throw std::runtime_error(std::string("cl_init: ") + cl_strerror(rc));
}

struct EngineFree {
    void operator()(cl_engine* e) const { cl_engine_free(e); }
};
using EnginePtr = std::unique_ptr<cl_engine, EngineFree>;

// Files cl_load() picks up from a directory; used only to tell an empty
// directory (a warning) from a broken one (an error).
bool has_database_files(const fs::path& dir) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec))
        if (is_clamav_database_name(entry.path().filename().string())) return true;
    return false;
}

// libclamav reports "Problem parsing database at line N" then
// "Can't load FILE: REASON"; turn that into file + line + reason.
LoadFailure failure_from_messages(const std::string& dir, cl_error_t rc,
                                  const std::vector<std::string>& messages) {
    constexpr std::string_view kCantLoad = "Can't load ";
    constexpr std::string_view kAtLine = "at line ";
    LoadFailure failure{dir, 0, cl_strerror(rc)};
    bool named = false;
    for (const std::string& m : messages) {
        const size_t cant = m.find(kCantLoad);
        const size_t colon =
            cant == std::string::npos ? cant : m.find(": ", cant + kCantLoad.size());
        if (colon != std::string::npos) {
            failure.file = m.substr(cant + kCantLoad.size(), colon - cant - kCantLoad.size());
            failure.message = m.substr(colon + 2);
            named = true;
            continue;
        }
        const size_t at = m.find(kAtLine);
        if (failure.line == 0 && at != std::string::npos)
            failure.line =
                static_cast<uint32_t>(std::strtoul(m.c_str() + at + kAtLine.size(), nullptr, 10));
    }
    if (!named && !messages.empty()) failure.message = messages.back();
    return failure;
}

// Everything ClamAV can parse, and the heuristics that turn limits, encryption
// and broken files into alerts instead of a silent partial scan. All-match and
// heuristic precedence stay off: the scan stops at the first real signature,
// and a real signature found after a heuristic alert still wins.
cl_scan_options scan_options() {
    cl_scan_options o{};
    o.general = CL_SCAN_GENERAL_HEURISTICS;
    o.parse = CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_PDF | CL_SCAN_PARSE_SWF |
              CL_SCAN_PARSE_HWP3 | CL_SCAN_PARSE_XMLDOCS | CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2 |
              CL_SCAN_PARSE_HTML | CL_SCAN_PARSE_PE | CL_SCAN_PARSE_ONENOTE | CL_SCAN_PARSE_IMAGE |
              CL_SCAN_PARSE_IMAGE_FUZZY_HASH;
    o.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX | CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE |
                  CL_SCAN_HEURISTIC_ENCRYPTED_DOC | CL_SCAN_HEURISTIC_BROKEN;
    return o;
}

std::string display_name(const char* file_name, const char* type) {
    std::string name;
    if (file_name != nullptr) {
        for (const char* p = file_name; *p != '\0' && name.size() < 255; ++p)
            name.push_back(std::iscntrl(static_cast<unsigned char>(*p)) ? '?' : *p);
    }
    if (!name.empty()) return name;
    std::string_view t = type != nullptr ? type : "unknown";
    if (t.starts_with("CL_TYPE_")) t.remove_prefix(8);
    name = "(";
    for (char c : t)
        name.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    return name + ")";
}

// Per-scan state behind libclamav's opaque callback context. It mirrors
// ClamAV's recursion stack: the file-inspection callback announces each layer
// with its depth, pre-scan marks the layers ClamAV will close with a
// post-scan, and post-scan results (innermost first) tell which layer a
// signature or heuristic fired in.
struct ScanContext {
    struct Layer {
        std::string name;
        bool expects_post = false;
    };
    std::string object_name;
    ClamLayerObserver* observer = nullptr;
    std::vector<Layer> stack;
    std::vector<std::pair<std::string, std::string>> attributed;  // virname -> path

    std::string path(size_t depth) const {
        std::string p;
        for (size_t i = 0; i < depth && i < stack.size(); ++i) {
            if (i > 0) p.push_back('/');
            p += stack[i].name;
        }
        return p;
    }
    void drop_unclosed() {
        while (!stack.empty() && !stack.back().expects_post)
            stack.pop_back();
    }
};

cl_error_t on_file_inspection(int /*fd*/, const char* type, const char** /*ancestors*/,
                              size_t /*parent_size*/, const char* file_name, size_t file_size,
                              const char* file_buffer, uint32_t level, uint32_t /*attributes*/,
                              void* context) {
    auto* ctx = static_cast<ScanContext*>(context);
    if (ctx == nullptr) return CL_CLEAN;
    if (ctx->stack.size() > level) ctx->stack.resize(level);
    while (ctx->stack.size() < level)
        ctx->stack.push_back({"(unknown)", false});
    ctx->stack.push_back({level == 0 ? ctx->object_name : display_name(file_name, type), false});
    if (ctx->observer == nullptr) return CL_CLEAN;
    const std::string path = ctx->path(ctx->stack.size());
    ClamLayer layer;
    layer.depth = level;
    layer.name = ctx->stack.back().name;
    layer.type = type != nullptr ? type : "";
    if (file_buffer != nullptr)
        layer.bytes = {reinterpret_cast<const uint8_t*>(file_buffer), file_size};
    layer.path = path;
    if (ctx->observer->on_layer(layer)) {
        // ClamAV skips pre-scan for a layer blocked here but still closes it.
        ctx->stack.back().expects_post = true;
        return CL_VIRUS;
    }
    return CL_CLEAN;
}

cl_error_t on_pre_scan(int /*fd*/, const char* /*type*/, void* context) {
    auto* ctx = static_cast<ScanContext*>(context);
    if (ctx != nullptr && !ctx->stack.empty()) ctx->stack.back().expects_post = true;
    return CL_CLEAN;
}

cl_error_t on_post_scan(int /*fd*/, int result, const char* virname, void* context) {
    auto* ctx = static_cast<ScanContext*>(context);
    if (ctx == nullptr) return CL_CLEAN;
    ctx->drop_unclosed();
    if (ctx->stack.empty()) return CL_CLEAN;
    if (result == CL_VIRUS && virname != nullptr) {
        const bool known = std::any_of(ctx->attributed.begin(), ctx->attributed.end(),
                                       [&](const auto& a) { return a.first == virname; });
        if (!known) ctx->attributed.emplace_back(virname, ctx->path(ctx->stack.size()));
    }
    ctx->stack.pop_back();
    return CL_CLEAN;  // keep ClamAV's result
}

cl_error_t on_archive_meta(const char* /*container_type*/, unsigned long /*container_size*/,
                           const char* file_name, unsigned long real_size, int is_encrypted,
                           unsigned int /*position*/, void* context) {
    auto* ctx = static_cast<ScanContext*>(context);
    if (ctx == nullptr || ctx->observer == nullptr) return CL_CLEAN;
    ctx->drop_unclosed();
    ctx->observer->on_archive_member(ctx->path(ctx->stack.size()),
                                     file_name != nullptr ? file_name : "", real_size,
                                     is_encrypted != 0);
    return CL_CLEAN;
}

}  // namespace

void silence_clamav_messages() {
    g_messages_silenced.store(true, std::memory_order_relaxed);
}

std::optional<ScanError> error_for_clamav_signature(std::string_view virname) {
    constexpr std::string_view kLimits = "Heuristics.Limits.Exceeded.";
    if (virname.starts_with(kLimits)) {
        std::string_view what = virname.substr(kLimits.size());
        if (what == "MaxScanTime") return ScanError::Timeout;
        if (what == "MaxRecursion" || what == "MaxFiles" || what == "EmailMIMEPartsPerMessage")
            return ScanError::DecompressLayer;
        // MaxFileSize, MaxScanSize and the mail header limits.
        return ScanError::ContentSize;
    }
    if (virname.starts_with("Heuristics.Encrypted.")) return ScanError::Encrypted;
    if (virname.starts_with("Heuristics.Broken.")) return ScanError::Corrupt;
    return std::nullopt;
}

ScanError error_for_clamav_code(cl_error_t rc) {
    switch (rc) {
        case CL_ETIMEOUT:
            return ScanError::Timeout;
        case CL_EMAXREC:
        case CL_EMAXFILES:
            return ScanError::DecompressLayer;
        case CL_EMAXSIZE:
            return ScanError::ContentSize;
        case CL_EMEM:
        case CL_EMAP:
        case CL_ETMPFILE:
        case CL_ETMPDIR:
        case CL_ECREAT:
        case CL_EWRITE:
        case CL_EDUP:
        case CL_EOPEN:
        case CL_EACCES:
        case CL_EUNLINK:
            return ScanError::OutOfResource;
        case CL_EFORMAT:
        case CL_EPARSE:
        case CL_EUNPACK:
        case CL_EREAD:
        case CL_ESEEK:
        case CL_ESTAT:
        case CL_EBYTECODE:
        case CL_EBYTECODE_TESTFAIL:
            return ScanError::Corrupt;
        default:
            // Argument, state and generic errors: the engine cannot do its job.
            return ScanError::EngineNotReady;
    }
}

ClamEngine::Loaded ClamEngine::load(const Options& options) {
    ensure_clamav_initialized();
    Loaded out;
    EnginePtr engine(cl_engine_new());
    if (!engine) {
        out.failure = LoadFailure{{}, 0, "cl_engine_new failed (out of memory)"};
        return out;
    }

    std::vector<std::string> messages;
    t_load_messages = &messages;
    struct Restore {
        ~Restore() { t_load_messages = nullptr; }
    } restore;

    for (const std::string& dir : options.db_dirs) {
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) {
            out.warnings.push_back("clamav database directory " + dir + " does not exist");
            continue;
        }
        if (!has_database_files(dir)) {
            out.warnings.push_back("clamav database directory " + dir + " has no database files");
            continue;
        }
        messages.clear();
        unsigned int signatures = 0;
        const cl_error_t rc = cl_load(dir.c_str(), engine.get(), &signatures, CL_DB_STDOPT);
        if (rc != CL_SUCCESS) {
            out.failure = failure_from_messages(dir, rc, messages);
            return out;
        }
        out.signatures += signatures;
        out.loaded_dirs.push_back(dir);
    }

    const ScanLimits& l = options.limits;
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_FILESIZE,
                      static_cast<long long>(l.max_content_size));
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_SCANSIZE,
                      static_cast<long long>(l.max_scan_size));
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_RECURSION, l.max_layers);
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_FILES, l.max_files);
    cl_engine_set_num(engine.get(), CL_ENGINE_MAX_SCANTIME, l.max_scan_time_ms);
    if (!options.clean_cache) cl_engine_set_num(engine.get(), CL_ENGINE_DISABLE_CACHE, 1);
    if (!options.temp_dir.empty()) {
        const cl_error_t rc =
            cl_engine_set_str(engine.get(), CL_ENGINE_TMPDIR, options.temp_dir.c_str());
        if (rc != CL_SUCCESS) {
            out.failure =
                LoadFailure{options.temp_dir, 0, std::string("temp dir: ") + cl_strerror(rc)};
            return out;
        }
    }
    cl_engine_set_clcb_file_inspection(engine.get(), on_file_inspection);
    cl_engine_set_clcb_pre_scan(engine.get(), on_pre_scan);
    cl_engine_set_clcb_post_scan(engine.get(), on_post_scan);
    cl_engine_set_clcb_meta(engine.get(), on_archive_meta);

    messages.clear();
    const cl_error_t rc = cl_engine_compile(engine.get());
    if (rc != CL_SUCCESS) {
        out.failure = failure_from_messages({}, rc, messages);
        out.failure->message = std::string("cl_engine_compile: ") + cl_strerror(rc);
        return out;
    }
    out.engine.reset(new ClamEngine(engine.release()));
    return out;
}

ClamEngine::~ClamEngine() {
    cl_engine_free(engine_);
}

ClamScanOutcome ClamEngine::scan(std::span<const uint8_t> bytes, const std::string& name,
                                 ClamLayerObserver* observer) const {
    ClamScanOutcome out;
    // An empty map is refused by libclamav; nothing to scan is clean.
    if (bytes.empty()) return out;
    cl_fmap_t* map = cl_fmap_open_memory(bytes.data(), bytes.size());
    if (map == nullptr) {
        out.rc = CL_EMAP;
        return out;
    }
    ScanContext ctx;
    ctx.object_name = name;
    ctx.observer = observer;
    cl_scan_options options = scan_options();
    const char* virname = nullptr;
    unsigned long scanned = 0;
    out.rc = cl_scanmap_callback(map, name.c_str(), &virname, &scanned, engine_, &options, &ctx);
    cl_fmap_close(map);
    if (out.rc == CL_VIRUS && virname != nullptr) {
        out.virname = virname;
        for (const auto& [v, path] : ctx.attributed)
            if (v == out.virname) {
                out.layer_path = path;
                break;
            }
        if (out.layer_path.empty()) out.layer_path = name;
    }
    return out;
}

uint32_t ClamEngine::db_version() const {
    return static_cast<uint32_t>(cl_engine_get_num(engine_, CL_ENGINE_DB_VERSION, nullptr));
}

int64_t ClamEngine::db_time() const {
    return cl_engine_get_num(engine_, CL_ENGINE_DB_TIME, nullptr);
}

std::string ClamEngine::version() {
    return cl_retver();
}

bool is_clamav_database_name(std::string_view filename) {
    // libclamav's CLI_DBEXT: what cl_load() reads from a directory.
    static constexpr std::string_view kExtensions[] = {
        ".cvd", ".cld", ".cud", ".db",   ".hdb",  ".hdu",  ".hsb", ".hsu", ".mdb", ".mdu",
        ".msb", ".msu", ".ndb", ".ndu",  ".ldb",  ".ldu",  ".sdb", ".zmd", ".rmd", ".idb",
        ".fp",  ".sfp", ".ign", ".ign2", ".cdb",  ".cbc",  ".pdb", ".gdb", ".wdb", ".crb",
        ".ftm", ".cat", ".cfg", ".yar",  ".yara", ".pwdb", ".imp", ".info"};
    const size_t dot = filename.rfind('.');
    if (dot == std::string_view::npos || dot == 0) return false;
    const std::string_view ext = filename.substr(dot);
    return std::find(std::begin(kExtensions), std::end(kExtensions), ext) != std::end(kExtensions);
}

}  // namespace nfqscan
