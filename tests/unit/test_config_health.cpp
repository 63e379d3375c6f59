// The passive-health rule keys: down_time, max_down_time, slow_start, retries.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/config/config.hpp"

using namespace std::chrono_literals;
using namespace ringlb::config;

namespace {

std::vector<ConfigIssue> health_issues_of(const std::string& text) {
    try {
        parse_config(text, "test.toml");
    } catch (const ConfigError& error) {
        return error.issues();
    }
    FAIL("parse_config accepted a config that should be rejected:\n" << text);
    return {};
}

bool has_health_issue(const std::vector<ConfigIssue>& issues, const std::string& key, unsigned line,
                      const std::string& part) {
    for (const auto& issue : issues)
        if (issue.key == key && issue.line == line && issue.message.find(part) != std::string::npos) return true;
    return false;
}

std::string dump_issues(const std::vector<ConfigIssue>& issues) {
    std::string out;
    for (const auto& issue : issues) out += issue.to_string() + "\n";
    return out;
}

const char* const kRuleHead = "[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n";  // lines 1-4

}  // namespace

TEST_CASE("passive health keys: defaults") {
    const Config config = parse_config(kRuleHead, "test.toml");
    const RuleConfig& rule = config.rules.at(0);
    CHECK(rule.down_time == 10s);
    CHECK(rule.max_down_time == 5min);
    CHECK(rule.slow_start == 0ms);
    CHECK(rule.retries == 0);
}

TEST_CASE("passive health keys: values parse") {
    const Config config = parse_config(std::string(kRuleHead) +
                                           "down_time = \"300ms\"\nmax_down_time = \"1m\"\nslow_start = \"30s\"\n"
                                           "retries = 2\n",
                                       "test.toml");
    const RuleConfig& rule = config.rules.at(0);
    CHECK(rule.down_time == 300ms);
    CHECK(rule.max_down_time == 1min);
    CHECK(rule.slow_start == 30s);
    CHECK(rule.retries == 2);
    CHECK(parse_config(std::string(kRuleHead) + "slow_start = 0\n", "t").rules.at(0).slow_start == 0ms);
}

TEST_CASE("passive health keys: bad values are reported at their line") {
    const auto issues = health_issues_of(std::string(kRuleHead) +
                                         "down_time = 0\n"            // 5
                                         "slow_start = \"fast\"\n"    // 6
                                         "retries = -1\n");           // 7
    CHECK_MESSAGE(has_health_issue(issues, "rule[0].down_time", 5, "greater than 0"), dump_issues(issues));
    CHECK_MESSAGE(has_health_issue(issues, "rule[0].slow_start", 6, "invalid duration"), dump_issues(issues));
    CHECK_MESSAGE(has_health_issue(issues, "rule[0].retries", 7, "between 0 and 1000"), dump_issues(issues));

    const auto cap = health_issues_of(std::string(kRuleHead) +
                                      "down_time = \"1m\"\n"       // 5
                                      "max_down_time = \"30s\"\n"); // 6
    CHECK_MESSAGE(has_health_issue(cap, "rule[0].max_down_time", 6, "must not be less than down_time"),
                  dump_issues(cap));
}
