// The admin command grammar: every command and alias, argument checks and their messages.
#include <doctest/doctest.h>

#include <string>
#include <variant>

#include "ringlb/admin/command.hpp"

using namespace std::chrono_literals;
using ringlb::admin::Command;
using ringlb::admin::CommandError;
using ringlb::admin::CommandKind;
using ringlb::admin::parse_command;

namespace {

// Parses a line that must be valid.
Command parsed(const std::string& line) {
    const auto result = parse_command(line);
    const auto* error = std::get_if<CommandError>(&result);
    INFO("line: ", line);
    REQUIRE_MESSAGE(error == nullptr, (error ? error->message : std::string()));
    return std::get<Command>(result);
}

// Parses a line that must be rejected; returns the message.
std::string rejected(const std::string& line) {
    const auto result = parse_command(line);
    INFO("line: ", line);
    REQUIRE(std::holds_alternative<CommandError>(result));
    return std::get<CommandError>(result).message;
}

CommandKind kind_of(const std::string& line) { return parsed(line).kind; }

}  // namespace

TEST_CASE("commands without arguments and their aliases") {
    CHECK(kind_of("help") == CommandKind::Help);
    CHECK(kind_of("?") == CommandKind::Help);
    CHECK(kind_of("version") == CommandKind::Version);
    CHECK(kind_of("ver") == CommandKind::Version);
    CHECK(kind_of("show rules") == CommandKind::ShowRules);
    CHECK(kind_of("list rules") == CommandKind::ShowRules);
    CHECK(kind_of("show stats") == CommandKind::ShowStats);
    CHECK(kind_of("show config") == CommandKind::ShowConfig);
    CHECK(kind_of("write config") == CommandKind::WriteConfig);
    // G5's name for writing the file stays, as a deprecated alias of the command that writes.
    CHECK(kind_of("dump rules") == CommandKind::WriteConfig);
    CHECK(kind_of("reload") == CommandKind::Reload);
    CHECK(kind_of("quit") == CommandKind::Quit);
    CHECK(kind_of("exit") == CommandKind::Quit);
}

TEST_CASE("command words are case-insensitive, arguments keep their case") {
    CHECK(kind_of("HELP") == CommandKind::Help);
    CHECK(kind_of("Show Rules") == CommandKind::ShowRules);
    CHECK(kind_of("LIST Forwards") == CommandKind::ShowSessions);
    const Command command = parsed("REMOVE RULE WebFront");
    CHECK(command.kind == CommandKind::RemoveRule);
    CHECK(command.rule == "WebFront");
    CHECK(parsed("AUTH SeCrEt").text == "SeCrEt");
}

TEST_CASE("words may be separated by several spaces and tabs") {
    const Command command = parsed(" \tset\t weight  web \t127.0.0.1:9001   7 \t");
    CHECK(command.kind == CommandKind::SetWeight);
    CHECK(command.rule == "web");
    CHECK(command.server == "127.0.0.1:9001");
    CHECK(command.weight == 7);
}

TEST_CASE("show sessions takes an optional rule; list forwards is its alias") {
    CHECK(parsed("show sessions").kind == CommandKind::ShowSessions);
    CHECK(parsed("show sessions").rule.empty());
    CHECK(parsed("show sessions web").rule == "web");
    CHECK(parsed("list forwards").kind == CommandKind::ShowSessions);
    CHECK(parsed("list forwards web").rule == "web");
    CHECK(rejected("show sessions web extra") ==
          "show sessions: unexpected argument \"extra\" (usage: show sessions [rule])");
}

TEST_CASE("add and modify rule take the rest of the line verbatim") {
    const std::string table = R"({ id = "web", listen = ["0.0.0.0:80"],  servers = [{ address = "10.0.0.1:80" }] })";
    const Command add = parsed("add rule   " + table);
    CHECK(add.kind == CommandKind::AddRule);
    CHECK(add.text == table);
    const Command modify = parsed("Modify Rule " + table);
    CHECK(modify.kind == CommandKind::ModifyRule);
    CHECK(modify.text == table);
    CHECK(rejected("add rule") == "add rule: missing <inline TOML table> (usage: add rule <inline TOML table>)");
    CHECK(rejected("modify rule  \t") ==
          "modify rule: missing <inline TOML table> (usage: modify rule <inline TOML table>)");
}

