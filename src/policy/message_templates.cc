// MessageTemplates: the folder of message texts, parsed once at
// configuration load into literal and placeholder pieces, so rendering is a
// concatenation that cannot fail.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include "nfqscan/config.h"
#include "nfqscan/policy.h"
#include "policy/builtin_messages.h"

namespace nfqscan {
namespace {

std::string placeholder_list() {
    std::string list;
    for (std::string_view p : MessageTemplates::kPlaceholders)
        list += (list.empty() ? "" : ", ") + std::string(p);
    return list;
}

bool is_space(char c) {
    return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && is_space(s.back()))
        s.remove_suffix(1);
    return s;
}

const std::string* field(const MessageFields& f, std::string_view name) {
    if (name == "detection") return &f.detection;
    if (name == "category") return &f.category;
    if (name == "object") return &f.object;
    if (name == "protocol") return &f.protocol;
    if (name == "client") return &f.client;
    if (name == "server") return &f.server;
    if (name == "time") return &f.time;
    if (name == "host") return &f.host;
    if (name == "event_id") return &f.event_id;
    if (name == "action") return &f.action;
    if (name == "sender") return &f.sender;
    if (name == "recipients") return &f.recipients;
    return nullptr;
}

void append_escaped(std::string& out, char c) {
    switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        case '\'':
            out += "&#39;";
            break;
        default:
            out += c;
    }
}

// Values come from the traffic (a URL, a file name): control characters are
// replaced, so a value cannot add lines (or headers) to a message.
void append_value(std::string& out, std::string_view value, bool html) {
    for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            out += c == '\t' ? ' ' : '?';
        } else if (html) {
            append_escaped(out, c);
        } else {
            out += c;
        }
    }
}

}  // namespace

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text)
        append_escaped(out, c);
    return out;
}

void MessageTemplates::add(const std::string& name, std::string_view text, const std::string& file,
                           bool html) {
    if (text.size() > kMaxTemplateSize)
        throw ConfigError(
            file, 0, name,
            fmt::format("larger than {} bytes ({} bytes)", kMaxTemplateSize, text.size()));
    if (templates_.count(name))
        throw ConfigError(file, 0, name,
                          "a template of this name exists already (NAME.html and NAME.txt "
                          "are the same template)");
    Template t;
    t.html = html;
    uint32_t line = 1;
    size_t pos = 0;
    auto literal = [&](std::string_view s) {
        line += static_cast<uint32_t>(std::count(s.begin(), s.end(), '\n'));
        if (s.empty()) return;
        if (!t.pieces.empty() && !t.pieces.back().placeholder)
            t.pieces.back().text += s;
        else
            t.pieces.push_back({std::string(s), false});
    };
    while (pos < text.size()) {
        const size_t open = text.find("{{", pos);
        if (open == std::string_view::npos) {
            literal(text.substr(pos));
            break;
        }
        literal(text.substr(pos, open - pos));
        // A placeholder ends on its own line: an unclosed "{{" is reported
        // where it is, not where some later "}}" happens to be.
        const size_t eol = std::min(text.find('\n', open), text.size());
        const size_t close = text.substr(0, eol).find("}}", open + 2);
        if (close == std::string_view::npos) {
            std::string_view start = text.substr(open, std::min<size_t>(eol - open, 24));
            throw ConfigError(file, line, std::string(trim(start)),
                              "unclosed placeholder: \"{{\" without \"}}\" on the same line");
        }
        const std::string_view name_in_braces = trim(text.substr(open + 2, close - open - 2));
        if (std::find(kPlaceholders.begin(), kPlaceholders.end(), name_in_braces) ==
            kPlaceholders.end())
            throw ConfigError(file, line, "{{" + std::string(name_in_braces) + "}}",
                              "unknown placeholder; known: " + placeholder_list());
        t.pieces.push_back({std::string(name_in_braces), true});
        pos = close + 2;
    }
    templates_.emplace(name, std::move(t));
}

std::shared_ptr<const MessageTemplates> MessageTemplates::load(const std::string& dir) {
    namespace fs = std::filesystem;
    auto templates = std::make_shared<MessageTemplates>();
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) throw ConfigError(dir, 0, "messages", "cannot read the folder: " + ec.message());
    std::vector<fs::path> files;
    for (const fs::directory_entry& entry : it) {
        const fs::path& path = entry.path();
        const std::string ext = path.extension().string();
        if ((ext != ".html" && ext != ".txt") || path.stem().string().starts_with('.')) continue;
        files.push_back(path);
    }
    std::sort(files.begin(), files.end());  // errors in a stable order
    for (const fs::path& path : files) {
        const std::string file = path.string();
        const std::string name = path.stem().string();
        std::ifstream in(path, std::ios::binary);
        if (!in || !fs::is_regular_file(path, ec))
            throw ConfigError(file, 0, name, "cannot be read");
        std::string text(kMaxTemplateSize + 1, '\0');
        in.read(text.data(), static_cast<std::streamsize>(text.size()));
        text.resize(static_cast<size_t>(in.gcount()));
        if (text.size() > kMaxTemplateSize)
            throw ConfigError(file, 0, name, fmt::format("larger than {} bytes", kMaxTemplateSize));
        templates->add(name, text, file, path.extension() == ".html");
    }
    for (std::string_view required : kRequired)
        if (!templates->has(required))
            throw ConfigError(dir, 0, std::string(required),
                              fmt::format("missing: {0}.html or {0}.txt is required", required));
    return templates;
}

std::shared_ptr<const MessageTemplates> MessageTemplates::builtin() {
    static const std::shared_ptr<const MessageTemplates> texts = [] {
        auto t = std::make_shared<MessageTemplates>();
        for (const BuiltinMessage& m : kBuiltinMessages)
            t->add(std::string(m.name), m.text, "builtin:" + std::string(m.file), m.html);
        return t;
    }();
    return texts;
}

bool MessageTemplates::has(std::string_view name) const {
    return templates_.count(name) > 0;
}

bool MessageTemplates::is_html(std::string_view name) const {
    auto it = templates_.find(name);
    return it != templates_.end() && it->second.html;
}

std::vector<std::string> MessageTemplates::names() const {
    std::vector<std::string> out;
    for (const auto& [name, t] : templates_)
        out.push_back(name);
    return out;
}

std::string MessageTemplates::render(std::string_view name, const MessageFields& fields) const {
    auto it = templates_.find(name);
    if (it == templates_.end())
        throw std::out_of_range("no message template \"" + std::string(name) + "\"");
    const Template& t = it->second;
    std::string out;
    for (const Piece& piece : t.pieces) {
        if (!piece.placeholder)
            out += piece.text;
        else if (const std::string* value = field(fields, piece.text))
            append_value(out, *value, t.html);
    }
    return out;
}

}  // namespace nfqscan
