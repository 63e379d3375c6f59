#pragma once
// Small text helpers shared by the views and log lines.
#include <string>
#include <vector>

namespace ringlb {

inline std::string join(const std::vector<std::string>& items, const char* separator = ",") {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
    return out;
}

}  // namespace ringlb
