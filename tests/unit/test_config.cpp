#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"

using namespace std::chrono_literals;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;
using namespace ringlb::config;

namespace {

const char* const kFullConfig = R"(# a complete configuration
[global]
engine = "epoll"
threads = 1
max_sessions = 5000
max_sessions_per_ip = 10
buffer_size = "16k"
log_level = "debug"

[[rule]]
id = "web"
mode = "rr"
listen = ["127.0.0.1:8080", "[::1]:8080"]
clients = ["10.0.0.0/8", "192.168.1.*:*", "::1"]
timeout = "90s"
connect_timeout = "250ms"
servers = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }, { address = "[::1]:9003", weight = 0 }]

[[rule]]
id = "shared-listener"
mode = "Round_Robin"
listen = "127.0.0.1:8080"
timeout = 60
connect_timeout = 2
servers = ["10.1.1.1:22"]
)";

// A minimal valid rule to append after a [global] table under test.
const char* const kGoodRule = "\n[[rule]]\nid = \"r\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n";

}  // namespace

TEST_CASE("a complete config parses into typed values") {
    const Config config = parse_config(kFullConfig, "full.toml");
    CHECK(config.source == "full.toml");
    CHECK(config.global.engine == EngineChoice::Epoll);
    CHECK(config.global.threads == 1);
    CHECK(config.global.max_sessions == 5000);
    CHECK(config.global.max_sessions_per_ip == 10);
    CHECK(config.global.buffer_size == 16 * 1024);
    CHECK(config.global.log_level == ringlb::LogLevel::Debug);
    REQUIRE(config.rules.size() == 2);

    const RuleConfig& web = config.rules[0];
    CHECK(web.id == "web");
    CHECK(web.mode == BalanceMode::RoundRobin);
    REQUIRE(web.listen.size() == 2);
    CHECK(web.listen[0].to_string() == "127.0.0.1:8080");
    CHECK(web.listen[1].to_string() == "[::1]:8080");
    REQUIRE(web.clients.size() == 3);
    CHECK(web.clients[1].text() == "192.168.1.*:*");
    CHECK(web.timeout == 90s);
    CHECK(web.connect_timeout == 250ms);
    REQUIRE(web.servers.size() == 3);
    CHECK(web.servers[0].address.to_string() == "127.0.0.1:9001");
    CHECK(web.servers[0].weight == 1);
    CHECK(web.servers[1].weight == 3);
    CHECK(web.servers[2].address.to_string() == "[::1]:9003");
    CHECK(web.servers[2].weight == 0);

    const RuleConfig& shared = config.rules[1];
    CHECK(shared.id == "shared-listener");
    REQUIRE(shared.listen.size() == 1);  // a single string is accepted
    CHECK(shared.clients.empty());       // default: any client
    CHECK(shared.timeout == 60s);        // integer = seconds
    CHECK(shared.connect_timeout == 2s);

    // The listener shared by both rules counts once.
    CHECK(summarize(config) == "ok: 2 rules, 2 listen addresses, 4 servers (full.toml)");
    auto one = config;  // a copy with one of each
    one.rules.resize(1);
    one.rules[0].listen.resize(1);
    one.rules[0].servers.resize(1);
    CHECK(summarize(one) == "ok: 1 rule, 1 listen address, 1 server (full.toml)");
}

TEST_CASE("defaults apply when [global] and optional keys are missing") {
    const Config config = parse_config("[[rule]]\nid = \"a\"\nlisten = [\"0.0.0.0:80\"]\nservers = [\"10.0.0.1:80\"]\n", "min.toml");
    CHECK(config.global.engine == EngineChoice::Auto);
    CHECK(config.global.max_sessions == 100000);
    CHECK(config.global.max_sessions_per_ip == 0);
    CHECK(config.global.buffer_size == 64 * 1024);
    CHECK(config.global.log_level == ringlb::LogLevel::Info);
    CHECK(config.rules.at(0).timeout == 300s);
    CHECK(config.rules.at(0).connect_timeout == 3s);
    CHECK(to_string(EngineChoice::Uring) == "uring");
    CHECK(to_string(EngineChoice::Auto) == "auto");
    CHECK(to_string(BalanceMode::RoundRobin) == "round_robin");
}

