// The operations-related config keys ([global] shutdown/logging/user, rule PROXY protocol and
// active health, [admin], [metrics]), parse_rule_inline() and writing a config back as TOML.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/config/toml_guard.hpp"

using namespace std::chrono_literals;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;
using namespace ringlb::config;

namespace {

// A minimal valid rule, lines 1-4 when it starts the text.
const char* const kRule = "[[rule]]\nid = \"r\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n";

Config parse(const std::string& text) { return parse_config(text, "test.toml"); }

// The issues parse_rule_inline reports for `text`; fails the test when it accepts the text.
std::vector<ConfigIssue> inline_issues_of(const std::string& text) {
    try {
        parse_rule_inline(text, "admin");
    } catch (const ConfigError& error) {
        return error.issues();
    }
    FAIL("parse_rule_inline accepted " << text);
    return {};
}

bool has_issue_at(const std::vector<ConfigIssue>& issues, const std::string& key, unsigned line, unsigned column,
                  const std::string& part) {
    for (const auto& issue : issues)
        if (issue.key == key && issue.line == line && issue.column == column &&
            issue.message.find(part) != std::string::npos)
            return true;
    return false;
}

std::vector<std::string> texts_of(const std::vector<ringlb::net::ClientPattern>& patterns) {
    std::vector<std::string> texts;
    for (const auto& pattern : patterns) texts.push_back(pattern.text());
    return texts;
}

}  // namespace

// ---- [global] ----

TEST_CASE("new global keys: defaults") {
    const Config config = parse(kRule);
    CHECK(config.global.shutdown_timeout == 30s);
    CHECK_FALSE(config.global.log_connections);
    CHECK(config.global.log_format == LogFormat::Text);
    CHECK(config.global.log_file.empty());
    CHECK(config.global.user.empty());
    CHECK_FALSE(config.admin.listen.enabled);
    CHECK_FALSE(config.metrics.listen.enabled);
}

TEST_CASE("new global keys: values parse") {
    const Config config = parse(std::string("[global]\nshutdown_timeout = \"1500ms\"\nlog_connections = true\n"
                                            "log_format = \"JSON\"\nlog_file = \"/var/log/ringlb.log\"\n"
                                            "user = \"ringlb\"\n") +
                                kRule);
    CHECK(config.global.shutdown_timeout == 1500ms);
    CHECK(config.global.log_connections);
    CHECK(config.global.log_format == LogFormat::Json);
    CHECK(config.global.log_file == "/var/log/ringlb.log");
    CHECK(config.global.user == "ringlb");

    // 0 means: close every session at once.
    CHECK(parse(std::string("[global]\nshutdown_timeout = 0\n") + kRule).global.shutdown_timeout == 0ms);
    CHECK(parse(std::string("[global]\nshutdown_timeout = \"0s\"\n") + kRule).global.shutdown_timeout == 0ms);
    CHECK(parse(std::string("[global]\nlog_format = \"text\"\n") + kRule).global.log_format == LogFormat::Text);
}

TEST_CASE("new global keys: bad values are reported at their line") {
    const auto issues = issues_of(std::string(
                                      "[global]\n"                      // 1
                                      "shutdown_timeout = \"-1s\"\n"    // 2
                                      "log_connections = \"yes\"\n"     // 3
                                      "log_format = \"xml\"\n"          // 4
                                      "log_file = \"\"\n"               // 5
                                      "user = 0\n"                      // 6
                                      "log_fromat = \"json\"\n") +      // 7
                                  kRule);
    CHECK_MESSAGE(has_issue(issues, "global.shutdown_timeout", 2, "invalid duration \"-1s\""), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.log_connections", 3, "expected a boolean, got string"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.log_format", 4, "unknown log format \"xml\" (supported: text, json)"),
                  dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.log_file", 5, "must not be empty"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.user", 6, "expected a string, got integer"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.log_fromat", 7, "shutdown_timeout, log_connections, log_format"),
                  dump(issues));
    CHECK(issues.size() == 6);

    const auto empty_user = issues_of(std::string("[global]\nuser = \"\"\n") + kRule);
    CHECK_MESSAGE(has_issue(empty_user, "global.user", 2, "must not be empty"), dump(empty_user));
}

// ---- rule keys ----

TEST_CASE("new rule keys: defaults and values") {
    const RuleConfig plain = parse(kRule).rules.at(0);
    CHECK(plain.failback);
    CHECK(plain.send_proxy == ProxyProtocol::Off);
    CHECK_FALSE(plain.accept_proxy);
    CHECK_FALSE(plain.health.enabled);

    const RuleConfig set = parse(std::string(kRule) + "failback = false\nsend_proxy = \"V2\"\naccept_proxy = true\n").rules.at(0);
    CHECK_FALSE(set.failback);
    CHECK(set.send_proxy == ProxyProtocol::V2);
    CHECK(set.accept_proxy);
    CHECK(parse(std::string(kRule) + "send_proxy = \"v1\"\n").rules.at(0).send_proxy == ProxyProtocol::V1);
    CHECK(parse(std::string(kRule) + "send_proxy = \"OFF\"\n").rules.at(0).send_proxy == ProxyProtocol::Off);

    CHECK(to_string(ProxyProtocol::Off) == "off");
    CHECK(to_string(ProxyProtocol::V1) == "v1");
    CHECK(to_string(ProxyProtocol::V2) == "v2");
}

