#include "yara_rules.h"

#include <yara.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace nfqscan {
namespace {

namespace fs = std::filesystem;

void ensure_yara_initialized() {
    // yr_initialize() is reference-counted but not thread-safe; once per
    // process, never finalized (engine sets come and go, the library stays).
    static std::once_flag once;
    static int rc = ERROR_SUCCESS;
    std::call_once(once, [] { rc = yr_initialize(); });
    if (rc != ERROR_SUCCESS)
        throw std::runtime_error("yr_initialize failed: " + std::to_string(rc));
}

struct CompilerFree {
    void operator()(YR_COMPILER* c) const { yr_compiler_destroy(c); }
};
struct RulesFree {
    void operator()(YR_RULES* r) const { yr_rules_destroy(r); }
};

struct CompileMessages {
    std::optional<LoadFailure> error;
    std::vector<std::string> warnings;
};

void on_compiler_message(int level, const char* file_name, int line, const YR_RULE* /*rule*/,
                         const char* message, void* user_data) {
    auto* messages = static_cast<CompileMessages*>(user_data);
    LoadFailure where{file_name != nullptr ? file_name : "",
                      static_cast<uint32_t>(std::max(line, 0)),
                      message != nullptr ? message : "error"};
    if (level == YARA_ERROR_LEVEL_ERROR) {
        if (!messages->error) messages->error = where;
    } else {
        messages->warnings.push_back(where.to_string());
    }
}

std::vector<std::string> rule_files(const std::string& dir) {
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& entry : fs::recursive_directory_iterator(dir, ec)) {
        if (!entry.is_regular_file(ec)) continue;
        if (is_yara_rule_name(entry.path().filename().string()))
            files.push_back(entry.path().string());
    }
    // Deterministic order: the same directory always compiles the same way.
    std::sort(files.begin(), files.end());
    return files;
}

struct ScanState {
    const std::unordered_map<const YR_RULE*, ThreatCategory>* categories;
    YaraOutcome* outcome;
};

int severity(ThreatCategory c) {
    switch (c) {
        case ThreatCategory::Virus:
            return 3;
        case ThreatCategory::Policy:
            return 2;
        case ThreatCategory::Spam:
            return 1;
    }
    return 0;
}

int on_scan_message(YR_SCAN_CONTEXT* /*context*/, int message, void* message_data,
                    void* user_data) {
    if (message != CALLBACK_MSG_RULE_MATCHING) return CALLBACK_CONTINUE;
    auto* state = static_cast<ScanState*>(user_data);
    const auto* rule = static_cast<const YR_RULE*>(message_data);
    const auto it = state->categories->find(rule);
    const ThreatCategory category =
        it != state->categories->end() ? it->second : ThreatCategory::Virus;
    auto& match = state->outcome->match;
    if (!match || severity(category) > severity(match->category))
        match = YaraMatch{rule->identifier, category};
    return category == ThreatCategory::Virus ? CALLBACK_ABORT : CALLBACK_CONTINUE;
}

}  // namespace

