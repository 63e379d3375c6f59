// The splice path's configuration: the rule key zero_copy and [global] max_pipes, their errors,
// the warning for a zero_copy no worker can serve, and both written back by to_toml.
#include <doctest/doctest.h>

#include <string>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"

using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;
using namespace ringlb::config;

namespace {

// A minimal valid rule, lines 1-4 when it starts the text.
const char* const kRule = "[[rule]]\nid = \"r\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n";

Config parse(const std::string& text) { return parse_config(text, "test.toml"); }

ZeroCopy zero_copy_of(const std::string& value) {
    return parse(std::string(kRule) + "zero_copy = \"" + value + "\"\n").rules.at(0).zero_copy;
}

uint32_t max_pipes_of(const std::string& value) {
    return parse("[global]\nmax_pipes = " + value + "\n" + kRule).global.max_pipes;
}

}  // namespace

TEST_CASE("zero_copy: off by default; auto, splice and off in any case") {
    CHECK(parse(kRule).rules.at(0).zero_copy == ZeroCopy::Off);
    CHECK(zero_copy_of("auto") == ZeroCopy::Auto);
    CHECK(zero_copy_of("splice") == ZeroCopy::Splice);
    CHECK(zero_copy_of("off") == ZeroCopy::Off);
    CHECK(zero_copy_of("AUTO") == ZeroCopy::Auto);
    CHECK(zero_copy_of("Splice") == ZeroCopy::Splice);
    CHECK(parse(std::string(kRule) + "zero_copy = \"splice\"\n").warnings.empty());
    CHECK(to_string(ZeroCopy::Auto) == "auto");
    CHECK(to_string(ZeroCopy::Splice) == "splice");
    CHECK(to_string(ZeroCopy::Off) == "off");
}

TEST_CASE("zero_copy: other values are reported with the key and the supported modes") {
    for (const char* bad : {"\"sendfile\"", "\"\"", "\"on\"", "true", "1"}) {
        CAPTURE(bad);
        const auto issues = issues_of(std::string(kRule) + "zero_copy = " + bad + "\n");  // line 5
        const bool string_value = bad[0] == '"';
        CHECK_MESSAGE(has_issue(issues, "rule[0].zero_copy", 5,
                                string_value ? "(supported: auto, splice, off)" : "expected a string"),
                      dump(issues));
        CHECK(issues.size() == 1);
    }
}

TEST_CASE("max_pipes: 1024 by default, 0 to 32768 accepted, anything else reported as global.max_pipes") {
    CHECK(parse(kRule).global.max_pipes == 1024);
    CHECK(max_pipes_of("0") == 0);
    CHECK(max_pipes_of("1") == 1);
    CHECK(max_pipes_of("32768") == 32768);
    for (const char* bad : {"32769", "-1", "\"x\"", "1.5", "100000000000"}) {
        CAPTURE(bad);
        const auto issues = issues_of(std::string("[global]\nmax_pipes = ") + bad + "\n" + kRule);  // line 2
        CHECK_MESSAGE(has_issue(issues, "global.max_pipes", 2, ""), dump(issues));
        CHECK(issues.size() == 1);
    }
    const auto above = issues_of(std::string("[global]\nmax_pipes = 32769\n") + kRule);
    CHECK_MESSAGE(has_issue(above, "global.max_pipes", 2, "32768"), dump(above));
    const auto text = issues_of(std::string("[global]\nmax_pipes = \"x\"\n") + kRule);
    CHECK_MESSAGE(has_issue(text, "global.max_pipes", 2, "integer"), dump(text));
}

TEST_CASE("zero_copy with max_pipes = 0 is accepted with a warning at the rule's zero_copy") {
    const std::string no_pipes = "[global]\nmax_pipes = 0\n";
    for (const char* mode : {"auto", "splice"}) {
        CAPTURE(mode);
        const Config config = parse(no_pipes + kRule + "zero_copy = \"" + mode + "\"\n");  // line 7
        REQUIRE_MESSAGE(config.warnings.size() == 1, dump(config.warnings));
        CHECK_MESSAGE(has_issue(config.warnings, "rule[0].zero_copy", 7, "has no effect: [global] max_pipes = 0"),
                      dump(config.warnings));
    }
    // Off, unset, or pipes to be had: nothing to warn about.
    CHECK(parse(no_pipes + kRule + "zero_copy = \"off\"\n").warnings.empty());
    CHECK(parse(no_pipes + kRule).warnings.empty());
    CHECK(parse(std::string("[global]\nmax_pipes = 1\n") + kRule + "zero_copy = \"auto\"\n").warnings.empty());
    // Only the rules that ask for it.
    const Config two = parse(no_pipes + kRule + "[[rule]]\nid = \"s\"\nlisten = \"127.0.0.1:3\"\n" +
                             "servers = [\"127.0.0.1:2\"]\nzero_copy = \"splice\"\n");
    REQUIRE_MESSAGE(two.warnings.size() == 1, dump(two.warnings));
    CHECK(two.warnings[0].key == "rule[1].zero_copy");
}

TEST_CASE("zero_copy and max_pipes are written back by to_toml and rule_to_toml") {
    const Config config = parse("[global]\nmax_pipes = 77\n" + std::string(kRule) + "zero_copy = \"Auto\"\n");
    const std::string text = to_toml(config);
    CHECK(text.find("max_pipes = 77\n") != std::string::npos);
    CHECK(text.find("zero_copy = \"auto\"\n") != std::string::npos);
    const Config reread = parse_config(text, "dump.toml");
    CHECK(reread.global.max_pipes == 77);
    CHECK(reread.rules.at(0).zero_copy == ZeroCopy::Auto);
    CHECK(to_toml(reread) == text);

    const RuleConfig& rule = config.rules.at(0);
    const std::string written = rule_to_toml(rule);
    CHECK(written.find("zero_copy = \"auto\"\n") != std::string::npos);
    CHECK(rule_to_toml(parse(written).rules.at(0)) == written);
    // The mode is part of what makes two rules differ.
    for (const char* other : {"splice", "off"}) {
        CAPTURE(other);
        CHECK(rule_to_toml(parse(std::string(kRule) + "zero_copy = \"" + other + "\"\n").rules.at(0)) != written);
    }
    CHECK(to_toml(parse(kRule)).find("zero_copy = \"off\"\n") != std::string::npos);
    CHECK(to_toml(parse(kRule)).find("max_pipes = 1024\n") != std::string::npos);
}