TEST_CASE("new rule keys: bad values are reported at their line") {
    const auto issues = issues_of(std::string(kRule) +
                                  "failback = 1\n"              // 5
                                  "send_proxy = \"v3\"\n"       // 6
                                  "accept_proxy = \"true\"\n"   // 7
                                  "send_prxy = \"v1\"\n");      // 8
    CHECK_MESSAGE(has_issue(issues, "rule[0].failback", 5, "expected a boolean, got integer"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].send_proxy", 6, "\"v3\" (supported: v1, v2, off)"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].accept_proxy", 7, "expected a boolean, got string"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].send_prxy", 8, "failback, send_proxy, zero_copy, accept_proxy, proxy_from, health"), dump(issues));
    CHECK(issues.size() == 4);
}

TEST_CASE("queue, queue_timeout and server_histograms: defaults, values, errors and warnings") {
    const RuleConfig plain = parse(kRule).rules.at(0);
    CHECK(plain.queue == 0);
    CHECK_FALSE(plain.queue_timeout);
    CHECK(queue_timeout(plain) == plain.connect_timeout);
    CHECK_FALSE(plain.server_histograms);
    CHECK(server_histograms_enabled(plain));

    const std::string capped = "[[rule]]\nid = \"r\"\nlisten = \"127.0.0.1:1\"\n"
                               "servers = [{ address = \"127.0.0.1:2\", max_connections = 5 }]\n";
    const Config set = parse(capped + "queue = 100\nqueue_timeout = \"20s\"\nserver_histograms = false\n");
    const RuleConfig& rule = set.rules.at(0);
    CHECK(rule.queue == 100);
    CHECK(queue_timeout(rule) == 20s);
    CHECK_FALSE(server_histograms_enabled(rule));
    CHECK(set.warnings.empty());

    std::string many = "[[rule]]\nid = \"r\"\nlisten = \"127.0.0.1:1\"\nservers = [";
    for (int i = 0; i < 101; ++i) many += "\"127.0.0.1:" + std::to_string(1000 + i) + "\", ";
    many += "]\n";
    CHECK_FALSE(server_histograms_enabled(parse(many).rules.at(0)));  // more than 100 servers: off
    CHECK(server_histograms_enabled(parse(many + "server_histograms = true\n").rules.at(0)));

    const auto issues = issues_of(std::string(kRule) +
                                  "queue = -1\n"                   // 5
                                  "queue_timeout = \"soon\"\n"     // 6
                                  "server_histograms = \"yes\"\n");  // 7
    CHECK_MESSAGE(has_issue(issues, "rule[0].queue", 5, "0"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].queue_timeout", 6, "soon"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].server_histograms", 7, "expected a boolean"), dump(issues));
    CHECK(issues.size() == 3);

    // A queue no server can fill, and a queue_timeout without a queue, are warned about.
    const Config useless = parse(std::string(kRule) + "queue = 5\n");
    REQUIRE(useless.warnings.size() == 1);
    CHECK(useless.warnings[0].to_string().find("rule[0].queue: has no effect: no server of the rule has max_connections") !=
          std::string::npos);
    const Config lonely = parse(std::string(kRule) + "queue_timeout = \"1s\"\n");
    REQUIRE(lonely.warnings.size() == 1);
    CHECK(lonely.warnings[0].to_string().find("has no effect without queue") != std::string::npos);
}

// ---- [rule.health] ----

TEST_CASE("[rule.health]: the table alone enables checks with defaults") {
    const Config config = parse(std::string(kRule) + "[rule.health]\n");
    const HealthCheckConfig& health = config.rules.at(0).health;
    CHECK(health.enabled);
    CHECK(health.interval == 2s);
    CHECK(health.timeout == 1s);
    CHECK(health.rise == 2);
    CHECK(health.fall == 3);
    CHECK(health.send.empty());
    CHECK(health.expect.empty());
}

TEST_CASE("[rule.health]: values parse and belong to the rule above them") {
    const Config config = parse(std::string(kRule) +
                                "[[rule]]\nid = \"checked\"\nlisten = \"127.0.0.1:3\"\nservers = [\"127.0.0.1:4\"]\n"
                                "[rule.health]\ninterval = \"5s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 100\n"
                                "send = \"PING\\r\\n\"\nexpect = \"+PONG\"\n");
    REQUIRE(config.rules.size() == 2);
    CHECK_FALSE(config.rules[0].health.enabled);
    const HealthCheckConfig& health = config.rules[1].health;
    CHECK(health.enabled);
    CHECK(health.interval == 5s);
    CHECK(health.timeout == 500ms);
    CHECK(health.rise == 1);
    CHECK(health.fall == 100);
    CHECK(health.send == "PING\r\n");
    CHECK(health.expect == "+PONG");

    // The inline form is the same table; an empty send is allowed (plain connect check).
    const auto inline_health = parse(std::string(kRule) + "health = { interval = 3, send = \"\" }\n").rules.at(0).health;
    CHECK(inline_health.enabled);
    CHECK(inline_health.interval == 3s);
}

TEST_CASE("[rule.health]: an interval below 1s shortens the default timeout to it") {
    const auto health = parse(std::string(kRule) + "[rule.health]\ninterval = \"500ms\"\n").rules.at(0).health;
    CHECK(health.interval == 500ms);
    CHECK(health.timeout == 500ms);
}

