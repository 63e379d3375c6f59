// Config keys `source` (rule and server), `freebind` and server names.
#include <doctest/doctest.h>

#include <string>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"

using namespace ringlb::config;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;

namespace {

std::string rule_with(const std::string& lines, const std::string& servers = "[\"127.0.0.1:9001\"]") {
    return "[[rule]]\nid = \"r\"\nlisten = [\"127.0.0.1:8080\"]\n" + lines + "servers = " + servers + "\n";
}

}  // namespace

TEST_CASE("parse_source takes an IP, or an IP and a port range") {
    std::string error;
    auto plain = parse_source("127.0.0.2", &error);
    REQUIRE(plain);
    CHECK(plain->address.ip_string() == "127.0.0.2");
    CHECK_FALSE(plain->has_port_range());
    CHECK(plain->to_string() == "127.0.0.2");
    auto ranged = parse_source("10.0.0.1:20000-29999", &error);
    REQUIRE(ranged);
    CHECK(ranged->first_port == 20000);
    CHECK(ranged->last_port == 29999);
    CHECK(ranged->to_string() == "10.0.0.1:20000-29999");
    auto one = parse_source("10.0.0.1:5000", &error);
    REQUIRE(one);
    CHECK(one->first_port == 5000);
    CHECK(one->last_port == 5000);
    auto v6 = parse_source("::1", &error);
    REQUIRE(v6);
    CHECK(v6->address.is_v6());
    auto v6_ranged = parse_source("[2001:db8::5]:1024-2047", &error);
    REQUIRE(v6_ranged);
    CHECK(v6_ranged->to_string() == "[2001:db8::5]:1024-2047");

    for (const char* bad : {"", "host", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:9-8", "10.0.0.1:a-b",
                            "[::1", "[::1]x", "[::1]:", "1.2.3.4.5"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_source(bad, &error));
        CHECK_FALSE(error.empty());
        error.clear();
    }
}

TEST_CASE("source, freebind and server names are read, and written back by the dump") {
    const Config config = parse_config(
        rule_with("source = \"127.0.0.2:30000-30010\"\nfreebind = true\n",
                  "[{ name = \"web1\", address = \"127.0.0.1:9001\", source = \"127.0.0.3\" }, \"127.0.0.1:9002\"]"),
        "t.toml");
    const RuleConfig& rule = config.rules[0];
    CHECK(rule.source.to_string() == "127.0.0.2:30000-30010");
    CHECK(rule.freebind);
    CHECK(rule.servers[0].name == "web1");
    CHECK(rule.servers[0].label() == "web1");
    CHECK(rule.servers[0].source.to_string() == "127.0.0.3");
    CHECK(rule.servers[1].name.empty());
    CHECK(rule.servers[1].label() == "127.0.0.1:9002");
    CHECK_FALSE(rule.servers[1].source.enabled());
    const Config again = parse_config(to_toml(config), "dump.toml");
    CHECK(again.rules[0] == rule);
    CHECK_FALSE(parse_config(rule_with(""), "t.toml").rules[0].freebind);
}

TEST_CASE("bad sources, names and freebind values are errors naming key and line") {
    auto issues = issues_of(rule_with("source = \"127.0.0.2:9-8\"\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].source", 4, "bad source \"127.0.0.2:9-8\": port range \"9-8\" runs backwards"),
                  dump(issues));
    issues = issues_of(rule_with("freebind = \"yes\"\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].freebind", 4, "boolean"), dump(issues));
    issues = issues_of(rule_with("", "[{ address = \"127.0.0.1:9001\", source = \"nowhere\" }]"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0].source", 4, "bad IP address \"nowhere\""), dump(issues));
    // An IPv4 source cannot reach an IPv6 server.
    issues = issues_of(rule_with("source = \"127.0.0.2\"\n", "[\"[::1]:9001\"]"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].source", 4, "source 127.0.0.2 and server [::1]:9001 are of different address families"),
                  dump(issues));
    issues = issues_of(rule_with("", "[{ address = \"127.0.0.1:9001\", name = \"1web\" }]"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0].name", 4, "invalid server name \"1web\" (1-64 characters"),
                  dump(issues));
    issues = issues_of(rule_with("", "[{ address = \"127.0.0.1:9001\", name = \"web\" }, { address = \"127.0.0.1:9002\", name = \"web\" }]"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[1].name", 4,
                            "duplicate server name \"web\" in this rule (also rule[0].servers[0])"),
                  dump(issues));
    issues = issues_of(rule_with("", "[{ dns = \"backend.example:80\", name = \"web2\" }]"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0].name", 4,
                            "a dns entry's name \"web2\" names its servers web21, web22, ...: it may not end in a digit"),
                  dump(issues));
    issues = issues_of(rule_with("", "[{ dns = \"backend.example:80\", name = \"web\" }, "
                                     "{ address = \"127.0.0.1:9002\", name = \"web3\" }]"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers", 4,
                            "server name \"web3\" is one the dns entry named \"web\" gives its servers"),
                  dump(issues));
    CHECK_NOTHROW(parse_config(rule_with("", "[{ dns = \"backend.example:80\", name = \"web\" }, "
                                             "{ address = \"127.0.0.1:9002\", name = \"web-main\" }]"),
                               "t"));
}

TEST_CASE("one name per rule: two rules may both name a server web1") {
    const std::string text = rule_with("", "[{ address = \"127.0.0.1:9001\", name = \"web1\" }]") +
                             "[[rule]]\nid = \"s\"\nlisten = [\"127.0.0.1:8081\"]\nservers = [{ address = \"127.0.0.1:9002\", name = \"web1\" }]\n";
    const Config config = parse_config(text, "t.toml");
    CHECK(config.rules[1].servers[0].name == "web1");
}
