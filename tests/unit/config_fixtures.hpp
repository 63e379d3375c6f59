#pragma once
// Helpers for tests of config errors: collect the issues of a rejected text and look for one.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/config/config.hpp"

namespace ringlb::test {

// The issues parse_config reports for `text`; fails the test when it accepts the text.
inline std::vector<config::ConfigIssue> issues_of(const std::string& text) {
    try {
        config::parse_config(text, "test.toml");
    } catch (const config::ConfigError& error) {
        return error.issues();
    }
    FAIL("parse_config accepted a config that should be rejected:\n" << text);
    return {};
}

// Whether some issue has exactly this key and line and a message containing `part`.
inline bool has_issue(const std::vector<config::ConfigIssue>& issues, const std::string& key, unsigned line,
                      const std::string& part) {
    for (const auto& issue : issues)
        if (issue.key == key && issue.line == line && issue.message.find(part) != std::string::npos) return true;
    return false;
}

inline std::string dump(const std::vector<config::ConfigIssue>& issues) {
    std::string out;
    for (const auto& issue : issues) out += issue.to_string() + "\n";
    return out;
}

}  // namespace ringlb::test