TEST_CASE("[rule.health]: bad values are reported at their line") {
    const auto issues = issues_of(std::string(kRule) +
                                  "[rule.health]\n"        // 5
                                  "interval = 0\n"         // 6
                                  "timeout = \"2x\"\n"     // 7
                                  "rise = 0\n"             // 8
                                  "fall = 101\n"           // 9
                                  "send = 5\n"             // 10
                                  "expct = \"x\"\n");      // 11
    CHECK_MESSAGE(has_issue(issues, "rule[0].health.interval", 6, "greater than 0"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].health.timeout", 7, "invalid duration \"2x\""), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].health.rise", 8, "between 1 and 100"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].health.fall", 9, "between 1 and 100"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].health.send", 10, "expected a string, got integer"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].health.expct",
                            11, "unknown key; did you mean expect? (expected one of: interval, timeout, rise, fall, send, expect)"),
                  dump(issues));
    CHECK(issues.size() == 6);

    const auto slow = issues_of(std::string(kRule) + "[rule.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n");
    CHECK_MESSAGE(has_issue(slow, "rule[0].health.timeout", 7, "must not be longer than interval (2000 ms > 1000 ms)"),
                  dump(slow));
    CHECK(slow.size() == 1);

    const auto not_table = issues_of(std::string(kRule) + "health = true\n");
    CHECK_MESSAGE(has_issue(not_table, "rule[0].health", 5, "expected a table [rule.health], got boolean"),
                  dump(not_table));
}

// ---- accept_proxy across rules ----

TEST_CASE("rules sharing a listener must agree on accept_proxy") {
    const auto issues = issues_of(
        "[[rule]]\n"                                               // 1
        "id = \"a\"\n"                                             // 2
        "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n"      // 3
        "accept_proxy = true\n"                                    // 4
        "servers = [\"127.0.0.1:9001\"]\n"                         // 5
        "[[rule]]\n"                                               // 6
        "id = \"b\"\n"                                             // 7
        "listen = [\"127.0.0.1:8081\"]\n"                          // 8
        "accept_proxy = false\n"                                   // 9
        "servers = [\"127.0.0.1:9002\"]\n"                         // 10
        "[[rule]]\n"                                               // 11
        "id = \"c\"\n"                                             // 12
        "listen = [\"127.0.0.1:8082\", \"127.0.0.1:8080\"]\n"      // 13
        "servers = [\"127.0.0.1:9003\"]\n");                       // 14
    // On the later rule's accept_proxy when it has one, else on the shared listen address.
    CHECK_MESSAGE(has_issue(issues, "rule[1].accept_proxy", 9, "disagrees with rule \"a\" (rule[0])"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[1].accept_proxy", 9, "127.0.0.1:8081"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[2].listen[1]", 13, "disagrees with rule \"a\" (rule[0])"), dump(issues));
    CHECK(issues.size() == 2);

    // Agreeing rules, and different listeners with different settings, are fine.
    const Config fine = parse(
        "[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:8080\"\naccept_proxy = true\nservers = [\"127.0.0.1:1\"]\n"
        "[[rule]]\nid = \"b\"\nlisten = \"127.0.0.1:8080\"\naccept_proxy = true\nservers = [\"127.0.0.1:2\"]\n"
        "[[rule]]\nid = \"c\"\nlisten = \"127.0.0.1:8081\"\nservers = [\"127.0.0.1:3\"]\n");
    CHECK(fine.rules.size() == 3);
}

// ---- proxy_from and max_handshakes ----

TEST_CASE("proxy_from: the peers allowed to send a PROXY header, matched against the peer address") {
    const Config config = parse(
        "[[rule]]\nid = \"lb\"\nlisten = \"127.0.0.1:8080\"\naccept_proxy = true\n"
        "proxy_from = [\"127.0.0.9\", \"10.0.0.0/8\"]\nclients = [\"203.0.113.0/24\"]\nservers = [\"127.0.0.1:9001\"]\n"
        "[[rule]]\nid = \"one\"\nlisten = \"127.0.0.1:8081\"\naccept_proxy = true\nproxy_from = \"::1\"\n"
        "servers = [\"127.0.0.1:9001\"]\n");
    const RuleConfig& lb = config.rules.at(0);
    CHECK(texts_of(lb.proxy_from) == std::vector<std::string>{"127.0.0.9", "10.0.0.0/8"});
    CHECK(lb.proxy_from[0].matches(*ringlb::net::SocketAddress::parse("127.0.0.9:41000")));
    CHECK_FALSE(lb.proxy_from[0].matches(*ringlb::net::SocketAddress::parse("127.0.0.2:41000")));
    CHECK(texts_of(config.rules.at(1).proxy_from) == std::vector<std::string>{"::1"});  // a single string is a list of one
    CHECK(config.warnings.empty());

    // Read the same from an admin `add rule` line, and written back as it was read.
    const RuleConfig inline_rule = parse_rule_inline(
        R"({ id = "x", listen = "127.0.0.1:1", accept_proxy = true, proxy_from = ["127.0.0.9"], servers = ["127.0.0.1:2"] })",
        "admin");
    CHECK(texts_of(inline_rule.proxy_from) == std::vector<std::string>{"127.0.0.9"});
    const std::string written = rule_to_toml(inline_rule);
    CHECK(written.find("proxy_from = [\"127.0.0.9\"]\n") != std::string::npos);
    CHECK(rule_to_toml(parse(written).rules.at(0)) == written);
    // A rule that differs only in proxy_from is a different rule (a reload replaces it).
    CHECK(written != rule_to_toml(parse_rule_inline(
                         R"({ id = "x", listen = "127.0.0.1:1", accept_proxy = true, servers = ["127.0.0.1:2"] })", "admin")));
}

