// What `--check` tells beyond "valid or not": the nearest key for a typo, the dns: form for a
// host name, a hint for [rule.health] above every [[rule]], and warnings for what is valid but
// almost surely a mistake (a rule that can never match, a server listed twice, a rule whose
// servers all have weight 0). Also: timeout = "0" (no idle timeout), and that rules compare
// equal exactly when their TOML texts are equal (reload keeps a rule's slot on that).
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"

using namespace ringlb;
using namespace std::chrono_literals;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;

namespace {

std::string rule(const std::string& id, const std::string& listen, const std::string& extra = "") {
    return "[[rule]]\nid = \"" + id + "\"\nlisten = [" + listen + "]\nservers = [\"127.0.0.1:9001\"]\n" + extra;
}

std::vector<config::ConfigIssue> warnings_of(const std::string& text) {
    return config::parse_config(text, "test.toml").warnings;
}

bool has_warning(const std::vector<config::ConfigIssue>& warnings, const std::string& key, const std::string& part) {
    for (const auto& warning : warnings)
        if (warning.key == key && warning.message.find(part) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("--check: an unknown key names the nearest known one when it looks like a typo") {
    const auto issues = issues_of(rule("web", "\"127.0.0.1:80\"",
                                       "conect_timeout = \"1s\"\n"  // 5
                                       "Timeout = \"1s\"\n"         // 6
                                       "max-clients = 3\n"          // 7
                                       "colour = \"red\"\n")        // 8
                                  + "[global]\nmax_sesions = 5\n"   // 9, 10
                                  + "[metrcs]\n");                  // 11
    CHECK_MESSAGE(has_issue(issues, "rule[0].conect_timeout", 5, "unknown key; did you mean connect_timeout? (expected one of:"),
                  dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].Timeout", 6, "did you mean timeout?"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].max-clients", 7, "did you mean max_clients?"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].colour", 8, "unknown key (expected one of:"), dump(issues));  // no guess
    CHECK_MESSAGE(has_issue(issues, "global.max_sesions", 10, "did you mean max_sessions?"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "metrcs", 11, "unknown top-level key; did you mean [metrics]?"), dump(issues));
    const auto rules = issues_of("[[rules]]\nid = \"x\"\n");
    CHECK_MESSAGE(has_issue(rules, "rules", 1, "did you mean [[rule]]?"), dump(rules));
}

TEST_CASE("--check: a host name where an address belongs points at the dns form") {
    const auto issues = issues_of("[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1:80\"]\n"
                                  "servers = [\"backend.example:9000\", { address = \"db.internal:5432\", weight = 2 }]\n");
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0]", 4,
                            "bad address \"backend.example:9000\": a host name needs the dns form, \"dns:backend.example:9000\""),
                  dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[1].address", 4, "a host name needs the dns form, dns = \"db.internal:5432\""),
                  dump(issues));
    // Listen addresses cannot be names at all: no dns hint there.
    const auto listen = issues_of(rule("web", "\"localhost:80\""));
    CHECK_MESSAGE(has_issue(listen, "rule[0].listen[0]", 3, "hostnames are not supported"), dump(listen));
}

TEST_CASE("--check: [rule.health] above every [[rule]] gets a hint, with or without a [[rule]] after it") {
    const std::string health = "[rule.health]\ninterval = \"2s\"\n\n";
    for (const std::string& text : {health + rule("web", "\"127.0.0.1:80\""), health, "[ rule . health ]\n" + rule("web", "\"127.0.0.1:80\"")}) {
        CAPTURE(text);
        const auto issues = issues_of(text);
        CHECK_MESSAGE(has_issue(issues, "rule.health", 1, "[rule.health] comes before any [[rule]]: it belongs after the [[rule]]"),
                      dump(issues));
    }
    // Written where it belongs, it is no problem.
    CHECK(config::parse_config(rule("web", "\"127.0.0.1:80\"") + health, "test.toml").rules[0].health.enabled);
}

TEST_CASE("warning: a rule that can never match, because an earlier rule on its listeners takes every client") {
    const auto shadowed = warnings_of(rule("all", "\"127.0.0.1:80\"") + rule("later", "\"127.0.0.1:80\""));
    REQUIRE(shadowed.size() == 1);
    CHECK(shadowed[0].key == "rule[1]");
    CHECK(shadowed[0].line == 5);
    CHECK(shadowed[0].message.find("rule \"later\" can never match: rule \"all\" (rule[0]) comes first on 127.0.0.1:80 "
                                   "and takes every client") != std::string::npos);
    // "*" and "*:*" take everyone too; every listen address of the later rule must be covered.
    CHECK(has_warning(warnings_of(rule("a", "\"127.0.0.1:80\"", "clients = [\"*:*\"]\n") +
                                  rule("b", "\"127.0.0.1:80\"", "clients = [\"10.0.0.0/8\"]\n")),
                      "rule[1]", "can never match"));
    CHECK(has_warning(warnings_of(rule("a", "\"127.0.0.1:80\", \"127.0.0.1:81\"") + rule("b", "\"127.0.0.1:81\", \"127.0.0.1:80\"")),
                      "rule[1]", "(and on every other listen address of this rule)"));
    // No warning: the earlier rule restricts its clients, denies some, or covers only one listener.
    CHECK(warnings_of(rule("a", "\"127.0.0.1:80\"", "clients = [\"10.0.0.0/8\"]\n") + rule("b", "\"127.0.0.1:80\"")).empty());
    CHECK(warnings_of(rule("a", "\"127.0.0.1:80\"", "deny = [\"10.0.0.0/8\"]\n") + rule("b", "\"127.0.0.1:80\"")).empty());
    CHECK(warnings_of(rule("a", "\"127.0.0.1:80\"") + rule("b", "\"127.0.0.1:80\", \"127.0.0.1:81\"")).empty());
    CHECK(warnings_of(rule("a", "\"127.0.0.1:80\"") + rule("b", "\"127.0.0.1:81\"")).empty());
    CHECK(warnings_of(rule("a", "\"127.0.0.1:80\"", "clients = [\"*:80\"]\n") + rule("b", "\"127.0.0.1:80\"")).empty());
}

