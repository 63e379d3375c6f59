// Names, addresses, client patterns, tokens and paths: no control characters (a NUL would cut
// them short where they reach C APIs such as inet_pton), messages that show them escaped, and
// tokens long enough to be worth having. Strings meant to carry bytes (a health check's send and
// expect) keep them.
#include <doctest/doctest.h>

#include <string>

#include "config_fixtures.hpp"
#include "ringlb/admin/command.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/net/client_pattern.hpp"
#include "ringlb/net/proxy_protocol.hpp"
#include "ringlb/util/text.hpp"

using namespace ringlb;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;

namespace {

constexpr const char* kRule = "[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1:8080\"]\nservers = [\"127.0.0.1:9001\"]\n";

// A rule with one line replaced or added (line 2..5 of the text).
std::string rule_with(const std::string& line) {
    return "[[rule]]\n" + line + "\n" + (line.starts_with("id") ? "" : "id = \"web\"\n") +
           (line.starts_with("listen") ? "" : "listen = [\"127.0.0.1:8080\"]\n") +
           (line.starts_with("servers") ? "" : "servers = [\"127.0.0.1:9001\"]\n");
}

// A literal's bytes, NULs included.
template <size_t N>
std::string_view bytes(const char (&text)[N]) {
    return std::string_view(text, N - 1);
}

bool message_has(const std::vector<config::ConfigIssue>& issues, const std::string& key, const std::string& part) {
    for (const auto& issue : issues)
        if (issue.key == key && issue.message.find(part) != std::string::npos) return true;
    return false;
}

bool no_raw_control_bytes(const std::vector<config::ConfigIssue>& issues) {
    for (const auto& issue : issues)
        if (has_control_byte(issue.to_string())) return false;
    return true;
}

}  // namespace

TEST_CASE("text helpers: control characters are found and escaped as TOML writes them") {
    CHECK(has_control_byte(bytes("a\0b")));
    CHECK(has_control_byte("a\x1b" "b"));
    CHECK(has_control_byte("\x7f"));
    CHECK_FALSE(has_control_byte("caf\xC3\xA9 \"x\""));
    CHECK(escaped(bytes("a\0b\x1b\x7f\n\t\"\\")) == "a\\u0000b\\u001B\\u007F\\n\\t\\\"\\\\");
    CHECK(control_byte_problem(bytes("1.2.3.4\0x")) == "contains the control character \\u0000 at byte 8");
    CHECK(control_byte_problem("plain").empty());
}

TEST_CASE("a NUL inside a listen address or a client pattern is refused, not cut short") {
    // The cases found by review: both passed --check and were used up to the NUL.
    const auto listen = issues_of("[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1\\u0000junk:8080\"]\n"
                                  "servers = [\"127.0.0.1:9001\"]\n");
    CHECK_MESSAGE(has_issue(listen, "rule[0].listen[0]", 3,
                            "bad address \"127.0.0.1\\u0000junk:8080\": contains the control character \\u0000 at byte 10"),
                  dump(listen));
    const auto clients = issues_of(rule_with("clients = [\"1.2.3.4\\u0000xyz\"]"));
    CHECK_MESSAGE(has_issue(clients, "rule[0].clients[0]", 2,
                            "client pattern '1.2.3.4\\u0000xyz': contains the control character \\u0000 at byte 8"),
                  dump(clients));
    CHECK(no_raw_control_bytes(listen));
    CHECK(no_raw_control_bytes(clients));
}