TEST_CASE("proxy_from: bad patterns, without accept_proxy, and disagreeing rules on one listener are errors") {
    const auto bad = issues_of(std::string(kRule) + "accept_proxy = true\nproxy_from = [\"10.0.0.0/40\", 5]\n");
    CHECK_MESSAGE(has_issue(bad, "rule[0].proxy_from[0]", 6, ""), dump(bad));
    CHECK_MESSAGE(has_issue(bad, "rule[0].proxy_from[1]", 6, "expected a string"), dump(bad));
    CHECK(bad.size() == 2);
    const auto empty = issues_of(std::string(kRule) + "accept_proxy = true\nproxy_from = []\n");
    CHECK_MESSAGE(has_issue(empty, "rule[0].proxy_from", 6, "must not be empty"), dump(empty));

    const auto without = issues_of(std::string(kRule) + "proxy_from = [\"127.0.0.9\"]\n");
    CHECK_MESSAGE(has_issue(without, "rule[0].proxy_from", 5, "applies only with accept_proxy = true"), dump(without));
    CHECK(without.size() == 1);
    const auto inline_without = inline_issues_of(
        R"({ id = "x", listen = "127.0.0.1:1", proxy_from = ["127.0.0.9"], servers = ["127.0.0.1:2"] })");
    CHECK_MESSAGE(has_issue(inline_without, "rule.proxy_from", 1, "applies only with accept_proxy = true"),
                  dump(inline_without));

    const auto issues = issues_of(
        "[[rule]]\n"                                                 // 1
        "id = \"a\"\n"                                               // 2
        "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n"        // 3
        "accept_proxy = true\n"                                      // 4
        "proxy_from = [\"127.0.0.9\", \"10.0.0.1\"]\n"               // 5
        "servers = [\"127.0.0.1:9001\"]\n"                           // 6
        "[[rule]]\n"                                                 // 7
        "id = \"b\"\n"                                               // 8
        "listen = [\"127.0.0.1:8081\"]\n"                            // 9
        "accept_proxy = true\n"                                      // 10
        "proxy_from = [\"127.0.0.9\"]\n"                             // 11
        "servers = [\"127.0.0.1:9002\"]\n"                           // 12
        "[[rule]]\n"                                                 // 13
        "id = \"c\"\n"                                               // 14
        "listen = [\"127.0.0.1:8082\", \"127.0.0.1:8080\"]\n"        // 15
        "accept_proxy = true\n"                                      // 16
        "servers = [\"127.0.0.1:9003\"]\n"                           // 17
        "[[rule]]\n"                                                 // 18
        "id = \"d\"\n"                                               // 19
        "listen = [\"127.0.0.1:8080\"]\n"                            // 20
        "accept_proxy = true\n"                                      // 21
        "proxy_from = [\"10.0.0.1\", \"127.0.0.9\"]\n"               // 22: the same peers in another order
        "servers = [\"127.0.0.1:9004\"]\n");                         // 23
    // On the later rule's proxy_from when it has one, else on the shared listen address.
    CHECK_MESSAGE(has_issue(issues, "rule[1].proxy_from", 11, "disagrees with rule \"a\" (rule[0])"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[1].proxy_from", 11, "127.0.0.1:8081 with proxy_from = [\"127.0.0.9\", \"10.0.0.1\"]"),
                  dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[2].listen[1]", 15, "proxy_from = none (any peer) disagrees with rule \"a\""),
                  dump(issues));
    CHECK(issues.size() == 2);
}

TEST_CASE("accept_proxy without proxy_from is accepted with a warning naming the rule and its listeners") {
    const Config config = parse(
        "[[rule]]\nid = \"open\"\nlisten = [\"127.0.0.1:8080\", \"[::1]:8080\"]\naccept_proxy = true\n"
        "servers = [\"127.0.0.1:9001\"]\n"
        "[[rule]]\nid = \"plain\"\nlisten = \"127.0.0.1:8081\"\nservers = [\"127.0.0.1:9001\"]\n");
    const std::vector<ConfigIssue>& found = config.warnings;
    REQUIRE(found.size() == 1);
    CHECK(found[0].message.find("rule \"open\": accept_proxy = true without proxy_from") == 0);
    CHECK(found[0].message.find("127.0.0.1:8080, [::1]:8080") != std::string::npos);
    CHECK(parse(kRule).warnings.empty());
}

TEST_CASE("max_handshakes: explicit, or a quarter of max_sessions with a floor, never above max_sessions") {
    const auto global_of = [](const std::string& lines) { return parse("[global]\n" + lines + std::string(kRule)).global; };
    CHECK(global_of("").max_handshakes == 0);
    CHECK(handshake_limit(global_of("")) == 25000);  // max_sessions 100000
    CHECK(handshake_limit(global_of("max_sessions = 20\n")) == 8);  // a quarter is 5: the floor
    CHECK(handshake_limit(global_of("max_sessions = 40\n")) == 10);
    CHECK(handshake_limit(global_of("max_sessions = 5\n")) == 5);  // the floor, never above max_sessions
    CHECK(handshake_limit(global_of("max_sessions = 1\n")) == 1);
    CHECK(handshake_limit(global_of("max_sessions = 20\nmax_handshakes = 6\n")) == 6);
    CHECK(handshake_limit(global_of("max_sessions = 20\nmax_handshakes = 50\n")) == 20);

    const auto zero = issues_of("[global]\nmax_handshakes = 0\n" + std::string(kRule));
    CHECK_MESSAGE(has_issue(zero, "global.max_handshakes", 2, "between 1 and 10000000"), dump(zero));
    const auto text = issues_of("[global]\nmax_handshakes = \"5\"\n" + std::string(kRule));
    CHECK_MESSAGE(has_issue(text, "global.max_handshakes", 2, "expected an integer"), dump(text));
    const auto typo = issues_of("[global]\nmax_handshake = 5\n" + std::string(kRule));
    CHECK_MESSAGE(has_issue(typo, "global.max_handshake", 2, "max_sessions_per_ip, max_handshakes, buffer_size"), dump(typo));
}

// ---- [admin] and [metrics] ----

