// Rewrites of blocked messages, with GMime 3 (DESIGN.md: no MIME parser of
// our own). GMime writes back what it parsed from the original bytes (raw
// header values, the parts' original content streams), so what a rewrite
// does not touch stays as the sender wrote it.
#include <gmime/gmime.h>

#include <memory>
#include <mutex>

#include "mail.h"

namespace nfqscan::mail {

namespace {

void ensure_gmime() {
    static std::once_flag once;
    std::call_once(once, [] { g_mime_init(); });
}

struct Unref {
    void operator()(void* object) const {
        if (object) g_object_unref(object);
    }
};
template <typename T>
using Ref = std::unique_ptr<T, Unref>;

struct FormatOptionsFree {
    void operator()(GMimeFormatOptions* o) const { g_mime_format_options_free(o); }
};

Ref<GMimeMessage> parse(std::span<const uint8_t> message) {
    ensure_gmime();
    // An empty span may have no buffer at all, which GMime's stream refuses
    // (g_critical); there is no message in it either way.
    if (message.empty()) return {};
    Ref<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(
        reinterpret_cast<const char*>(message.data()), message.size()));
    Ref<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
    return Ref<GMimeMessage>(g_mime_parser_construct_message(parser.get(), nullptr));
}

std::string write(GMimeObject* object) {
    Ref<GMimeStream> out(g_mime_stream_mem_new());
    std::unique_ptr<GMimeFormatOptions, FormatOptionsFree> options(
        g_mime_format_options_clone(nullptr));
    g_mime_format_options_set_newline_format(options.get(), GMIME_NEWLINE_FORMAT_DOS);
    g_mime_object_write_to_stream(object, options.get(), out.get());
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
    return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

std::string or_empty(const char* s) {
    return s ? s : "";
}

// A text/plain part saying `text`, in the narrowest encoding that carries it.
Ref<GMimeTextPart> text_part(std::string_view text) {
    Ref<GMimeTextPart> part(g_mime_text_part_new_with_subtype("plain"));
    std::string body(text);
    g_mime_text_part_set_text(part.get(), body.c_str());
    g_mime_text_part_set_charset(part.get(), "utf-8");
    GMimeContentEncoding encoding = g_mime_part_get_best_content_encoding(
        GMIME_PART(part.get()), GMIME_ENCODING_CONSTRAINT_7BIT);
    g_mime_part_set_content_encoding(GMIME_PART(part.get()), encoding);
    return part;
}

void add_headers(GMimeObject* object, const Headers& extra) {
    for (const auto& [name, value] : extra)
        g_mime_object_append_header(object, name.c_str(), value.c_str(), "utf-8");
}

std::string addresses(InternetAddressList* list) {
    if (!list || internet_address_list_length(list) == 0) return "";
    char* text = internet_address_list_to_string(list, nullptr, FALSE);
    std::string out = or_empty(text);
    g_free(text);
    return out;
}

// The address of the first mailbox of `list` ("" when it has none).
std::string first_mailbox(InternetAddressList* list) {
    int n = list ? internet_address_list_length(list) : 0;
    for (int i = 0; i < n; ++i) {
        InternetAddress* a = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(a))
            return or_empty(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)));
    }
    return "";
}

std::string reply_address(GMimeMessage* m) {
    if (const char* return_path = g_mime_object_get_header(GMIME_OBJECT(m), "Return-Path")) {
        // An empty or unreadable Return-Path is no licence to fall back to
        // From: a bounce says "<>" there, and a bounce is never answered.
        Ref<InternetAddressList> list(internet_address_list_parse(nullptr, return_path));
        std::string address = first_mailbox(list.get());
        return address.empty() ? "<>" : "<" + address + ">";
    }
    std::string from = first_mailbox(g_mime_message_get_from(m));
    return from.empty() ? "" : "<" + from + ">";
}

// The walk over leaf parts, with each part's parent so strip() can swap it.
struct Leaf {
    GMimeObject* parent;  // a multipart, a message part, or the message
    int index;            // in a multipart parent
    GMimePart* part;
};

void walk(GMimeObject* parent, int index, GMimeObject* object, size_t depth, std::vector<Leaf>& out,
          bool& complete) {
    if (!object) return;
    if (depth > kMaxDepth || out.size() >= kMaxParts) {
        complete = false;
        return;
    }
    if (GMIME_IS_MULTIPART(object)) {
        GMimeMultipart* multipart = GMIME_MULTIPART(object);
        int n = g_mime_multipart_get_count(multipart);
        for (int i = 0; i < n; ++i)
            walk(object, i, g_mime_multipart_get_part(multipart, i), depth + 1, out, complete);
        return;
    }
    if (GMIME_IS_MESSAGE_PART(object)) {
        GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
        if (inner)
            walk(GMIME_OBJECT(inner), 0, g_mime_message_get_mime_part(inner), depth + 1, out,
                 complete);
        return;
    }
    if (GMIME_IS_PART(object)) out.push_back({parent, index, GMIME_PART(object)});
}