TEST_CASE("control characters are refused in every name, address, pattern, token and path") {
    struct Case {
        std::string text;
        std::string key;
        std::string part;  // expected in the message
    };
    const Case cases[] = {
        {rule_with("id = \"we\\u0001b\""), "rule[0].id", "invalid rule id \"we\\u0001b\""},
        {rule_with("listen = [\"[::1\\u0000]:80\"]"), "rule[0].listen[0]", "\\u0000"},
        {rule_with("servers = [\"127.0.0.1:9001\\n\"]"), "rule[0].servers[0]", "contains the control character \\n"},
        {rule_with("servers = [{ address = \"127.0.0.1\\u001b:9001\" }]"), "rule[0].servers[0].address", "\\u001B"},
        {rule_with("servers = [\"dns:back\\u0000end.example:9000\"]"), "rule[0].servers[0]",
         "bad dns entry \"back\\u0000end.example:9000\""},
        {rule_with("servers = [{ dns = \"1.2.3.4\\u0000x:53\" }]"), "rule[0].servers[0].dns", "control character \\u0000"},
        {rule_with("deny = [\"10.0.0.0/8\\u007f\"]"), "rule[0].deny[0]", "\\u007F"},
        {std::string(kRule) + "[global]\nlog_file = \"/var/log/ringlb.log\\u0000.txt\"\n", "global.log_file",
         "\"/var/log/ringlb.log\\u0000.txt\" contains the control character \\u0000"},
        {std::string(kRule) + "[global]\nuser = \"nobody\\r\"\n", "global.user", "\\r"},
        {std::string(kRule) + "[global]\nresolvers = [\"127.0.0.1\\u0000:53\"]\n", "global.resolvers[0]", "\\u0000"},
        {std::string(kRule) + "[admin]\nlisten = \"unix:/run/ringlb\\u0000.sock\"\n", "admin.listen",
         "unix socket path \"/run/ringlb\\u0000.sock\" contains the control character"},
        {std::string(kRule) + "[admin]\nlisten = \"127.0.0.1:9900\"\nallow = [\"127.0.0.1\\u0000\"]\n", "admin.allow[0]",
         "\\u0000"},
        {std::string(kRule) + "[admin]\nlisten = \"127.0.0.1:9900\"\ntoken = \"0123456789abcdef\\u0000\"\n",
         "admin.token", "the value contains the control character \\u0000 at byte 17"},
        {std::string(kRule) + "[metrics]\nlisten = \"127.0.0.1:9100\"\ntoken = \"0123456789\\tabcdef\"\n",
         "metrics.token", "control character \\t"},
        {std::string(kRule) + "[global]\n\"engine\\u0000\" = \"uring\"\n", "global.engine\\u0000", "unknown key"},
        {rule_with("mode = \"rr\\u0000\""), "rule[0].mode", "unsupported mode \"rr\\u0000\""},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        const auto issues = issues_of(c.text);
        CHECK_MESSAGE(message_has(issues, c.key, c.part), dump(issues));
        CHECK_MESSAGE(no_raw_control_bytes(issues), dump(issues));
    }
}

TEST_CASE("a token is never echoed in a message") {
    const auto issues =
        issues_of(std::string(kRule) + "[admin]\nlisten = \"127.0.0.1:9900\"\ntoken = \"hunter2-secret\\u0000xyz\"\n");
    CHECK_MESSAGE(message_has(issues, "admin.token", "control character"), dump(issues));
    CHECK(dump(issues).find("hunter2") == std::string::npos);
    const auto short_one = issues_of(std::string(kRule) + "[admin]\nlisten = \"127.0.0.1:9900\"\ntoken = \"hunter2\"\n");
    CHECK(dump(short_one).find("hunter2") == std::string::npos);
}

TEST_CASE("strings that carry bytes keep them: a health check's send and expect") {
    const config::Config config = config::parse_config(
        std::string(kRule) + "[rule.health]\nsend = \"PING\\r\\n\\u0000\"\nexpect = \"+PONG\\r\\n\"\n", "test.toml");
    CHECK(config.rules[0].health.send == std::string("PING\r\n\0", 7));
    CHECK(config.rules[0].health.expect == "+PONG\r\n");
    // Written back escaped, read back the same.
    const config::Config again = config::parse_config(config::to_toml(config), "again.toml");
    CHECK(again.rules[0].health.send == config.rules[0].health.send);
}