TEST_CASE("remove rule needs a rule id; clean sessions takes an optional one, as G5's clean forwards") {
    CHECK(parsed("remove rule web").rule == "web");
    CHECK(parsed("clean sessions web").kind == CommandKind::CleanSessions);
    CHECK(parsed("clean sessions web").rule == "web");
    CHECK(parsed("clean forwards web").kind == CommandKind::CleanSessions);
    CHECK(parsed("clean forwards").kind == CommandKind::CleanSessions);
    CHECK(parsed("clean forwards").rule.empty());
    CHECK(parsed("clean sessions").rule.empty());
    CHECK(rejected("remove rule") == "remove rule: missing <rule> (usage: remove rule <rule>)");
    CHECK(rejected("clean sessions a b") == "clean sessions: unexpected argument \"b\" (usage: clean sessions [rule])");
    CHECK(rejected("remove rule a b") == "remove rule: unexpected argument \"b\" (usage: remove rule <rule>)");
}

TEST_CASE("disable server takes an optional duration") {
    Command command = parsed("disable server web 127.0.0.1:9001");
    CHECK(command.kind == CommandKind::DisableServer);
    CHECK(command.rule == "web");
    CHECK(command.server == "127.0.0.1:9001");
    CHECK_FALSE(command.duration.has_value());
    CHECK(parsed("disable server web 127.0.0.1:9001 30s").duration == 30s);
    CHECK(parsed("disable server web [::1]:9001 5m").duration == 5min);
    CHECK(parsed("disable server web [::1]:9001 250ms").duration == 250ms);
    CHECK(rejected("disable server web 127.0.0.1:9001 5x") ==
          "disable server: bad duration \"5x\" (expected e.g. 30s, 5m, 1h, 250ms)");
    CHECK(rejected("disable server web 127.0.0.1:9001 0s") ==
          "disable server: duration must be greater than 0, got \"0s\"");
    CHECK(rejected("disable server web") ==
          "disable server: missing <server> (usage: disable server <rule> <server> [duration])");
    CHECK(rejected("disable server web 127.0.0.1:9001 30s more")
              .starts_with("disable server: unexpected argument \"more\""));
}

TEST_CASE("enable and drain server take a rule and a server address") {
    Command enable = parsed("enable server web 127.0.0.1:9001");
    CHECK(enable.kind == CommandKind::EnableServer);
    CHECK(enable.server == "127.0.0.1:9001");
    Command drain = parsed("drain server web [2001:db8::1]:443");
    CHECK(drain.kind == CommandKind::DrainServer);
    CHECK(drain.server == "[2001:db8::1]:443");
    CHECK(rejected("enable server web 127.0.0.1:9001 30s").starts_with("enable server: unexpected argument \"30s\""));
    CHECK(rejected("drain server") == "drain server: missing <rule> (usage: drain server <rule> <server>)");
    // A word that starts with a letter may be a server's name; anything else must be an address.
    CHECK(rejected("drain server web 9backend").starts_with("drain server: bad server address \"9backend\": "));
    CHECK(rejected("enable server web 127.0.0.1").starts_with("enable server: bad server address \"127.0.0.1\": "));
}

TEST_CASE("set weight accepts 0..1000 only") {
    CHECK(parsed("set weight web 127.0.0.1:9001 0").weight == 0);
    CHECK(parsed("set weight web 127.0.0.1:9001 1000").weight == 1000);
    CHECK(parsed("set weight web 127.0.0.1:9001 0042").weight == 42);
    CHECK(rejected("set weight web 127.0.0.1:9001 abc") == "set weight: weight must be 0..1000, got \"abc\"");
    for (const char* bad : {"1001", "-1", "+5", "1.5", "99999999999", "10k"}) {
        CAPTURE(bad);
        CHECK(rejected(std::string("set weight web 127.0.0.1:9001 ") + bad) ==
              std::string("set weight: weight must be 0..1000, got \"") + bad + "\"");
    }
    CHECK(rejected("set weight web 127.0.0.1:9001") ==
          "set weight: missing <0..1000> (usage: set weight <rule> <server> <0..1000>)");
}