TEST_CASE("[admin] and [metrics]: values and defaults") {
    const Config config = parse(std::string(kRule) +
                                "[admin]\nlisten = \"127.0.0.1:9900\"\n"
                                "[metrics]\nlisten = \"[::1]:9100\"\nallow = [\"*\"]\n");
    CHECK(config.admin.listen.enabled);
    CHECK(config.admin.listen.unix_path.empty());
    CHECK(config.admin.listen.to_string() == "127.0.0.1:9900");
    CHECK(texts_of(config.admin.allow) == std::vector<std::string>{"127.0.0.0/8", "::1"});
    CHECK(config.admin.token.empty());
    CHECK_FALSE(config.admin.insecure);
    CHECK(config.metrics.listen.enabled);
    CHECK(config.metrics.listen.address.to_string() == "[::1]:9100");
    CHECK(texts_of(config.metrics.allow) == std::vector<std::string>{"*"});

    const Config unix_admin = parse(std::string(kRule) +
                                    "[admin]\nlisten = \"unix:/run/ringlb/admin.sock\"\nallow = [\"10.0.0.0/8\"]\n"
                                    "token = \"s3cret-0123456789\"\ninsecure = true\n");
    CHECK(unix_admin.admin.listen.enabled);
    CHECK(unix_admin.admin.listen.unix_path == "/run/ringlb/admin.sock");
    CHECK(unix_admin.admin.listen.to_string() == "unix:/run/ringlb/admin.sock");
    CHECK(texts_of(unix_admin.admin.allow) == std::vector<std::string>{"10.0.0.0/8"});
    CHECK(unix_admin.admin.token == "s3cret-0123456789");
    CHECK(unix_admin.admin.insecure);
    CHECK_FALSE(unix_admin.metrics.listen.enabled);
}

TEST_CASE("[admin]: a non-loopback listener needs a token or insecure = true") {
    const auto exposed = issues_of(std::string(kRule) + "[admin]\nlisten = \"0.0.0.0:9900\"\n");  // 5, 6
    CHECK_MESSAGE(has_issue(exposed, "admin.listen", 6, "0.0.0.0:9900 is not a loopback address and [admin] has no token"),
                  dump(exposed));
    CHECK_MESSAGE(has_issue(exposed, "admin.listen", 6, "set token = "), dump(exposed));
    CHECK_MESSAGE(has_issue(exposed, "admin.listen", 6, "insecure = true"), dump(exposed));
    CHECK(exposed.size() == 1);

    for (const char* address : {"[::]:9900", "192.0.2.1:9900", "[2001:db8::1]:9900"}) {
        CAPTURE(address);
        const auto issues = issues_of(std::string(kRule) + "[admin]\nlisten = \"" + address + "\"\n");
        CHECK_MESSAGE(has_issue(issues, "admin.listen", 6, "not a loopback address"), dump(issues));
    }

    const std::string open_admin = std::string(kRule) + "[admin]\nlisten = \"0.0.0.0:9900\"\n";
    CHECK(parse(open_admin + "token = \"s3cret-0123456789\"\n").admin.token == "s3cret-0123456789");
    CHECK(parse(open_admin + "insecure = true\n").admin.insecure);
    // Loopback anywhere in 127.0.0.0/8, ::1 and unix sockets need neither.
    CHECK(parse(std::string(kRule) + "[admin]\nlisten = \"127.1.2.3:9900\"\n").admin.listen.enabled);
    CHECK(parse(std::string(kRule) + "[admin]\nlisten = \"[::1]:9900\"\n").admin.listen.enabled);
    CHECK(parse(std::string(kRule) + "[admin]\nlisten = \"unix:/tmp/a.sock\"\n").admin.listen.enabled);
    // [metrics] is read-only: no token needed anywhere.
    CHECK(parse(std::string(kRule) + "[metrics]\nlisten = \"0.0.0.0:9100\"\n").metrics.listen.enabled);
}

TEST_CASE("[admin] and [metrics]: bad values are reported at their line") {
    const auto issues = issues_of(std::string(kRule) +
                                  "[admin]\n"                            // 5
                                  "listen = \"unix:run.sock\"\n"         // 6
                                  "allow = [\"10.0.0.0/33\"]\n"          // 7
                                  "token = \"\"\n"                       // 8
                                  "insecure = \"no\"\n"                  // 9
                                  "port = 1\n"                           // 10
                                  "[metrics]\n"                          // 11
                                  "allow = []\n"                         // 12
                                  "token = \"\"\n"                       // 13
                                  "port = 2\n");                        // 14
    CHECK_MESSAGE(has_issue(issues, "admin.listen", 6, "must be absolute"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "admin.allow[0]", 7, "10.0.0.0/33"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "admin.token", 8, "must not be empty"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "admin.insecure", 9, "expected a boolean, got string"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "admin.port", 10, "unknown key (expected one of: listen, allow, token, insecure)"),
                  dump(issues));
    CHECK_MESSAGE(has_issue(issues, "metrics.listen", 11, "missing required key listen"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "metrics.allow", 12, "must not be empty"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "metrics.token", 13, "must not be empty"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "metrics.port", 14, "unknown key (expected one of: listen, allow, token)"),
                  dump(issues));
    CHECK(issues.size() == 9);

    const auto bad_address = issues_of(std::string(kRule) + "[admin]\nlisten = \"localhost:9900\"\n");
    CHECK_MESSAGE(has_issue(bad_address, "admin.listen", 6, "bad address \"localhost:9900\""), dump(bad_address));
    const auto long_path = issues_of(std::string(kRule) + "[metrics]\nlisten = \"unix:/" + std::string(120, 'x') + "\"\n");
    CHECK_MESSAGE(has_issue(long_path, "metrics.listen", 6, "longer than 107 bytes"), dump(long_path));
    const auto not_table = issues_of(std::string("admin = \"127.0.0.1:9900\"\n") + kRule);  // before [[rule]]
    CHECK_MESSAGE(has_issue(not_table, "admin", 1, "expected a table [admin], got string"), dump(not_table));
}

