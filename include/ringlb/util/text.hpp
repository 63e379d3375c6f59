#pragma once
// Small text helpers shared by the views, log lines and parsers.
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb {

inline std::string join(const std::vector<std::string>& items, const char* separator = ",") {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
    return out;
}

// A control character: bytes 0x00-0x1F and 0x7F. Names, addresses, tokens and paths never hold
// one: C APIs would stop at a NUL, and a terminal would act on the others.
inline bool is_control_byte(char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7F;
}

inline bool has_control_byte(std::string_view text) { return std::any_of(text.begin(), text.end(), is_control_byte); }

// The text of a TOML basic string without its quotes: '"' and '\' escaped, control characters
// as \b \t \n \f \r or \uXXXX, every other byte as it is. Safe to show inside quotes on one line,
// and exactly what a config file would say.
inline std::string escaped(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\t': out += "\\t"; break;
            case '\n': out += "\\n"; break;
            case '\f': out += "\\f"; break;
            case '\r': out += "\\r"; break;
            default:
                if (!is_control_byte(c)) {
                    out += c;
                    break;
                }
                char code[8];
                std::snprintf(code, sizeof code, "\\u%04X", static_cast<unsigned>(static_cast<unsigned char>(c)));
                out += code;
        }
    }
    return out;
}

// "\"text\"" with escaped(): how messages quote a value that came from outside.
inline std::string quoted_escaped(std::string_view text) { return "\"" + escaped(text) + "\""; }

// Why `text` may not be used as a name, address, token or path ("" when it may): the first
// control character and where it is.
inline std::string control_byte_problem(std::string_view text) {
    const auto found = std::find_if(text.begin(), text.end(), is_control_byte);
    if (found == text.end()) return {};
    return "contains the control character " + escaped(std::string_view(&*found, 1)) + " at byte " +
           std::to_string(found - text.begin() + 1);
}

// `text` made safe to print on one line of a log or a terminal: line breaks and tabs become
// \n, \r, \t; every other control character (C0, DEL, the C1 range U+0080..U+009F) becomes
// \uXXXX, as escaped() and config files write it, and every byte that is not part of valid
// UTF-8 becomes \xHH. Printable ASCII and valid UTF-8 pass unchanged,
// so client-supplied text can neither start a forged log line nor move a terminal's cursor.
std::string escape_control(std::string_view text);

// Appends `text` as a JSON string literal (with its quotes). Control bytes are escaped as JSON
// requires; a byte that is not part of valid UTF-8 becomes \u00HH, so the result is always
// valid UTF-8 JSON.
void append_json_string(std::string& out, std::string_view text);

}  // namespace ringlb
