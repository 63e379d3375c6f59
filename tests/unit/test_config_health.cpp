// The passive-health rule keys: down_time, max_down_time, slow_start, retries.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"

using namespace std::chrono_literals;
using namespace ringlb::config;

namespace {

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
    const auto issues = ringlb::test::issues_of(std::string(kRuleHead) +
                                         "down_time = 0\n"            // 5
                                         "slow_start = \"fast\"\n"    // 6
                                         "retries = -1\n");           // 7
    CHECK_MESSAGE(ringlb::test::has_issue(issues, "rule[0].down_time", 5, "greater than 0"), ringlb::test::dump(issues));
    CHECK_MESSAGE(ringlb::test::has_issue(issues, "rule[0].slow_start", 6, "invalid duration"), ringlb::test::dump(issues));
    CHECK_MESSAGE(ringlb::test::has_issue(issues, "rule[0].retries", 7, "between 0 and 1000"), ringlb::test::dump(issues));

    const auto cap = ringlb::test::issues_of(std::string(kRuleHead) +
                                      "down_time = \"1m\"\n"       // 5
                                      "max_down_time = \"30s\"\n"); // 6
    CHECK_MESSAGE(ringlb::test::has_issue(cap, "rule[0].max_down_time", 6, "must not be less than down_time"),
                  ringlb::test::dump(cap));
}