TEST_CASE("[admin] and [metrics] need listeners of their own") {
    const auto on_rule = issues_of(std::string(kRule) +
                                   "[admin]\nlisten = \"127.0.0.1:1\"\n"       // 5, 6
                                   "[metrics]\nlisten = \"127.0.0.1:1\"\n");   // 7, 8
    CHECK_MESSAGE(has_issue(on_rule, "admin.listen", 6, "already a listen address of rule \"r\" (rule[0].listen)"),
                  dump(on_rule));
    CHECK_MESSAGE(has_issue(on_rule, "metrics.listen", 8, "already a listen address of rule \"r\""), dump(on_rule));
    CHECK_MESSAGE(has_issue(on_rule, "metrics.listen", 8, "already the admin listener (admin.listen)"), dump(on_rule));
    CHECK(on_rule.size() == 3);

    const auto same_unix = issues_of(std::string(kRule) +
                                     "[admin]\nlisten = \"unix:/run/x.sock\"\n"
                                     "[metrics]\nlisten = \"unix:/run/x.sock\"\n");
    CHECK_MESSAGE(has_issue(same_unix, "metrics.listen", 8, "already the admin listener"), dump(same_unix));

    const Config apart = parse(std::string(kRule) + "[admin]\nlisten = \"127.0.0.1:9900\"\n"
                                                    "[metrics]\nlisten = \"127.0.0.1:9100\"\n");
    CHECK(apart.admin.listen.address.port() == 9900);
    CHECK(apart.metrics.listen.address.port() == 9100);
}

// ---- parse_rule_inline ----

TEST_CASE("parse_rule_inline reads one rule like a [[rule]] table") {
    const RuleConfig rule =
        parse_rule_inline(R"({id="x", mode="rr", listen=["127.0.0.1:8081"], servers=["127.0.0.1:9001"]})", "admin");
    CHECK(rule.id == "x");
    CHECK(rule.mode == BalanceMode::RoundRobin);
    REQUIRE(rule.listen.size() == 1);
    CHECK(rule.listen[0].to_string() == "127.0.0.1:8081");
    REQUIRE(rule.servers.size() == 1);
    CHECK(rule.servers[0].address.to_string() == "127.0.0.1:9001");
    CHECK(rule.timeout == 300s);  // defaults as in a file

    const RuleConfig rich = parse_rule_inline(
        R"({ id = "h", mode = "ms", listen = "[::1]:80", accept_proxy = true, send_proxy = "v1", )"
        R"(servers = [{ address = "[::1]:81", backup = true }], health = { interval = "1s", send = "PING\r\n" } })",
        "admin");
    CHECK(rich.mode == BalanceMode::MasterStandby);
    CHECK(rich.accept_proxy);
    CHECK(rich.send_proxy == ProxyProtocol::V1);
    CHECK(rich.servers.at(0).backup);
    CHECK(rich.health.enabled);
    CHECK(rich.health.interval == 1s);
    CHECK(rich.health.send == "PING\r\n");
}

TEST_CASE("parse_rule_inline reports problems with the key and the column in the given text") {
    //                 col:  1        10   15
    const auto bad_mode = inline_issues_of(R"({id="x", mode="fastest", listen=["127.0.0.1:8081"], servers=["127.0.0.1:9001"]})");
    CHECK_MESSAGE(has_issue_at(bad_mode, "rule.mode", 1, 15, "unsupported mode \"fastest\""), dump(bad_mode));
    REQUIRE(bad_mode.size() == 1);
    CHECK(bad_mode[0].file == "admin");
    CHECK(bad_mode[0].to_string().rfind("admin:1:15: rule.mode: unsupported mode", 0) == 0);

    const auto unknown = inline_issues_of(R"({id="x", colour="red", listen="127.0.0.1:1", servers=["127.0.0.1:2"]})");
    CHECK_MESSAGE(has_issue_at(unknown, "rule.colour", 1, 10, "unknown key"), dump(unknown));

    const auto incomplete = inline_issues_of(R"({id="x", listen="127.0.0.1:1"})");
    CHECK_MESSAGE(has_issue_at(incomplete, "rule.servers", 1, 1, "servers is required"), dump(incomplete));

    const auto bad_health = inline_issues_of(
        R"({id="x", listen="127.0.0.1:1", servers=["127.0.0.1:2"], health={rise=0}})");
    CHECK_MESSAGE(has_issue(bad_health, "rule.health.rise", 1, "between 1 and 100"), dump(bad_health));

    const auto syntax = inline_issues_of(R"({id="x", listen=)");
    REQUIRE(syntax.size() == 1);
    CHECK(syntax[0].file == "admin");
    CHECK(syntax[0].line == 1);
    CHECK(syntax[0].column >= 1);
    CHECK(syntax[0].column <= 17);

    const auto not_table = inline_issues_of("42");
    CHECK_MESSAGE(has_issue_at(not_table, "rule", 1, 1, "expected an inline table"), dump(not_table));

    const auto trailing = inline_issues_of("{id=\"x\", listen=\"127.0.0.1:1\", servers=[\"127.0.0.1:2\"]}\nextra = 1");
    CHECK_MESSAGE(has_issue(trailing, "extra", 2, "unexpected text after the rule's inline table"), dump(trailing));
}

// ---- writing TOML ----

