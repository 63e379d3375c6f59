// DNS server entries in the config: { dns = "name:port", resolve_interval = ... } and
// "dns:name:port", [global] resolvers, their checks and their TOML round trip; and the expansion
// of dns entries into plain servers (dns/expand.hpp).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/dns/expand.hpp"

using namespace std::chrono_literals;
using namespace ringlb;
using namespace ringlb::config;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;

namespace {

const char* const kRuleHead = "[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\n";  // lines 1-3

// A config whose only rule has `servers_line` (line 4).
std::string with_servers(const std::string& servers_line) { return kRuleHead + servers_line + "\n"; }

net::SocketAddress address(const char* text) { return *net::SocketAddress::parse(text); }

}  // namespace

TEST_CASE("dns entries: the table form takes the entry's settings and an interval") {
    const Config config = parse_config(
        with_servers("servers = [{ dns = \"backend.example:9000\", resolve_interval = \"2s\", weight = 3, "
                     "backup = true, max_connections = 7 }]"),
        "test.toml");
    const ServerConfig& server = config.rules.at(0).servers.at(0);
    CHECK(server.is_dns());
    CHECK(server.dns_name == "backend.example");
    CHECK(server.dns_port == 9000);
    CHECK(server.resolve_interval == 2s);
    CHECK(server.weight == 3);
    CHECK(server.backup);
    CHECK(server.max_connections == 7);
    CHECK(server.dns_endpoint() == "backend.example:9000");
}

TEST_CASE("dns entries: the string form, with the default interval, next to plain servers") {
    const Config config =
        parse_config(with_servers("servers = [\"127.0.0.1:2\", \"dns:db-1.internal.:5432\"]"), "test.toml");
    const auto& servers = config.rules.at(0).servers;
    REQUIRE(servers.size() == 2);
    CHECK_FALSE(servers[0].is_dns());
    CHECK(servers[1].dns_name == "db-1.internal.");
    CHECK(servers[1].dns_port == 5432);
    CHECK(servers[1].resolve_interval == 5s);
    CHECK(servers[1].weight == 1);
}

TEST_CASE("dns entries: bad names, ports and intervals are reported at their key") {
    struct Case {
        const char* servers;
        const char* key;
        const char* part;
    };
    const Case cases[] = {
        {"[\"dns:backend.example\"]", "rule[0].servers[0]", "missing port"},
        {"[\"dns:backend.example:0\"]", "rule[0].servers[0]", "expected 1..65535"},
        {"[\"dns:backend.example:65536\"]", "rule[0].servers[0]", "expected 1..65535"},
        {"[\"dns:backend.example:http\"]", "rule[0].servers[0]", "invalid port"},
        {"[\"dns::9000\"]", "rule[0].servers[0]", "the name is empty"},
        {"[\"dns:bad_name.example:9000\"]", "rule[0].servers[0]", "letters, digits, hyphens"},
        {"[\"dns:-lead.example:9000\"]", "rule[0].servers[0]", "start or end with a hyphen"},
        {"[\"dns:a..b:9000\"]", "rule[0].servers[0]", "1 to 63 characters"},
        {"[\"dns:10.0.0.1:9000\"]", "rule[0].servers[0]", "is an IP address"},
        {"[{ dns = \"x.example:1\", resolve_interval = \"500ms\" }]", "rule[0].servers[0].resolve_interval",
         "at least 1s"},
        {"[{ dns = \"x.example:1\", resolve_interval = \"soon\" }]", "rule[0].servers[0].resolve_interval",
         "invalid duration"},
        {"[{ dns = \"x.example:1\", address = \"127.0.0.1:1\" }]", "rule[0].servers[0].dns", "exclude each other"},
        {"[{ address = \"127.0.0.1:1\", resolve_interval = \"5s\" }]", "rule[0].servers[0].resolve_interval",
         "dns entries only"},
        {"[{ weight = 2 }]", "rule[0].servers[0].address", "missing required key address (or dns"},
        {"[{ dns = 9000 }]", "rule[0].servers[0].dns", "expected a string"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.servers);
        const auto issues = issues_of(with_servers(std::string("servers = ") + c.servers));
        INFO(dump(issues));
        CHECK(has_issue(issues, c.key, 4, c.part));
    }
}

