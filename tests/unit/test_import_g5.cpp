#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/config/import_g5.hpp"

using namespace std::chrono_literals;
using ringlb::test::dump;
using ringlb::test::has_issue;
using namespace ringlb::config;

namespace {

// The issues import_g5 reports for `g5`; fails the test when it accepts the text.
std::vector<ConfigIssue> import_issues(const std::string& g5) {
    try {
        const std::string toml = import_g5(g5, "test.conf");
        FAIL("import_g5 accepted a config that should be rejected:\n" << g5 << "\n---\n" << toml);
    } catch (const ConfigError& error) {
        return error.issues();
    }
    return {};
}

// Imports and loads the result, as an operator would: the output must be a valid ringlb config.
Config import_and_load(const std::string& g5) {
    const std::string toml = import_g5(g5, "old/g5.conf");
    INFO("imported TOML:\n" << toml);
    try {
        return parse_config(toml, "import");
    } catch (const ConfigError& error) {
        FAIL("the imported TOML does not load:\n" << error.what() << "\n---\n" << toml);
    }
    return {};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> addresses(const std::vector<ringlb::net::SocketAddress>& list) {
    std::vector<std::string> out;
    for (const auto& address : list) out.push_back(address.to_string());
    return out;
}

std::vector<std::string> server_addresses(const RuleConfig& rule) {
    std::vector<std::string> out;
    for (const auto& server : rule.servers) out.push_back(server.address.to_string());
    return out;
}

std::vector<std::string> pattern_texts(const std::vector<ringlb::net::ClientPattern>& patterns) {
    std::vector<std::string> out;
    for (const auto& pattern : patterns) out.push_back(pattern.text());
    return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("g5 import: every forwarding mode maps to its ringlb code") {
    const Config config = import_and_load(
        "a MS *:* - 0.0.0.0:81 > 10.0.0.1:80 ;\n"
        "b RR *:* - 0.0.0.0:82 > 10.0.0.1:80 ;\n"
        "c lc *:* - 0.0.0.0:83 > 10.0.0.1:80 ;\n"
        "d Rt *:* - 0.0.0.0:84 > 10.0.0.1:80 ;\n"
        "e rd *:* - 0.0.0.0:85 > 10.0.0.1:80 ;\n"
        "f HS *:* - 0.0.0.0:86 > 10.0.0.1:80 ;\n");
    REQUIRE(config.rules.size() == 6);
    CHECK(config.rules[0].mode == BalanceMode::MasterStandby);
    CHECK(config.rules[1].mode == BalanceMode::RoundRobin);
    CHECK(config.rules[2].mode == BalanceMode::LeastConn);
    CHECK(config.rules[3].mode == BalanceMode::ResponseTime);
    CHECK(config.rules[4].mode == BalanceMode::Random);
    CHECK(config.rules[5].mode == BalanceMode::SourceHash);
    CHECK(config.rules[5].id == "f");
}

TEST_CASE("g5 import: listen, servers, client patterns with ports and timeout") {
    const std::string g5 =
        "web RR ( timeout 120 ) 192.168.1.*:* 10.0.?.7 - 0.0.0.0:80 127.0.0.1:8080 > 10.0.2.10:80 10.0.2.11:8080 ;\n";
    const std::string toml = import_g5(g5, "old/g5.conf");
    CHECK(toml.rfind("# ringlb configuration imported from the G5 config old/g5.conf", 0) == 0);
    CHECK(contains(toml, "mode = \"rr\"\n"));
    CHECK(contains(toml, "timeout = \"120s\"\n"));

    const Config config = import_and_load(g5);
    REQUIRE(config.rules.size() == 1);
    const RuleConfig& web = config.rules[0];
    CHECK(web.id == "web");
    CHECK(addresses(web.listen) == Strings{"0.0.0.0:80", "127.0.0.1:8080"});
    CHECK(server_addresses(web) == Strings{"10.0.2.10:80", "10.0.2.11:8080"});
    CHECK(pattern_texts(web.clients) == Strings{"192.168.1.*:*", "10.0.?.7"});
    CHECK(web.timeout == 120s);
    CHECK(web.max_clients == 0);
}

TEST_CASE("g5 import: '*' and '*:*' mean any client, so clients is left out") {
    const std::string toml = import_g5("a RR * - 0.0.0.0:1 > 10.0.0.1:1 ;\nb RR 10.* *:* - 0.0.0.0:2 > 10.0.0.1:2 ;\n", "x");
    CHECK_FALSE(contains(toml, "clients"));
    const Config config = import_and_load("a RR * - 0.0.0.0:1 > 10.0.0.1:1 ;\nb RR 10.* *:* - 0.0.0.0:2 > 10.0.0.1:2 ;\n");
    REQUIRE(config.rules.size() == 2);
    CHECK(config.rules[0].clients.empty());
    CHECK(config.rules[1].clients.empty());
    CHECK(config.rules[0].timeout == 0ms);  // no ( timeout ): never idle-closed, as in G5
}

TEST_CASE("g5 import: global maxsessions_per_ip, comments and liberal whitespace") {
    const Config config = import_and_load(
        "# a G5 config\n"                                    // 1
        "(maxsessions_per_ip 7)\n"                           // 2
        "   # indented comment\n"                            // 3
        "web\tRR\t(timeout 60)  *:*-0.0.0.0:80>10.0.0.1:80;  # trailing comment\n"  // 4
        "db-1 ms ( timeout 5 )\n"                            // 5
        "   10.0.0.*:*   # clients\n"                        // 6
        "   - 0.0.0.0:5432\n"                                // 7
        "   > 10.0.1.10:5432\r\n"                            // 8
        "     10.0.1.11:5432\n"                              // 9
        "   ;\n");                                           // 10
    CHECK(config.global.max_sessions_per_ip == 7);
    REQUIRE(config.rules.size() == 2);
    CHECK(config.rules[0].id == "web");
    CHECK(config.rules[0].timeout == 60s);
    CHECK(server_addresses(config.rules[0]) == Strings{"10.0.0.1:80"});
    CHECK(config.rules[1].id == "db-1");
    CHECK(config.rules[1].mode == BalanceMode::MasterStandby);
    CHECK(config.rules[1].timeout == 5s);
    CHECK(pattern_texts(config.rules[1].clients) == Strings{"10.0.0.*:*"});
    CHECK(server_addresses(config.rules[1]) == Strings{"10.0.1.10:5432", "10.0.1.11:5432"});
}

TEST_CASE("g5 import: maxclients on the only pattern becomes max_clients") {
    const Config config = import_and_load("api LC 192.168.1.*:* ( maxclients 100 ) - 0.0.0.0:9000 > 10.0.3.10:9000 ;\n");
    REQUIRE(config.rules.size() == 1);
    CHECK(config.rules[0].id == "api");
    CHECK(config.rules[0].max_clients == 100);
    CHECK(pattern_texts(config.rules[0].clients) == Strings{"192.168.1.*:*"});
}

TEST_CASE("g5 import: several maxclients split the rule, one per limited pattern, in order") {
    const std::string g5 =
        "api RR 10.1.*(maxclients 5) 10.2.* 10.3.* 10.4.* ( maxclients 9 ) *:* - 0.0.0.0:9000 > 10.0.3.10:9000 ;\n";
    const std::string toml = import_g5(g5, "x");
    CHECK(contains(toml, "# G5 rule 'api' (line 1) is split into 4 rules"));

    const Config config = import_and_load(g5);
    REQUIRE(config.rules.size() == 4);
    CHECK(config.rules[0].id == "api.1");
    CHECK(pattern_texts(config.rules[0].clients) == Strings{"10.1.*"});
    CHECK(config.rules[0].max_clients == 5);
    CHECK(config.rules[1].id == "api.2");
    CHECK(pattern_texts(config.rules[1].clients) == Strings{"10.2.*", "10.3.*"});
    CHECK(config.rules[1].max_clients == 0);
    CHECK(config.rules[2].id == "api.3");
    CHECK(pattern_texts(config.rules[2].clients) == Strings{"10.4.*"});
    CHECK(config.rules[2].max_clients == 9);
    CHECK(config.rules[3].id == "api.4");
    CHECK(config.rules[3].clients.empty());  // *:*
    for (const RuleConfig& part : config.rules) {
        CHECK(addresses(part.listen) == Strings{"0.0.0.0:9000"});
        CHECK(server_addresses(part) == Strings{"10.0.3.10:9000"});
        CHECK(part.mode == BalanceMode::RoundRobin);
    }
}

TEST_CASE("g5 import: maxclients 0 is no limit and does not split") {
    const Config config = import_and_load("a RR 10.1.* (maxclients 0) 10.2.* - 0.0.0.0:1 > 10.0.0.1:1 ;\n");
    REQUIRE(config.rules.size() == 1);
    CHECK(config.rules[0].id == "a");
    CHECK(config.rules[0].max_clients == 0);
}

TEST_CASE("g5 import: a split id that clashes with another rule is an error") {
    const auto issues = import_issues(
        "a RR 10.1.* (maxclients 1) 10.2.* (maxclients 2) - 0.0.0.0:1 > 10.0.0.1:1 ;\n"
        "a.2 RR *:* - 0.0.0.0:2 > 10.0.0.1:1 ;\n");
    CHECK_MESSAGE(has_issue(issues, "a", 1, "new id 'a.2' is already the id of the rule at line 2"), dump(issues));
}

TEST_CASE("g5 import: a G rule on loopback becomes [admin] without insecure") {
    const std::string g5 =
        "admin G 127.0.0.1:* 10.9.9.* - 127.0.0.1:8060 ;\n"
        "web RR *:* - 0.0.0.0:80 > 10.0.0.1:80 ;\n";
    const std::string toml = import_g5(g5, "x");
    CHECK(contains(toml, "[admin]\nlisten = \"127.0.0.1:8060\"\nallow = [\"127.0.0.1:*\", \"10.9.9.*\"]\n"));
    CHECK_FALSE(contains(toml, "insecure"));
    CHECK_FALSE(contains(toml, "id = \"admin\""));

    const Config config = import_and_load(g5);
    REQUIRE(config.rules.size() == 1);
    CHECK(config.admin.listen.enabled);
    CHECK(config.admin.listen.to_string() == "127.0.0.1:8060");
    CHECK(pattern_texts(config.admin.allow) == Strings{"127.0.0.1:*", "10.9.9.*"});
    CHECK_FALSE(config.admin.insecure);
}

TEST_CASE("g5 import: a G rule outside loopback gets insecure = true and a note to set a token") {
    const std::string g5 =
        "admin g *:* - 0.0.0.0:8060 0.0.0.0:8061 > ;\n"  // '>' with no servers is fine for G
        "web RR *:* - 0.0.0.0:80 > 10.0.0.1:80 ;\n";
    const std::string toml = import_g5(g5, "x");
    CHECK(contains(toml, "listen = \"0.0.0.0:8060\"\n"));
    CHECK(contains(toml, "# G5 also listened on [\"0.0.0.0:8061\"]"));
    CHECK(contains(toml, "Set token = "));
    CHECK(contains(toml, "insecure = true\n"));

    const Config config = import_and_load(g5);
    CHECK(config.admin.listen.to_string() == "0.0.0.0:8060");
    CHECK(config.admin.insecure);
    CHECK(config.admin.token.empty());
}

TEST_CASE("g5 import: unknown mode, missing '-' and missing '>' name their line and column") {
    const auto issues = import_issues(
        "a XX *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\n"         // 1
        "b RR *:* 0.0.0.0:2 > 10.0.0.1:1 ;\n"           // 2
        "c RR *:* - 0.0.0.0:3 10.0.0.1:1 ;\n"           // 3
        "d RR *:* - 0.0.0.0:4 > 10.0.0.1:1 ;\n");       // 4: fine
    CHECK_MESSAGE(has_issue(issues, "a", 1, "unknown mode 'XX'"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "b", 2, "missing '-'"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "c", 3, "missing '>'"), dump(issues));
    CHECK(issues.size() == 3);
    CHECK(issues[0].column == 3);
    CHECK(issues[1].column == 20);  // the '>' where the '-' was due
    CHECK(issues[2].column == 33);  // the ';' where the '>' was due
}

TEST_CASE("g5 import: a missing ';' is reported at the end of the file and before the next rule") {
    auto issues = import_issues(
        "a RR *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\n"    // 1
        "b RR *:* - 0.0.0.0:2\n"                  // 2
        "     > 10.0.0.1:1\n");                   // 3
    CHECK_MESSAGE(has_issue(issues, "b", 2, "rule 'b' does not end with ';'"), dump(issues));
    CHECK(issues.size() == 1);

    issues = import_issues(
        "a RR *:* - 0.0.0.0:1 > 10.0.0.1:1\n"      // 1
        "b RR *:* - 0.0.0.0:2 > 10.0.0.1:1 ;\n");  // 2
    CHECK_MESSAGE(has_issue(issues, "a", 2, "missing ';' after rule 'a' (line 1) before rule 'b'"), dump(issues));
    CHECK(issues.size() == 1);
}

TEST_CASE("g5 import: bad addresses and patterns carry the reason") {
    const auto issues = import_issues(
        "a RR 10.0.0.x - 0.0.0.0:99999 > backend:80 10.0.0.1 ;\n");
    CHECK_MESSAGE(has_issue(issues, "a", 1, "bad client pattern '10.0.0.x'"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "a", 1, "bad listen address '0.0.0.0:99999': invalid port"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "a", 1, "bad server address 'backend:80': hostnames are not supported"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "a", 1, "bad server address '10.0.0.1': missing port"), dump(issues));
    CHECK(issues.size() == 4);
}

TEST_CASE("g5 import: G rules take no servers, and there is only one") {
    const auto issues = import_issues(
        "admin G *:* - 127.0.0.1:8060 > 10.0.0.1:1 ;\n"              // 1
        "admin2 G (timeout 5) *:* (maxclients 2) - 127.0.0.1:8061 ;\n"  // 2
        "web RR *:* - 0.0.0.0:80 > 10.0.0.1:80 ;\n");                 // 3
    CHECK_MESSAGE(has_issue(issues, "admin", 1, "a G rule (management port) takes no servers"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "admin2", 2, "a second G rule (the first is at line 1)"), dump(issues));
    CHECK(issues.size() == 2);
}

// G5's own demo.conf, as its author wrote it: timeout and maxclients on the management rule.
TEST_CASE("g5 import: G5's example config imports; the G rule's timeout and maxclients are dropped with a comment") {
    const std::string g5 =
        "admin G ( timeout 300 ) 192.168.1.54:* ( maxclients 2 ) - 192.168.1.54:8060 ;\n"
        "webdog MS ( timeout 120 ) 192.168.1.54:* 192.168.1.79:* - 192.168.1.54:8070 > 192.168.1.79:8071 ;\n"
        "webdog2 RR *.*.*.*:* ( maxclients 1 ) - 192.168.1.54:8080 > 192.168.1.79:8089 192.168.1.79:8090 "
        "192.168.1.79:8091 ;\n"
        "( maxsessions_per_ip 1 )\n";
    const std::string toml = import_g5(g5, "demo.conf");
    CHECK(contains(toml, "# G5's ( timeout 300 ) is dropped: ringlb's admin port closes connections idle for 5 minutes\n"));
    CHECK(contains(toml, "# G5's ( maxclients 2 ) after 192.168.1.54:* is dropped"));
    const Config config = import_and_load(g5);
    CHECK(config.admin.listen.address.to_string() == "192.168.1.54:8060");
    CHECK(pattern_texts(config.admin.allow) == Strings{"192.168.1.54:*"});
    CHECK(config.admin.insecure);  // G5's port had no password
    REQUIRE(config.rules.size() == 2);
    CHECK(config.rules[0].timeout == 120s);
    CHECK(config.rules[1].timeout == 0ms);  // no ( timeout ) in G5: no idle timeout
    CHECK(config.rules[1].max_clients == 1);
    CHECK(config.global.max_sessions_per_ip == 1);
}

TEST_CASE("g5 import: ( timeout 0 ) and no timeout both mean no idle timeout") {
    const std::string toml = import_g5("a RR ( timeout 0 ) *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\nb RR *:* - 0.0.0.0:2 > 10.0.0.1:2 ;\n", "x");
    CHECK(contains(toml, "timeout = \"0\"  # none in G5: sessions are never closed for being idle\n"));
    const Config config = import_and_load("a RR ( timeout 0 ) *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\nb RR *:* - 0.0.0.0:2 > 10.0.0.1:2 ;\n");
    CHECK(config.rules[0].timeout == 0ms);
    CHECK(config.rules[1].timeout == 0ms);
}

TEST_CASE("g5 import: duplicate ids, bad options and numbers, and a file without forwarding rules") {
    auto issues = import_issues(
        "web RR *:* - 0.0.0.0:80 > 10.0.0.1:80 ;\n"                         // 1
        "web RR *:* - 0.0.0.0:81 > 10.0.0.1:80 ;\n"                         // 2
        "x RR ( idle 5 ) *:* - 0.0.0.0:82 > 10.0.0.1:80 ;\n"                // 3
        "y RR ( timeout 2147483648 ) (maxclients 3) *:* - 0.0.0.0:83 > 10.0.0.1:80 ;\n"  // 4
        "( maxsessions_per_ip lots )\n"                                     // 5
        "( maxsessions 5 )\n");                                             // 6
    CHECK_MESSAGE(has_issue(issues, "web", 2, "duplicate rule id 'web' (first defined at line 1)"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "x", 3, "unknown option 'idle'"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "y", 4, "expected a whole number from 0 to 2147483647, found '2147483648'"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "y", 4, "must follow the client pattern"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "maxsessions_per_ip", 5, "expected a whole number"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "maxsessions", 6, "unknown global setting"), dump(issues));
    CHECK(issues.size() == 6);

    issues = import_issues("# nothing but a management port\nadmin G *:* - 127.0.0.1:8060 ;\n");
    CHECK_MESSAGE(has_issue(issues, "", 0, "no forwarding rule"), dump(issues));
}

TEST_CASE("g5 import: every problem of the file is reported, in line order") {
    const auto issues = import_issues(
        "a QQ *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\n"
        "b RR *:* - 0.0.0.0:1 > nowhere ;\n"
        "c RR *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\n"
        "c RR *:* - 0.0.0.0:1 > 10.0.0.1:1 ;\n");
    REQUIRE(issues.size() == 3);
    CHECK(issues[0].line == 1);
    CHECK(issues[1].line == 2);
    CHECK(issues[2].line == 4);
    CHECK(issues[2].file == "test.conf");
}

TEST_CASE("g5 import: the sample config in etc/examples imports and loads") {
    // Found from this file's path, so the test works from any working directory.
    const auto sample = std::filesystem::path(__FILE__).parent_path() / "../../etc/examples/g5-sample.conf";
    std::ifstream in(sample);
    REQUIRE_MESSAGE(in, "cannot open " << sample);
    std::stringstream text;
    text << in.rdbuf();
    const Config config = import_and_load(text.str());
    CHECK(config.global.max_sessions_per_ip == 50);
    CHECK(config.admin.listen.to_string() == "127.0.0.1:8060");
    std::vector<std::string> ids;
    for (const RuleConfig& rule : config.rules) ids.push_back(rule.id);
    CHECK(ids == Strings{"web", "db", "api.1", "api.2", "search", "cache", "shop"});
}