TEST_CASE("tokens: at least 16 characters and not only whitespace, for [admin] and [metrics]") {
    for (const char* table : {"admin", "metrics"}) {
        CAPTURE(table);
        const std::string head = std::string(kRule) + "[" + table + "]\nlisten = \"127.0.0.1:9900\"\n";  // lines 5, 6
        const std::string key = std::string(table) + ".token";
        const auto short_token = issues_of(head + "token = \"s3cret\"\n");
        CHECK_MESSAGE(has_issue(short_token, key, 7, "is 6 characters long: use at least 16"), dump(short_token));
        const auto fifteen = issues_of(head + "token = \"0123456789abcde\"\n");
        CHECK_MESSAGE(has_issue(fifteen, key, 7, "is 15 characters long"), dump(fifteen));
        const auto blank = issues_of(head + "token = \"                    \"\n");
        CHECK_MESSAGE(has_issue(blank, key, 7, "is only whitespace"), dump(blank));
        const auto one_space = issues_of(head + "token = \" \"\n");
        CHECK_MESSAGE(has_issue(one_space, key, 7, "is only whitespace"), dump(one_space));
        const config::Config ok = config::parse_config(head + "token = \"0123456789abcdef\"\n", "test.toml");
        CHECK((std::string(table) == "admin" ? ok.admin.token : ok.metrics.token) == "0123456789abcdef");
    }
}

TEST_CASE("rules from the admin port (inline tables) refuse control characters the same way") {
    try {
        config::parse_rule_inline(
            "{ id = \"x\", listen = [\"127.0.0.1\\u0000junk:8081\"], servers = [\"127.0.0.1:9001\"] }", "add rule");
        FAIL("accepted a listen address with a NUL");
    } catch (const config::ConfigError& error) {
        const std::string text = error.what();
        CHECK(text.find("rule.listen[0]: bad address \"127.0.0.1\\u0000junk:8081\"") != std::string::npos);
        CHECK_FALSE(has_control_byte(text));
    }
    CHECK_THROWS_AS(config::parse_rule_inline(
                        "{ id = \"x\\u0000\", listen = [\"127.0.0.1:8081\"], servers = [\"127.0.0.1:9001\"] }", "add rule"),
                    config::ConfigError);
}

TEST_CASE("admin command words: rule ids, server addresses and tokens refuse control characters") {
    const auto error_of = [](std::string_view line) {
        const admin::ParseResult result = admin::parse_command(line);
        const auto* error = std::get_if<admin::CommandError>(&result);
        return error ? error->message : std::string("(accepted)");
    };
    const std::string remove = error_of(bytes("remove rule we\0b"));
    CHECK(remove == "remove rule: rule id \"we\\u0000b\" contains the control character \\u0000 at byte 3");
    CHECK(error_of("show sessions web\x1b[2K").find("contains the control character \\u001B") != std::string::npos);
    CHECK(error_of("clean sessions a\x7f").find("\\u007F") != std::string::npos);
    const std::string server = error_of(bytes("disable server web 127.0.0.1\0:80"));
    CHECK(server.find("bad server address \"127.0.0.1\\u0000:80\": contains the control character \\u0000") !=
          std::string::npos);
    CHECK(error_of(bytes("auth 0123456789\0abcdef")) == "auth: the token contains the control character \\u0000 at byte 11");
    for (const std::string_view line : {bytes("remove rule we\0b"), std::string_view("show sessions web\x1b[2K")})
        CHECK_FALSE(has_control_byte(error_of(line)));
}

TEST_CASE("addresses and client patterns refuse control characters anywhere") {
    for (const std::string_view text : {bytes("1.2.3.4\0:80"), bytes("1.2.3.4:80\0"),
                                        bytes("[::1]\0:80"), std::string_view("\x01" "1.2.3.4:80")}) {
        CAPTURE(escaped(text));
        CHECK_FALSE(net::SocketAddress::parse(text).has_value());
        CHECK(net::SocketAddress::parse_error(text).find("control character") != std::string::npos);
    }
    for (const std::string_view text : {bytes("1.2.3.4\0xyz"), bytes("10.0.0.0/8\0"),
                                        std::string_view("*\n"), std::string_view("192.168.1.*:8\t")}) {
        CAPTURE(escaped(text));
        std::string error;
        CHECK_FALSE(net::ClientPattern::parse(text, &error).has_value());
        CHECK(error.find("control character") != std::string::npos);
        CHECK_FALSE(has_control_byte(error));
    }
}

TEST_CASE("PROXY v1 headers from the network: a control character in an address is invalid") {
    const std::string header("PROXY TCP4 192.0.2.1\0 192.0.2.2 1234 80\r\n", 41);
    const net::proxy::Parsed parsed = net::proxy::parse(std::as_bytes(std::span(header.data(), header.size())));
    CHECK(parsed.status == net::proxy::Parsed::Status::Invalid);
}