TEST_CASE("dns entries: a 63-character label passes, 64 and a 254-character name do not") {
    const std::string label63(63, 'a');
    CHECK_NOTHROW(parse_config(with_servers("servers = [\"dns:" + label63 + ".example:1\"]"), "t"));
    CHECK_THROWS_AS(parse_config(with_servers("servers = [\"dns:" + label63 + "a.example:1\"]"), "t"), ConfigError);
    std::string long_name;
    while (long_name.size() < 254) long_name += "abcdefghi.";
    long_name.resize(254);
    const auto issues = issues_of(with_servers("servers = [\"dns:" + long_name + ":1\"]"));
    CHECK(has_issue(issues, "rule[0].servers[0]", 4, "longer than 253"));
}

TEST_CASE("[global] resolvers: addresses with ports; bad ones are reported") {
    const Config config = parse_config(std::string("[global]\nresolvers = [\"127.0.0.1:5353\", \"[::1]:53\"]\n") +
                                           with_servers("servers = [\"127.0.0.1:2\"]"),
                                       "test.toml");
    REQUIRE(config.global.resolvers.size() == 2);
    CHECK(config.global.resolvers[0] == address("127.0.0.1:5353"));
    CHECK(config.global.resolvers[1] == address("[::1]:53"));
    CHECK(parse_config(with_servers("servers = [\"127.0.0.1:2\"]"), "t").global.resolvers.empty());

    auto issues = issues_of("[global]\nresolvers = [\"127.0.0.1\"]\n" + with_servers("servers = [\"127.0.0.1:2\"]"));
    CHECK(has_issue(issues, "global.resolvers[0]", 2, "bad address"));
    issues = issues_of("[global]\nresolvers = [\"127.0.0.1:0\"]\n" + with_servers("servers = [\"127.0.0.1:2\"]"));
    CHECK(has_issue(issues, "global.resolvers[0]", 2, "port must be 1..65535"));
    issues = issues_of("[global]\nresolvers = []\n" + with_servers("servers = [\"127.0.0.1:2\"]"));
    CHECK(has_issue(issues, "global.resolvers", 2, "must not be empty"));
}

TEST_CASE("dns entries and resolvers survive to_toml and parse back equal") {
    const Config config = parse_config(
        std::string("[global]\nresolvers = [\"127.0.0.1:5353\"]\n") +
            with_servers("servers = [\"127.0.0.1:2\", { dns = \"svc.example:80\", resolve_interval = \"1m\", "
                         "weight = 4, backup = true, max_connections = 9 }]"),
        "test.toml");
    const std::string text = to_toml(config);
    CHECK(text.find("resolvers = [\"127.0.0.1:5353\"]") != std::string::npos);
    CHECK(text.find("dns = \"svc.example:80\", resolve_interval = \"60s\"") != std::string::npos);
    const Config again = parse_config(text, "dump");
    CHECK(to_toml(again) == text);
    const ServerConfig& server = again.rules.at(0).servers.at(1);
    CHECK(server.dns_name == "svc.example");
    CHECK(server.resolve_interval == 1min);
    CHECK(server.weight == 4);
    // A changed name or interval changes the rule's text, so a reload gives it a new version.
    RuleConfig changed = again.rules.at(0);
    changed.servers.at(1).resolve_interval = 2min;
    CHECK(rule_to_toml(changed) != rule_to_toml(again.rules.at(0)));
}

TEST_CASE("expand_rule: dns entries become sorted, deduplicated servers in place, with the entry's settings") {
    const Config config = parse_config(
        with_servers("servers = [\"127.0.0.1:2\", { dns = \"svc.example:80\", weight = 4, backup = true }, "
                     "\"dns:missing.example:80\", \"127.0.0.9:9\"]"),
        "test.toml");
    const RuleConfig& written = config.rules.at(0);
    dns::AddressSets resolved;
    resolved[{"svc.example", 80}] = {address("10.0.0.3:80"), address("[2001:db8::1]:80"), address("10.0.0.1:80"),
                                     address("10.0.0.3:80"), address("127.0.0.9:9")};
    std::vector<size_t> origin;
    const RuleConfig expanded = dns::expand_rule(written, resolved, &origin);
    std::vector<std::string> names;
    for (const ServerConfig& server : expanded.servers) names.push_back(server.address.to_string());
    // missing.example has no addresses yet: it adds nothing.
    CHECK(names == std::vector<std::string>{"127.0.0.1:2", "10.0.0.1:80", "10.0.0.3:80", "127.0.0.9:9",
                                            "[2001:db8::1]:80"});
    CHECK(origin == std::vector<size_t>{0, 1, 1, 1, 1});
    CHECK_FALSE(expanded.servers[1].is_dns());
    CHECK(expanded.servers[1].weight == 4);
    CHECK(expanded.servers[1].backup);
    CHECK(expanded.servers[0].weight == 1);
    // The same sets in another order give the same text: an unchanged set changes no rule.
    dns::AddressSets shuffled;
    shuffled[{"svc.example", 80}] = {address("127.0.0.9:9"), address("10.0.0.1:80"), address("[2001:db8::1]:80"),
                                     address("10.0.0.3:80")};
    CHECK(rule_to_toml(dns::expand_rule(written, shuffled)) == rule_to_toml(expanded));
}