TEST_CASE("unknown keys are reported at their line, in every table") {
    const auto issues = issues_of(
        "[global]\n"                                                      // 1
        "engin = \"auto\"\n"                                              // 2
        "[[rule]]\n"                                                      // 3
        "id = \"a\"\n"                                                    // 4
        "listen = \"127.0.0.1:1\"\n"                                      // 5
        "balance = \"rr\"\n"                                              // 6
        "servers = [{ address = \"127.0.0.1:2\", wieght = 2 }]\n"         // 7
        "[extra]\n");                                                     // 8
    CHECK_MESSAGE(has_issue(issues, "global.engin", 2, "unknown key"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].balance", 6, "unknown key"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0].wieght", 7, "unknown key"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "extra", 8, "unknown top-level key (expected [global], [[rule]], [admin] or [metrics])"),
                  dump(issues));
    CHECK(issues.size() == 4);
}

TEST_CASE("wrong types name the expected and the actual type") {
    const auto issues = issues_of(std::string("[global]\nmax_sessions = \"many\"\nlog_level = 3\n") + kGoodRule);
    CHECK_MESSAGE(has_issue(issues, "global.max_sessions", 2, "expected an integer, got string"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.log_level", 3, "expected a string, got integer"), dump(issues));
}

TEST_CASE("bad addresses carry the parse reason and the array index") {
    const auto issues = issues_of(
        "[[rule]]\n"                                                     // 1
        "id = \"a\"\n"                                                   // 2
        "listen = [\"127.0.0.1:80\",\n"                                  // 3
        "          \"::1:80\"]\n"                                        // 4
        "servers = [\"127.0.0.1:2\", \"backend.local:80\"]\n");          // 5
    CHECK_MESSAGE(has_issue(issues, "rule[0].listen[1]", 4, "brackets"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[1]", 5, "a host name needs the dns form, \"dns:backend.local:80\""),
                  dump(issues));
    CHECK(issues.size() == 2);
}

TEST_CASE("duplicate rule ids mention the first definition's line") {
    const std::string rule = "listen = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n";
    const auto issues = issues_of("[[rule]]\nid = \"web\"\n" + rule + "\n[[rule]]\nid = \"web\"\n" + rule);
    // The first id is on line 2; the duplicate on line 7.
    CHECK_MESSAGE(has_issue(issues, "rule[1].id", 7, "first defined at line 2"), dump(issues));
    CHECK(issues.size() == 1);
}

TEST_CASE("a rule without servers, or with an empty list, is an error") {
    const auto missing = issues_of("[global]\n\n[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\n");
    CHECK_MESSAGE(has_issue(missing, "rule[0].servers", 3, "no servers"), dump(missing));

    const auto empty = issues_of("[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\nservers = []\n");
    CHECK_MESSAGE(has_issue(empty, "rule[0].servers", 4, "must not be empty"), dump(empty));
}

TEST_CASE("missing id and listen are reported at the rule's header") {
    const auto issues = issues_of("[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n\n[[rule]]\nservers = [\"127.0.0.1:2\"]\n");
    CHECK_MESSAGE(has_issue(issues, "rule[1].id", 6, "missing"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[1].listen", 6, "missing"), dump(issues));
}

TEST_CASE("bad durations and non-positive timeouts") {
    const auto issues = issues_of(
        "[[rule]]\n"                                    // 1
        "id = \"a\"\n"                                  // 2
        "listen = \"127.0.0.1:1\"\n"                    // 3
        "timeout = \"1.5s\"\n"                          // 4
        "connect_timeout = 0\n"                         // 5
        "servers = [\"127.0.0.1:2\"]\n");               // 6
    CHECK_MESSAGE(has_issue(issues, "rule[0].timeout", 4, "invalid duration \"1.5s\""), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].connect_timeout", 5, "greater than 0"), dump(issues));
}

TEST_CASE("weights outside 0..1000 are rejected") {
    const auto issues = issues_of(
        "[[rule]]\nid = \"a\"\nlisten = \"127.0.0.1:1\"\n"
        "servers = [\n"                                              // 4
        "  { address = \"127.0.0.1:2\", weight = 1001 },\n"          // 5
        "  { address = \"127.0.0.1:3\", weight = -1 },\n"            // 6
        "  { address = \"127.0.0.1:4\", weight = 1.5 },\n"           // 7
        "  { weight = 1 },\n"                                        // 8
        "]\n");
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0].weight", 5, "between 0 and 1000"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[1].weight", 6, "between 0 and 1000"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[2].weight", 7, "expected an integer, got float"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[3].address", 8, "missing"), dump(issues));
}

TEST_CASE("global values out of range") {
    const auto issues = issues_of(std::string(
        "[global]\n"                       // 1
        "engine = \"kqueue\"\n"            // 2
        "threads = -1\n"                   // 3
        "max_sessions = 0\n"               // 4
        "buffer_size = \"128m\"\n"         // 5
        "log_level = \"loud\"\n")          // 6
        + kGoodRule);
    CHECK_MESSAGE(has_issue(issues, "global.engine", 2, "auto, uring, epoll"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.threads", 3, "between 0 and 256"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.max_sessions", 4, "between 1 and 10000000"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.buffer_size", 5, "between 1k and 64m"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "global.log_level", 6, "unknown log level"), dump(issues));
    CHECK(issues.size() == 5);
    CHECK(issues_of(std::string("[global]\nthreads = 300\n") + kGoodRule).at(0).message.find("between 0 and 256") !=
          std::string::npos);
}

TEST_CASE("rule-level value checks: mode, id, clients, duplicate listen") {
    const auto issues = issues_of(
        "[[rule]]\n"                                                         // 1
        "id = \"bad id!\"\n"                                                 // 2
        "mode = \"fastest\"\n"                                               // 3
        "listen = [\"127.0.0.1:80\", \"127.0.0.1:81\", \"127.0.0.1:80\"]\n"  // 4
        "clients = [\"10.0.0.0/40\"]\n"                                      // 5
        "servers = [\"127.0.0.1:2\"]\n");                                    // 6
    CHECK_MESSAGE(has_issue(issues, "rule[0].id", 2, "invalid rule id"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].mode", 3, "unsupported mode \"fastest\""), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].listen[2]", 4, "also rule[0].listen[0]"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].clients[0]", 5, "10.0.0.0/40"), dump(issues));
}