namespace {

// Every key, with values other than the defaults where that can be told apart.
const char* const kRichConfig = R"([global]
engine = "epoll"
threads = 4
max_sessions = 5000
max_sessions_per_ip = 10
max_handshakes = 300
buffer_size = "16k"
receive_buffers = 512
multishot_recv = false
log_level = "debug"
shutdown_timeout = "1500ms"
log_connections = true
log_format = "json"
log_file = "/var/log/ringlb \"main\"\\x.log"
user = "ringlb"

[[rule]]
id = "web"
mode = "ms"
listen = ["127.0.0.1:8080", "[::1]:8080", "[2001:db8::1]:443"]
clients = ["10.0.0.0/8", "192.168.1.*:*", "2001:db8::/32", "::1"]
deny = ["10.9.9.9", "10.8.*"]
max_clients = 100
max_sessions_per_ip = 5
max_conn_rate_per_ip = 20
timeout = "90s"
connect_timeout = "250ms"
down_time = "2s"
max_down_time = "1m"
slow_start = "30s"
retries = 2
failback = false
send_proxy = "V2"
accept_proxy = true
proxy_from = ["10.0.0.5", "10.1.0.0/16", "2001:db8::/64"]
servers = ["127.0.0.1:9001",
           { address = "[::1]:9002", weight = 3, max_connections = 50 },
           { address = "127.0.0.1:9003", backup = true, weight = 0 }]

[rule.health]
interval = "5s"
timeout = "1500ms"
rise = 1
fall = 5
send = "PING\r\n"
expect = "+PONG\t\"ok\"\\\u0001"

[[rule]]
id = "plain"
mode = "p2c"
listen = "0.0.0.0:9000"
servers = ["10.1.1.1:22"]

[admin]
listen = "unix:/run/ringlb/admin.sock"
token = "t0k\"en-0123456789"
insecure = true

[metrics]
listen = "[::1]:9100"
allow = ["::1", "127.0.0.1"]
)";

}  // namespace

TEST_CASE("to_toml writes a config that reads back to the same config") {
    const Config original = parse_config(kRichConfig, "rich.toml");
    const std::string first = to_toml(original);
    CHECK(first.rfind("# Written by ringlb: the running configuration", 0) == 0);
    const Config reread = parse_config(first, "dump.toml");
    const std::string second = to_toml(reread);
    CHECK_MESSAGE(first == second, "first:\n" << first << "\nsecond:\n" << second);

    const GlobalConfig& global = reread.global;
    CHECK(global.engine == EngineChoice::Epoll);
    CHECK(global.threads == 4);
    CHECK(global.max_sessions == 5000);
    CHECK(global.max_sessions_per_ip == 10);
    CHECK(global.max_handshakes == 300);
    CHECK(global.buffer_size == 16 * 1024);
    CHECK(global.receive_buffers == 512);
    CHECK_FALSE(global.multishot_recv);
    CHECK(global.log_level == ringlb::LogLevel::Debug);
    CHECK(global.shutdown_timeout == 1500ms);
    CHECK(global.log_connections);
    CHECK(global.log_format == LogFormat::Json);
    CHECK(global.log_file == "/var/log/ringlb \"main\"\\x.log");
    CHECK(global.user == "ringlb");

    REQUIRE(reread.rules.size() == 2);
    const RuleConfig& web = reread.rules[0];
    CHECK(web.id == "web");
    CHECK(web.mode == BalanceMode::MasterStandby);
    REQUIRE(web.listen.size() == 3);
    CHECK(web.listen[1].to_string() == "[::1]:8080");
    CHECK(web.listen[2].to_string() == "[2001:db8::1]:443");
    CHECK(texts_of(web.clients) == std::vector<std::string>{"10.0.0.0/8", "192.168.1.*:*", "2001:db8::/32", "::1"});
    CHECK(texts_of(web.deny) == std::vector<std::string>{"10.9.9.9", "10.8.*"});
    CHECK(web.max_clients == 100);
    CHECK(web.max_sessions_per_ip == 5);
    CHECK(web.max_conn_rate_per_ip == 20);
    CHECK(web.timeout == 90s);
    CHECK(web.connect_timeout == 250ms);
    CHECK(web.down_time == 2s);
    CHECK(web.max_down_time == 1min);
    CHECK(web.slow_start == 30s);
    CHECK(web.retries == 2);
    CHECK_FALSE(web.failback);
    CHECK(web.send_proxy == ProxyProtocol::V2);
    CHECK(web.accept_proxy);
    CHECK(texts_of(web.proxy_from) == std::vector<std::string>{"10.0.0.5", "10.1.0.0/16", "2001:db8::/64"});
    REQUIRE(web.servers.size() == 3);
    CHECK(web.servers[0].address.to_string() == "127.0.0.1:9001");
    CHECK(web.servers[0].weight == 1);
    CHECK(web.servers[1].address.to_string() == "[::1]:9002");
    CHECK(web.servers[1].weight == 3);
    CHECK(web.servers[1].max_connections == 50);
    CHECK_FALSE(web.servers[1].backup);
    CHECK(web.servers[2].backup);
    CHECK(web.servers[2].weight == 0);
    CHECK(web.health.enabled);
    CHECK(web.health.interval == 5s);
    CHECK(web.health.timeout == 1500ms);
    CHECK(web.health.rise == 1);
    CHECK(web.health.fall == 5);
    CHECK(web.health.send == "PING\r\n");
    CHECK(web.health.expect == "+PONG\t\"ok\"\\\x01");

    const RuleConfig& plain = reread.rules[1];
    CHECK(plain.mode == BalanceMode::PowerOfTwo);
    CHECK(plain.clients.empty());
    CHECK(plain.deny.empty());
    CHECK(plain.failback);
    CHECK(plain.proxy_from.empty());
    CHECK_FALSE(plain.health.enabled);

    CHECK(reread.admin.listen.unix_path == "/run/ringlb/admin.sock");
    CHECK(reread.admin.token == "t0k\"en-0123456789");
    CHECK(reread.admin.insecure);
    CHECK(texts_of(reread.admin.allow) == std::vector<std::string>{"127.0.0.0/8", "::1"});
    CHECK(reread.metrics.listen.address.to_string() == "[::1]:9100");
    CHECK(texts_of(reread.metrics.allow) == std::vector<std::string>{"::1", "127.0.0.1"});

    // Escapes as TOML writes them, and long mode names.
    CHECK(first.find("send = \"PING\\r\\n\"\n") != std::string::npos);
    CHECK(first.find("expect = \"+PONG\\t\\\"ok\\\"\\\\\\u0001\"\n") != std::string::npos);
    CHECK(first.find("mode = \"master_standby\"\n") != std::string::npos);
    CHECK(first.find("shutdown_timeout = \"1500ms\"\n") != std::string::npos);
    CHECK(first.find("timeout = \"90s\"\n") != std::string::npos);
}