YaraRules::Compiled YaraRules::compile(const std::vector<std::string>& dirs) {
    ensure_yara_initialized();
    Compiled out;
    std::unique_ptr<YaraRules> rules(new YaraRules());

    YR_COMPILER* raw_compiler = nullptr;
    if (yr_compiler_create(&raw_compiler) != ERROR_SUCCESS) {
        out.failure = LoadFailure{{}, 0, "yr_compiler_create failed (out of memory)"};
        return out;
    }
    std::unique_ptr<YR_COMPILER, CompilerFree> compiler(raw_compiler);
    CompileMessages messages;
    yr_compiler_set_callback(compiler.get(), on_compiler_message, &messages);
    // Rules may look at where a layer came from (see YaraLayer).
    yr_compiler_define_string_variable(compiler.get(), "filename", "");
    yr_compiler_define_string_variable(compiler.get(), "filetype", "");
    yr_compiler_define_integer_variable(compiler.get(), "depth", 0);

    for (const std::string& dir : dirs) {
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) {
            out.warnings.push_back("yara rule directory " + dir + " does not exist");
            continue;
        }
        const std::vector<std::string> files = rule_files(dir);
        if (files.empty())
            out.warnings.push_back("yara rule directory " + dir + " has no *.yar files");
        for (const std::string& file : files) {
            FILE* fp = std::fopen(file.c_str(), "r");
            if (fp == nullptr) {
                out.failure =
                    LoadFailure{file, 0, "cannot open: " + std::string(std::strerror(errno))};
                return out;
            }
            const int errors = yr_compiler_add_file(compiler.get(), fp, nullptr, file.c_str());
            std::fclose(fp);
            if (errors > 0) {
                // libyara refuses further use of a compiler that reported an error.
                out.failure = messages.error.value_or(LoadFailure{file, 0, "syntax error"});
                return out;
            }
            rules->files_.push_back(file);
        }
    }

    YR_RULES* raw_rules = nullptr;
    const int rc = yr_compiler_get_rules(compiler.get(), &raw_rules);
    if (rc != ERROR_SUCCESS) {
        out.failure = LoadFailure{{}, 0, "yr_compiler_get_rules failed: " + std::to_string(rc)};
        return out;
    }
    rules->rules_ = raw_rules;

    // The category travels with the verdict; resolve it once per rule here
    // instead of walking the metadata on every match.
    const YR_RULE* rule = nullptr;
    yr_rules_foreach(raw_rules, rule) {
        ++rules->rule_count_;
        ThreatCategory category = ThreatCategory::Virus;
        const YR_META* meta = nullptr;
        yr_rule_metas_foreach(rule, meta) {
            if (std::string_view(meta->identifier) != "category") continue;
            if (meta->type != META_TYPE_STRING) {
                out.warnings.push_back(std::string("rule ") + rule->identifier +
                                       ": category is not a string, treated as virus");
                continue;
            }
            if (auto c = threat_category_from_name(meta->string))
                category = *c;
            else
                out.warnings.push_back(std::string("rule ") + rule->identifier +
                                       ": unknown category \"" + meta->string +
                                       "\", treated as virus");
        }
        rules->categories_.emplace(rule, category);
    }
    out.warnings.insert(out.warnings.end(), messages.warnings.begin(), messages.warnings.end());
    out.rules = std::move(rules);
    return out;
}

YaraRules::~YaraRules() {
    for (YR_SCANNER* s : idle_scanners_)
        yr_scanner_destroy(s);
    if (rules_ != nullptr) yr_rules_destroy(rules_);
}

YR_SCAN_CONTEXT* YaraRules::acquire_scanner() const {
    {
        std::lock_guard lock(mutex_);
        if (!idle_scanners_.empty()) {
            YR_SCANNER* s = idle_scanners_.back();
            idle_scanners_.pop_back();
            return s;
        }
    }
    YR_SCANNER* s = nullptr;
    if (yr_scanner_create(rules_, &s) != ERROR_SUCCESS) return nullptr;
    return s;
}

void YaraRules::release_scanner(YR_SCAN_CONTEXT* scanner) const {
    std::lock_guard lock(mutex_);
    idle_scanners_.push_back(scanner);
}

YaraOutcome YaraRules::scan(std::span<const uint8_t> bytes, const YaraLayer& layer,
                            uint32_t timeout_ms) const {
    YaraOutcome out;
    if (rule_count_ == 0) return out;
    YR_SCANNER* scanner = acquire_scanner();
    if (scanner == nullptr) {
        out.error = ERROR_INSUFFICIENT_MEMORY;
        return out;
    }
    ScanState state{&categories_, &out};
    yr_scanner_set_callback(scanner, on_scan_message, &state);
    // libyara counts its timeout in whole seconds.
    yr_scanner_set_timeout(scanner,
                           static_cast<int>(std::max<uint32_t>(1, (timeout_ms + 999) / 1000)));
    yr_scanner_set_flags(scanner, SCAN_FLAGS_FAST_MODE);
    const std::string filename(layer.filename), filetype(layer.filetype);
    yr_scanner_define_string_variable(scanner, "filename", filename.c_str());
    yr_scanner_define_string_variable(scanner, "filetype", filetype.c_str());
    yr_scanner_define_integer_variable(scanner, "depth", layer.depth);
    const int rc = yr_scanner_scan_mem(scanner, bytes.data(), bytes.size());
    // ERROR_CALLBACK_ERROR never happens (the callback only continues or
    // aborts); an abort is the virus match already recorded.
    if (rc != ERROR_SUCCESS && !(out.match && out.match->category == ThreatCategory::Virus))
        out.error = rc;
    yr_scanner_set_callback(scanner, nullptr, nullptr);
    release_scanner(scanner);
    return out;
}

std::string YaraRules::version() {
    return YR_VERSION;
}

bool is_yara_rule_name(std::string_view filename) {
    return filename.ends_with(".yar") || filename.ends_with(".yara");
}

}  // namespace nfqscan