TEST_CASE("a config without rules is an error") {
    const auto issues = issues_of("[global]\nengine = \"auto\"\n");
    REQUIRE(issues.size() == 1);
    CHECK(issues[0].key == "rule");
    CHECK(issues[0].message == "no [[rule]] defined");
}

TEST_CASE("syntax errors report toml++'s position") {
    const auto issues = issues_of("[global]\nengine = \"auto\"\nthreads = = 1\n");
    REQUIRE(issues.size() == 1);
    CHECK(issues[0].line == 3);
    CHECK(issues[0].column > 0);
    CHECK(issues[0].file == "test.toml");
    CHECK(issues[0].to_string().rfind("test.toml:3:", 0) == 0);
}

TEST_CASE("issue text formats and ConfigError joins all issues") {
    CHECK(ConfigIssue{"a.toml", 12, 10, "rule[1].listen[0]", "bad address"}.to_string() ==
          "a.toml:12:10: rule[1].listen[0]: bad address");
    CHECK(ConfigIssue{"a.toml", 0, 0, "", "cannot read: No such file or directory"}.to_string() ==
          "a.toml: cannot read: No such file or directory");
    const ConfigError error({{"x.toml", 1, 1, "a", "one"}, {"x.toml", 2, 3, "b", "two"}});
    CHECK(std::string(error.what()) == "x.toml:1:1: a: one\nx.toml:2:3: b: two");
    CHECK(error.issues().size() == 2);

    // Issues come out in file order even though toml++ iterates keys alphabetically.
    const auto issues = issues_of(std::string("[global]\nzzz = 1\naaa = 2\n") + kGoodRule);
    REQUIRE(issues.size() == 2);
    CHECK(issues[0].key == "global.zzz");
    CHECK(issues[1].key == "global.aaa");
}

TEST_CASE("load_config_file reads a file and reports unreadable ones") {
    char path[] = "/tmp/ringlb-config-test-XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    std::ofstream(path) << kFullConfig;
    const Config config = load_config_file(path);
    CHECK(config.source == path);
    CHECK(config.rules.size() == 2);
    std::remove(path);

    try {
        load_config_file(path);
        FAIL("loading a removed file succeeded");
    } catch (const ConfigError& error) {
        REQUIRE(error.issues().size() == 1);
        CHECK(error.issues()[0].message == "cannot read: No such file or directory");
        CHECK(error.issues()[0].file == path);
    }
    CHECK_THROWS_AS(load_config_file("/tmp"), ConfigError);  // a directory cannot be read either
}

TEST_CASE("receive_buffers takes a power of two from 16 to 32768") {
    CHECK(ringlb::config::parse_config(std::string("[global]\nreceive_buffers = 256\n") + kGoodRule, "t.toml")
              .global.receive_buffers == 256);
    CHECK(ringlb::config::parse_config(kGoodRule, "t.toml").global.receive_buffers == 2048);
    const auto odd = issues_of(std::string("[global]\nreceive_buffers = 100\n") + kGoodRule);
    CHECK_MESSAGE(has_issue(odd, "global.receive_buffers", 2, "power of two"), dump(odd));
    const auto big = issues_of(std::string("[global]\nreceive_buffers = 65536\n") + kGoodRule);
    CHECK_MESSAGE(has_issue(big, "global.receive_buffers", 2, "between 16 and 32768"), dump(big));
}