TEST_CASE("keep_places: an address keeps its place while it stays; a new one takes the lowest free place") {
    std::vector<net::SocketAddress> places = dns::keep_places({}, {address("10.0.0.3:80"), address("10.0.0.2:80")});
    CHECK(places == std::vector<net::SocketAddress>{address("10.0.0.2:80"), address("10.0.0.3:80")});
    // 10.0.0.2 leaves and 10.0.0.1 (lower) arrives: 10.0.0.3 stays second, 10.0.0.1 takes the first place.
    places = dns::keep_places(places, {address("10.0.0.3:80"), address("10.0.0.1:80"), address("10.0.0.3:80")});
    CHECK(places == std::vector<net::SocketAddress>{address("10.0.0.1:80"), address("10.0.0.3:80")});
    // The first leaves: its place stays free, the second keeps its number.
    places = dns::keep_places(places, {address("10.0.0.3:80")});
    REQUIRE(places.size() == 2);
    CHECK(places[0].family() == 0);
    CHECK(places[1] == address("10.0.0.3:80"));
    // Two arrive: the free place first, then a new one at the end.
    places = dns::keep_places(places, {address("10.0.0.9:80"), address("10.0.0.3:80"), address("10.0.0.8:80")});
    CHECK(places == std::vector<net::SocketAddress>{address("10.0.0.8:80"), address("10.0.0.3:80"), address("10.0.0.9:80")});
    // Nothing left: no places (the free ones at the end are dropped).
    CHECK(dns::keep_places(places, {}).empty());
}

TEST_CASE("expand_rule: a named dns entry's servers are named by their place; an unnamed entry's are sorted") {
    const Config config = parse_config(
        with_servers("servers = [{ dns = \"svc.example:80\", name = \"web\" }, \"dns:other.example:81\"]"), "t");
    dns::AddressSets resolved;
    resolved[{"svc.example", 80}] = {net::SocketAddress{}, address("10.0.0.3:80"), address("10.0.0.1:80")};
    resolved[{"other.example", 81}] = {net::SocketAddress{}, address("10.0.0.7:81"), address("10.0.0.5:81")};
    const RuleConfig expanded = dns::expand_rule(config.rules.at(0), resolved);
    std::vector<std::string> labels;
    for (const ServerConfig& server : expanded.servers) labels.push_back(server.label() + "=" + server.address.to_string());
    CHECK(labels == std::vector<std::string>{"web2=10.0.0.3:80", "web3=10.0.0.1:80", "10.0.0.5:81=10.0.0.5:81",
                                             "10.0.0.7:81=10.0.0.7:81"});
}

TEST_CASE("expand_rule: a rule of dns entries only has no servers until a name resolves") {
    const Config config = parse_config(with_servers("servers = [\"dns:a.example:1\", \"dns:b.example:1\"]"), "t");
    CHECK(dns::expand_rule(config.rules.at(0), {}).servers.empty());
}

TEST_CASE("targets_of: each name once, with the shortest interval asked for") {
    const Config config = parse_config(
        std::string(kRuleHead) +
            "servers = [{ dns = \"a.example:1\", resolve_interval = \"10s\" }, \"dns:b.example:1\"]\n"
            "[[rule]]\nid = \"b\"\nlisten = \"127.0.0.1:3\"\n"
            "servers = [{ dns = \"a.example:1\", resolve_interval = \"3s\" }, \"dns:a.example:2\"]\n",
        "t");
    const auto targets = dns::targets_of(config.rules);
    REQUIRE(targets.size() == 3);
    CHECK(targets[0].endpoint == dns::Endpoint{"a.example", 1});
    CHECK(targets[0].interval == 3s);
    CHECK(targets[1].endpoint == dns::Endpoint{"a.example", 2});
    CHECK(targets[2].endpoint == dns::Endpoint{"b.example", 1});
    CHECK(targets[2].interval == 5s);
}
