#include "ringlb/util/text.hpp"

#include <cstdint>
#include <cstdio>

namespace ringlb {
namespace {

// Length of the valid UTF-8 sequence starting at text[at] (1..4), or 0 when the byte there does
// not start one (a stray continuation byte, an overlong form, a surrogate, beyond U+10FFFF).
size_t utf8_sequence_length(std::string_view text, size_t at) {
    const auto byte = [&](size_t i) { return at + i < text.size() ? static_cast<uint8_t>(text[at + i]) : 0; };
    const auto continuation = [&](size_t i, uint8_t low = 0x80, uint8_t high = 0xBF) {
        const uint8_t b = byte(i);
        return at + i < text.size() && b >= low && b <= high;
    };
    const uint8_t lead = byte(0);
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return continuation(1) ? 2 : 0;
    if (lead == 0xE0) return continuation(1, 0xA0) && continuation(2) ? 3 : 0;
    if (lead == 0xED) return continuation(1, 0x80, 0x9F) && continuation(2) ? 3 : 0;
    if (lead >= 0xE1 && lead <= 0xEF) return continuation(1) && continuation(2) ? 3 : 0;
    if (lead == 0xF0) return continuation(1, 0x90) && continuation(2) && continuation(3) ? 4 : 0;
    if (lead >= 0xF1 && lead <= 0xF3) return continuation(1) && continuation(2) && continuation(3) ? 4 : 0;
    if (lead == 0xF4) return continuation(1, 0x80, 0x8F) && continuation(2) && continuation(3) ? 4 : 0;
    return 0;
}

// U+0080..U+009F: C1 controls (0x9B alone is a CSI on some terminals).
bool is_c1_control(std::string_view text, size_t at, size_t length) {
    return length == 2 && static_cast<uint8_t>(text[at]) == 0xC2 && static_cast<uint8_t>(text[at + 1]) < 0xA0;
}

bool is_c0_or_del(char c) { return static_cast<uint8_t>(c) < 0x20 || c == 0x7F; }

void append_hex_escape(std::string& out, const char* prefix, uint8_t byte) {
    char escaped[8];
    std::snprintf(escaped, sizeof escaped, "%s%02x", prefix, byte);
    out += escaped;
}

// A control character as a code point, U+0000..U+009F: "\u001B".
void append_code_point(std::string& out, unsigned code_point) {
    char escaped[8];
    std::snprintf(escaped, sizeof escaped, "\\u%04X", code_point);
    out += escaped;
}

bool needs_escaping(std::string_view text) {
    for (const char c : text)
        if (is_c0_or_del(c) || static_cast<uint8_t>(c) >= 0x80) return true;
    return false;
}

}  // namespace

std::string escape_control(std::string_view text) {
    if (!needs_escaping(text)) return std::string(text);  // the common case: plain ASCII
    std::string out;
    out.reserve(text.size() + 16);
    for (size_t at = 0; at < text.size();) {
        const char c = text[at];
        const size_t length = utf8_sequence_length(text, at);
        if (length > 1 && !is_c1_control(text, at, length)) {
            out.append(text.substr(at, length));
            at += length;
            continue;
        }
        if (length == 2) {  // a C1 control: its code point is the second byte
            append_code_point(out, static_cast<uint8_t>(text[at + 1]));
            at += 2;
            continue;
        }
        if (length == 0) {  // a byte that is not part of valid UTF-8
            append_hex_escape(out, "\\x", static_cast<uint8_t>(c));
            ++at;
            continue;
        }
        switch (c) {
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (is_c0_or_del(c))
                    append_code_point(out, static_cast<uint8_t>(c));
                else
                    out += c;
        }
        ++at;
    }
    return out;
}

void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    for (size_t at = 0; at < text.size();) {
        const char c = text[at];
        const size_t length = utf8_sequence_length(text, at);
        if (length > 1) {
            out.append(text.substr(at, length));
            at += length;
            continue;
        }
        ++at;
        if (length == 0) {  // not UTF-8: keep the byte's value, as the code point of the same number
            append_hex_escape(out, "\\u00", static_cast<uint8_t>(c));
            continue;
        }
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (is_c0_or_del(c))
                    append_hex_escape(out, "\\u00", static_cast<uint8_t>(c));
                else
                    out += c;
        }
    }
    out += '"';
}

}  // namespace ringlb