TEST_CASE("balance modes accept G5 codes in any case and long names") {
    const auto mode_of = [](const std::string& mode) {
        return parse_config("[[rule]]\nid = \"r\"\nmode = \"" + mode +
                                "\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n",
                            "test.toml")
            .rules.at(0)
            .mode;
    };
    CHECK(mode_of("LC") == BalanceMode::LeastConn);
    CHECK(mode_of("least_conn") == BalanceMode::LeastConn);
    CHECK(mode_of("Ms") == BalanceMode::MasterStandby);
    CHECK(mode_of("master_standby") == BalanceMode::MasterStandby);
    CHECK(mode_of("rd") == BalanceMode::Random);
    CHECK(mode_of("RANDOM") == BalanceMode::Random);
    CHECK(mode_of("P2C") == BalanceMode::PowerOfTwo);
    CHECK(mode_of("hs") == BalanceMode::SourceHash);
    CHECK(mode_of("source_hash") == BalanceMode::SourceHash);
    CHECK(mode_of("rt") == BalanceMode::ResponseTime);
    CHECK(mode_of("Response_Time") == BalanceMode::ResponseTime);
    CHECK(mode_of("RR") == BalanceMode::RoundRobin);
    // to_string gives the long name (p2c has no other), and every name reads back as its mode.
    CHECK(to_string(BalanceMode::MasterStandby) == "master_standby");
    CHECK(to_string(BalanceMode::LeastConn) == "least_conn");
    CHECK(to_string(BalanceMode::Random) == "random");
    CHECK(to_string(BalanceMode::PowerOfTwo) == "p2c");
    CHECK(to_string(BalanceMode::SourceHash) == "source_hash");
    CHECK(to_string(BalanceMode::ResponseTime) == "response_time");
    for (const BalanceMode mode : {BalanceMode::RoundRobin, BalanceMode::MasterStandby, BalanceMode::LeastConn,
                                   BalanceMode::Random, BalanceMode::PowerOfTwo, BalanceMode::SourceHash,
                                   BalanceMode::ResponseTime})
        CHECK(mode_of(std::string(to_string(mode))) == mode);
}

TEST_CASE("a bad mode names every supported mode") {
    const auto issues = issues_of("[[rule]]\nid = \"r\"\nmode = \"wrr\"\nlisten = \"127.0.0.1:1\"\nservers = [\"127.0.0.1:2\"]\n");
    REQUIRE(issues.size() == 1);
    CHECK(issues[0].key == "rule[0].mode");
    CHECK(issues[0].line == 3);
    CHECK_MESSAGE(issues[0].message.find("supported: rr, round_robin, ms, master_standby, lc, least_conn, rd, random, "
                                         "p2c, hs, source_hash, rt, response_time") != std::string::npos,
                  dump(issues));
}

TEST_CASE("servers take backup and max_connections") {
    const Config config = parse_config(
        "[[rule]]\nid = \"r\"\nlisten = \"127.0.0.1:1\"\n"
        "servers = [\"127.0.0.1:2\", { address = \"127.0.0.1:3\", backup = true, max_connections = 50 },\n"
        "           { address = \"127.0.0.1:4\", weight = 2, max_connections = 0, backup = false }]\n",
        "test.toml");
    const auto& servers = config.rules.at(0).servers;
    REQUIRE(servers.size() == 3);
    CHECK_FALSE(servers[0].backup);
    CHECK(servers[0].max_connections == 0);
    CHECK(servers[1].backup);
    CHECK(servers[1].max_connections == 50);
    CHECK_FALSE(servers[2].backup);
    CHECK(servers[2].weight == 2);

    const auto issues = issues_of(
        "[[rule]]\n"                                                                      // 1
        "id = \"r\"\n"                                                                    // 2
        "listen = \"127.0.0.1:1\"\n"                                                      // 3
        "servers = [{ address = \"127.0.0.1:2\", backup = 1 },\n"                        // 4
        "           { address = \"127.0.0.1:3\", max_connections = 10000001 },\n"        // 5
        "           { address = \"127.0.0.1:4\", max_conn = 5 }]\n");                    // 6
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[0].backup", 4, "expected a boolean, got integer"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[1].max_connections", 5, "between 0 and 10000000"), dump(issues));
    CHECK_MESSAGE(has_issue(issues, "rule[0].servers[2].max_conn", 6, "address, weight, backup, max_connections"),
                  dump(issues));
    CHECK(issues.size() == 3);
}
