#pragma once
// Small text helpers shared by the views and log lines.
#include <string>
#include <string_view>
#include <vector>

namespace ringlb {

inline std::string join(const std::vector<std::string>& items, const char* separator = ",") {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
    return out;
}

// `text` made safe to print on one line of a log or a terminal: line breaks and tabs become
// \n, \r, \t; every other control byte (C0, DEL, the C1 range U+0080..U+009F) and every byte
// that is not part of valid UTF-8 becomes \xHH. Printable ASCII and valid UTF-8 pass unchanged,
// so client-supplied text can neither start a forged log line nor move a terminal's cursor.
std::string escape_control(std::string_view text);

// Appends `text` as a JSON string literal (with its quotes). Control bytes are escaped as JSON
// requires; a byte that is not part of valid UTF-8 becomes \u00HH, so the result is always
// valid UTF-8 JSON.
void append_json_string(std::string& out, std::string_view text);

}  // namespace ringlb
