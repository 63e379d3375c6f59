#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"

using namespace ringlb::config;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;

namespace {

const char* const kRule = "[[rule]]\nid = \"tls\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n";

}  // namespace

TEST_CASE("sni and alpn: names lower-cased, a leading wildcard label, written back as read") {
    const Config config = parse_config(std::string(kRule) +
                                           "sni = [\"Example.COM\", \"*.example.org\", \"under_score.example\"]\n"
                                           "alpn = [\"h2\", \"http/1.1\"]\n",
                                       "test.toml");
    const RuleConfig& rule = config.rules.at(0);
    CHECK(rule.sni == std::vector<std::string>{"example.com", "*.example.org", "under_score.example"});
    CHECK(rule.alpn == std::vector<std::string>{"h2", "http/1.1"});
    const Config again = parse_config(to_toml(config), "again.toml");
    CHECK(again.rules.at(0).sni == rule.sni);
    CHECK(again.rules.at(0).alpn == rule.alpn);

    const RuleConfig single = parse_config(std::string(kRule) + "sni = \"one.example\"\n", "t").rules.at(0);
    CHECK(single.sni == std::vector<std::string>{"one.example"});
    CHECK(parse_config(kRule, "t").rules.at(0).sni.empty());
}

TEST_CASE("sni and alpn: bad values are reported at their line, naming the key") {
    const auto issues = issues_of(std::string(kRule) +
                                  "sni = [\"a.*.example\", \"*\", \"*.\", \"bad name\", \"trailing.\", \"a..b\", \"\"]\n"  // 5
                                  "alpn = [\"\", \"h 2\", \"h2\", \"h2\"]\n");                                            // 6
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[0]", 5, "a leading \"*.\""), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[1]", 5, "\"*\""), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[2]", 5, "nothing after"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[3]", 5, "letters, digits"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[4]", 5, "empty label"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[5]", 5, "empty label"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].sni[6]", 5, "is empty"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].alpn[0]", 6, "1 to 255 printable"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].alpn[1]", 6, "1 to 255 printable"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].alpn[3]", 6, "duplicate ALPN protocol \"h2\""), dump(issues));
    CHECK(issues.size() == 10);

    const auto empty = issues_of(std::string(kRule) + "sni = []\nalpn = 2\n");
    CHECK_MESSAGE(has_issue(empty, "rule[0].sni", 5, "must not be empty"), dump(empty));
    CHECK_MESSAGE(has_issue(empty, "rule[0].alpn", 6, "expected a string"), dump(empty));
    const auto twice = issues_of(std::string(kRule) + "sni = [\"A.example\", \"a.example\"]\n");
    CHECK_MESSAGE(has_issue(twice, "rule[0].sni[1]", 5, "duplicate server name"), dump(twice));
}

TEST_CASE("sni: a rule routing by name does not hide the rules after it") {
    const Config config = parse_config(std::string(kRule) + "sni = \"a.example\"\n" +
                                           "[[rule]]\nid = \"rest\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:3\"]\n",
                                       "test.toml");
    CHECK_MESSAGE(config.warnings.empty(), dump(config.warnings));
}