TEST_CASE("to_toml of a minimal config writes every default and reads back") {
    const Config original = parse(kRule);
    const std::string text = to_toml(original);
    for (const char* key : {"engine = \"auto\"", "threads = 1", "max_sessions = 100000", "buffer_size = 65536",
                            "receive_buffers = 2048", "multishot_recv = true", "log_level = \"info\"", "shutdown_timeout = \"30s\"",
                            "log_connections = false", "log_format = \"text\"", "mode = \"round_robin\"",
                            "slow_start = \"0s\"", "failback = true", "send_proxy = \"off\"", "accept_proxy = false"}) {
        CAPTURE(key);
        CHECK(text.find(key) != std::string::npos);
    }
    // Empty values that mean "not set" are left out rather than written as rejected empty strings.
    CHECK(text.find("log_file") == std::string::npos);
    CHECK(text.find("\nclients") == std::string::npos);
    CHECK(text.find("\ndeny") == std::string::npos);
    CHECK(text.find("proxy_from") == std::string::npos);
    CHECK(text.find("max_handshakes") == std::string::npos);  // derived from max_sessions: left to follow it
    CHECK(text.find("[rule.health]") == std::string::npos);
    CHECK(text.find("[admin]") == std::string::npos);
    CHECK(to_toml(parse_config(text, "dump.toml")) == text);
}

TEST_CASE("rule_to_toml is equal for equal rules written differently") {
    const auto rule_text = [](const std::string& body) {
        return rule_to_toml(parse(std::string("[[rule]]\nid = \"r\"\n") + body).rules.at(0));
    };
    const std::string a = rule_text("mode = \"rr\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n");
    const std::string b = rule_text(
        "mode = \"Round_Robin\"\nlisten = [\"127.0.0.1:1\"]\ntimeout = \"5m\"\n"
        "servers = [{ address = \"127.0.0.1:2\", weight = 1 }]\n");
    const std::string c = rule_text("listen = \"127.0.0.1:1\"\nservers = [{ address = \"127.0.0.1:2\", weight = 2 }]\n");
    CHECK(a == b);
    CHECK(a != c);
    CHECK(a.rfind("[[rule]]\n", 0) == 0);
}

TEST_CASE("config: characters the TOML library cannot classify are refused outside strings, allowed inside") {
    using ringlb::config::find_unsafe_character;
    // U+02E4 (bytes CB A4) as a bare key reached undefined behaviour in toml++ 3.3.
    const std::string bare = "[global]\nthreads = 1\n\xCB\xA4 = 2\n";
    const auto found = find_unsafe_character(bare);
    REQUIRE(found);
    CHECK(found->line == 3);
    CHECK(found->column == 1);
    CHECK(found->code_point == 0x2E4);
    try {
        ringlb::config::parse_config(bare, "x.toml");
        FAIL("no error");
    } catch (const ringlb::config::ConfigError& e) {
        CHECK(std::string(e.what()).find("x.toml:3:1") != std::string::npos);
        CHECK(std::string(e.what()).find("U+02E4") != std::string::npos);
    }
    CHECK_THROWS_AS(ringlb::config::parse_rule_inline("{id=\"x\", \xCB\xA4=1}", "admin"), ringlb::config::ConfigError);
    // Inside comments and every kind of string: fine.
    CHECK_FALSE(find_unsafe_character("# caf\xC3\xA9\nid = \"caf\xC3\xA9\"\nb = 'caf\xC3\xA9'\n"
                                      "c = \"\"\"\ncaf\xC3\xA9 \\\" \"\"\"\nd = '''\ncaf\xC3\xA9'''\n"));
    CHECK(find_unsafe_character("a = \"x\" \xC3\xA9\n"));  // after the string closed
}

TEST_CASE("busy_poll_us: 0 (sleep at once) by default, 0 to 100000 accepted, written back, anything else reported") {
    CHECK(parse(kRule).global.busy_poll == std::chrono::microseconds(0));
    const Config config = parse(std::string("[global]\nbusy_poll_us = 50\n") + kRule);
    CHECK(config.global.busy_poll == std::chrono::microseconds(50));
    CHECK(to_toml(config).find("busy_poll_us = 50\n") != std::string::npos);
    CHECK(parse(std::string("[global]\nbusy_poll_us = 100000\n") + kRule).global.busy_poll ==
          std::chrono::microseconds(100000));
    for (const char* bad : {"-1", "100001", "\"50us\"", "true"}) {
        CAPTURE(bad);
        const auto issues = issues_of(std::string("[global]\nbusy_poll_us = ") + bad + "\n" + kRule);
        CHECK_MESSAGE(has_issue(issues, "global.busy_poll_us", 2, ""), dump(issues));
        CHECK(issues.size() == 1);
    }
}