TEST_CASE("kill session takes an unsigned 64-bit decimal id") {
    CHECK(parsed("kill session 0").session_id == 0);
    CHECK(parsed("kill session 18446744073709551615").session_id == 18446744073709551615ull);
    CHECK(parsed("KILL SESSION 12").kind == CommandKind::KillSession);
    for (const char* bad : {"18446744073709551616", "-1", "0x10", "abc", "1e3"}) {
        CAPTURE(bad);
        CHECK(rejected(std::string("kill session ") + bad) ==
              std::string("kill session: session id must be an unsigned 64-bit decimal number, got \"") + bad + "\"");
    }
    CHECK(rejected("kill session") == "kill session: missing <id> (usage: kill session <id>)");
}

TEST_CASE("auth takes the rest of the line as the token") {
    CHECK(parsed("auth s3cret").kind == CommandKind::Auth);
    CHECK(parsed("auth s3cret").text == "s3cret");
    CHECK(parsed("auth  two words \t").text == "two words");
    CHECK(rejected("auth") == "auth: missing <token> (usage: auth <token>)");
}

TEST_CASE("commands without arguments reject extra words") {
    CHECK(rejected("help me") == "help: unexpected argument \"me\" (usage: help)");
    CHECK(rejected("version 2") == "version: unexpected argument \"2\" (usage: version)");
    CHECK(rejected("show stats now") == "show stats: unexpected argument \"now\" (usage: show stats)");
    CHECK(rejected("quit now") == "quit: unexpected argument \"now\" (usage: quit)");
    CHECK(rejected("reload all") == "reload: unexpected argument \"all\" (usage: reload)");
    CHECK(rejected("show config x") == "show config: unexpected argument \"x\" (usage: show config)");
    CHECK(rejected("dump rules x") == "write config: unexpected argument \"x\" (usage: write config)");
}

TEST_CASE("unknown and incomplete commands say so") {
    CHECK(rejected("foo") == "unknown command \"foo\" (try help)");
    CHECK(rejected("show foo") == "unknown command \"show foo\" (try help)");
    CHECK(rejected("set speed web x 1") == "unknown command \"set speed\" (try help)");
    CHECK(rejected("show") == "\"show\" needs a second word (try help)");
    CHECK(rejected("") == "empty command (try help)");
    CHECK(rejected(" \t ") == "empty command (try help)");
}

TEST_CASE("control bytes of the input are escaped in messages, never passed on") {
    // ESC [2K erases a terminal line, CR returns to its start, NUL ends a C string.
    const std::string line = std::string("bogus\x1b[2K\r2026-01-01T00:00:00.000Z warn FAKE") + '\0' + "tail";
    const std::string message = rejected(line);
    CHECK(message == "unknown command \"bogus\\u001B[2K\\r2026-01-01T00:00:00.000Z\" (try help)");
    CHECK(rejected(std::string("show \x1b\x07") + '\0') == "unknown command \"show \\u001B\\u0007\\u0000\" (try help)");
    for (const char c : message) CHECK(static_cast<unsigned char>(c) >= 0x20);
}

TEST_CASE("long input is shortened in messages") {
    const std::string junk(500, 'x');
    const std::string message = rejected(junk);
    CHECK(message.size() < 100);
    CHECK(message.starts_with("unknown command \"xxxx"));
}

TEST_CASE("help lists every command with a description") {
    const std::string help = ringlb::admin::help_text();
    for (const char* usage :
         {"help", "version", "show rules", "show sessions [rule]", "show stats", "add rule <inline TOML table>",
          "modify rule <inline TOML table>", "remove rule <rule>", "clean sessions [rule]",
          "disable server <rule> <server> [duration]", "enable server <rule> <server>", "drain server <rule> <server>",
          "set weight <rule> <server> <0..1000>", "kill session <id>", "show config", "write config", "reload", "quit",
          "auth <token>"}) {
        CAPTURE(usage);
        const bool listed = ("\n" + help).find("\n" + std::string(usage) + " ") != std::string::npos;
        CHECK(listed);
    }
    CHECK(help.find("(alias: list forwards)") != std::string::npos);
    CHECK(help.find("(alias: dump rules (deprecated))") != std::string::npos);
    // What clean sessions really does: earlier versions of a rule, not its current sessions.
    CHECK(help.find("clean sessions [rule]") != std::string::npos);
    CHECK(help.find("earlier versions") != std::string::npos);
    CHECK(help.find("close every session of a rule") == std::string::npos);
    CHECK(help.back() == '\n');
    // Never a line the client could take for the end of a reply.
    CHECK(help.find("\nok\n") == std::string::npos);
    CHECK(help.find("\nerror:") == std::string::npos);
}