Part describe(const Leaf& leaf, size_t index) {
    Part p;
    p.index = index;
    p.file_name = or_empty(g_mime_part_get_filename(leaf.part));
    if (GMimeContentType* type = g_mime_object_get_content_type(GMIME_OBJECT(leaf.part))) {
        char* mime = g_mime_content_type_get_mime_type(type);
        p.mime_type = or_empty(mime);
        g_free(mime);
    }
    if (GMimeDataWrapper* content = g_mime_part_get_content(leaf.part)) {
        Ref<GMimeStream> out(g_mime_stream_mem_new());
        g_mime_data_wrapper_write_to_stream(content, out.get());  // decodes the CTE
        GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
        p.content.assign(bytes->data, bytes->data + bytes->len);
    }
    return p;
}

}  // namespace

Summary summarize(std::span<const uint8_t> message) {
    Summary s;
    Ref<GMimeMessage> m = parse(message);
    if (!m) return s;
    s.parsed = true;
    s.subject = or_empty(g_mime_message_get_subject(m.get()));
    s.from = addresses(g_mime_message_get_from(m.get()));
    s.to = addresses(g_mime_message_get_to(m.get()));
    s.message_id = or_empty(g_mime_message_get_message_id(m.get()));
    s.reply_address = reply_address(m.get());
    return s;
}

std::string replace_body(std::span<const uint8_t> message, std::string_view notice,
                         const Headers& extra) {
    Ref<GMimeMessage> m = parse(message);
    if (!m) {
        m.reset(g_mime_message_new(TRUE));
        g_mime_message_set_subject(m.get(), "Message removed by nfqscan", "utf-8");
    }
    Ref<GMimeTextPart> part = text_part(notice);
    // The new body's MIME fields replace the old body's (Content-Type,
    // Content-Transfer-Encoding, Content-Disposition live on the part).
    g_mime_message_set_mime_part(m.get(), GMIME_OBJECT(part.get()));
    add_headers(GMIME_OBJECT(m.get()), extra);
    return write(GMIME_OBJECT(m.get()));
}

std::string tag_subject(std::span<const uint8_t> message, std::string_view tag,
                        const Headers& extra) {
    Ref<GMimeMessage> m = parse(message);
    if (!m) return std::string(message.begin(), message.end());
    if (!tag.empty()) {
        std::string subject = or_empty(g_mime_message_get_subject(m.get()));
        std::string tagged = subject.empty() ? std::string(tag) : std::string(tag) + " " + subject;
        // Set from the decoded text: GMime encodes it anew where it needs
        // encoded words, so a tagged "=?utf-8?...?=" subject stays valid.
        g_mime_message_set_subject(m.get(), tagged.c_str(), "utf-8");
    }
    add_headers(GMIME_OBJECT(m.get()), extra);
    return write(GMIME_OBJECT(m.get()));
}

std::vector<Part> parts(std::span<const uint8_t> message, bool* complete) {
    std::vector<Part> out;
    bool all = true;
    Ref<GMimeMessage> m = parse(message);
    if (m) {
        std::vector<Leaf> leaves;
        walk(GMIME_OBJECT(m.get()), 0, g_mime_message_get_mime_part(m.get()), 0, leaves, all);
        for (size_t i = 0; i < leaves.size(); ++i)
            out.push_back(describe(leaves[i], i));
    }
    if (complete) *complete = all && m;
    return out;
}

std::string strip(std::span<const uint8_t> message, const std::set<size_t>& remove,
                  const std::function<std::string(const Part&)>& text, const Headers& extra) {
    Ref<GMimeMessage> m = parse(message);
    if (!m) return replace_body(message, text(Part{}), extra);
    std::vector<Leaf> leaves;
    bool complete = true;
    walk(GMIME_OBJECT(m.get()), 0, g_mime_message_get_mime_part(m.get()), 0, leaves, complete);
    // Describe before any swap: a replaced part is freed by its parent.
    std::vector<std::pair<Leaf, std::string>> swaps;
    for (size_t i = 0; i < leaves.size(); ++i)
        if (remove.count(i)) swaps.emplace_back(leaves[i], text(describe(leaves[i], i)));
    for (auto& [leaf, notice] : swaps) {
        Ref<GMimeTextPart> replacement = text_part(notice);
        if (GMIME_IS_MULTIPART(leaf.parent)) {
            GMimeObject* old = g_mime_multipart_replace(GMIME_MULTIPART(leaf.parent), leaf.index,
                                                        GMIME_OBJECT(replacement.get()));
            if (old) g_object_unref(old);
        } else if (GMIME_IS_MESSAGE(leaf.parent)) {
            g_mime_message_set_mime_part(GMIME_MESSAGE(leaf.parent),
                                         GMIME_OBJECT(replacement.get()));
        }
    }
    add_headers(GMIME_OBJECT(m.get()), extra);
    return write(GMIME_OBJECT(m.get()));
}

}  // namespace nfqscan::mail