TEST_CASE("warning: a server listed twice in one rule, and a rule whose servers all have weight 0") {
    const auto twice = warnings_of(
        "[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1:80\"]\n"
        "servers = [\"127.0.0.1:9001\", { address = \"127.0.0.1:9002\" }, { address = \"127.0.0.1:9001\", weight = 5 },\n"
        "           \"dns:b.example:80\", { dns = \"b.example:80\", weight = 2 }]\n");
    CHECK_MESSAGE(has_warning(twice, "rule[0].servers[2]",
                              "duplicate server 127.0.0.1:9001 (also rule[0].servers[0]): the rule uses it once, with "
                              "the first entry's settings"),
                  dump(twice));
    CHECK_MESSAGE(has_warning(twice, "rule[0].servers[4]", "duplicate server dns:b.example:80 (also rule[0].servers[3])"),
                  dump(twice));
    CHECK(twice.size() == 2);

    const auto idle = warnings_of("[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1:80\"]\n"
                                  "servers = [{ address = \"127.0.0.1:9001\", weight = 0 }, { address = \"127.0.0.1:9002\", weight = 0 }]\n");
    REQUIRE(idle.size() == 1);
    CHECK(idle[0].key == "rule[0].servers");
    CHECK(idle[0].line == 4);
    CHECK(idle[0].message.find("every server has weight 0") != std::string::npos);
    CHECK(warnings_of("[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1:80\"]\n"
                      "servers = [{ address = \"127.0.0.1:9001\", weight = 0 }, \"127.0.0.1:9002\"]\n")
              .empty());
}

TEST_CASE("warnings leave the config valid and are written to_string like issues") {
    const config::Config config = config::parse_config(rule("a", "\"127.0.0.1:80\"") + rule("b", "\"127.0.0.1:80\""), "x.toml");
    REQUIRE(config.warnings.size() == 1);
    CHECK(config.warnings[0].to_string().rfind("x.toml:5:1: rule[1]: rule \"b\" can never match", 0) == 0);
    CHECK(config.rules.size() == 2);
}

TEST_CASE("timeout = \"0\" means no idle timeout; connect_timeout must stay above 0") {
    const config::Config zero = config::parse_config(rule("web", "\"127.0.0.1:80\"", "timeout = \"0\"\n"), "t.toml");
    CHECK(zero.rules[0].timeout == 0ms);
    CHECK(config::parse_config(rule("web", "\"127.0.0.1:80\"", "timeout = 0\n"), "t.toml").rules[0].timeout == 0ms);
    // Written back and read again unchanged.
    CHECK(config::parse_config(config::to_toml(zero), "again.toml").rules[0].timeout == 0ms);
    const auto issues = issues_of(rule("web", "\"127.0.0.1:80\"", "connect_timeout = \"0\"\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].connect_timeout", 5, "greater than 0"), dump(issues));
}

TEST_CASE("rules compare equal exactly when their TOML texts are equal") {
    const std::string base = "[[rule]]\nid = \"web\"\nmode = \"lc\"\nlisten = [\"127.0.0.1:80\", \"[::1]:80\"]\n"
                             "clients = [\"10.0.0.0/8\", \"192.168.1.*:*\"]\ndeny = [\"10.0.0.7\"]\nmax_clients = 5\n"
                             "timeout = \"90s\"\nsend_proxy = \"v2\"\n"
                             "servers = [{ address = \"127.0.0.1:9001\", weight = 3, backup = true, max_connections = 9 },"
                             " { dns = \"b.example:80\", resolve_interval = \"7s\" }]\n"
                             "[rule.health]\ninterval = \"3s\"\nsend = \"PING\\r\\n\"\nexpect = \"+PONG\"\n";
    const config::RuleConfig a = config::parse_config(base, "a").rules[0];
    CHECK(a == config::parse_config(config::to_toml(config::parse_config(base, "a")), "b").rules[0]);
    // One change at a time: each makes both the value and the text differ.
    const std::pair<std::string, std::string> changes[] = {
        {"mode = \"lc\"", "mode = \"rr\""},           {"[::1]:80", "[::1]:81"},
        {"10.0.0.0/8", "10.0.0.0/9"},                 {"deny = [\"10.0.0.7\"]", "deny = [\"10.0.0.8\"]"},
        {"max_clients = 5", "max_clients = 6"},       {"timeout = \"90s\"", "timeout = \"91s\""},
        {"send_proxy = \"v2\"", "send_proxy = \"v1\""}, {"weight = 3", "weight = 4"},
        {"backup = true", "backup = false"},          {"max_connections = 9", "max_connections = 8"},
        {"resolve_interval = \"7s\"", "resolve_interval = \"8s\""}, {"b.example:80", "b.example:81"},
        {"interval = \"3s\"", "interval = \"4s\""},   {"PING", "PONG"},
        {"+PONG", "+PING"},
    };
    for (const auto& [from, to] : changes) {
        CAPTURE(to);
        std::string text = base;
        REQUIRE(text.find(from) != std::string::npos);
        text.replace(text.find(from), from.size(), to);
        const config::RuleConfig b = config::parse_config(text, "b").rules[0];
        CHECK_FALSE(a == b);
        CHECK(config::rule_to_toml(a) != config::rule_to_toml(b));
    }
}
