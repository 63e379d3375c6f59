// Fuzz target: the admin port's line parser (admin/command.hpp) and the inline-table rule
// parser behind `add rule` / `modify rule` (config.hpp parse_rule_inline).
//
// The input is one admin line. When it parses as add/modify rule, its TOML goes to
// parse_rule_inline() as the admin server would pass it; an input starting with '{' goes there
// directly as well, so that the inline-table grammar is fuzzed without the command prefix.
//
// Properties:
// - parse_command() never throws: it returns a Command or a CommandError;
// - a CommandError has a message without any control byte, whatever the line held (the server
//   prints it as one "error: ..." line, which goes to a terminal; a NUL would cut it short);
// - a Command keeps the promises of command.hpp: a server argument is an IP:port that
//   SocketAddress::parse() accepts, a weight is at most kMaxWeight, a duration is positive;
// - parse_rule_inline() returns a rule or throws ConfigError, nothing else; a rule it returns,
//   written with rule_to_toml(), is a [[rule]] that parse_config() reads back to the same text
//   (`show config` after `add rule` shows what was added, and a reload sees no change).
//
// Inputs that would run into a known bug of toml++ 3.3 itself are skipped: see
// reaches_known_toml_bug() in fuzz_common.hpp.
#include <string>
#include <string_view>
#include <variant>

#include "fuzz_common.hpp"
#include "ringlb/admin/command.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/net/address.hpp"

namespace ringlb::fuzz {
namespace admin_target {

void check_error(std::string_view line, const admin::CommandError& error) {
    require(!error.message.empty(), "empty error message for the line \"" + std::string(line) + "\"");
    for (const char c : error.message)
        require(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f,
                "error message with a control byte " + std::to_string(static_cast<unsigned char>(c)));
}

void check_command(std::string_view line, const admin::Command& command) {
    // A server is named by its address or by its name (servers[].name).
    if (!command.server.empty())
        require(net::SocketAddress::parse(command.server).has_value() || config::valid_server_name(command.server),
                "server argument \"" + command.server + "\" is neither an IP:port nor a server name (line \"" +
                    std::string(line) + "\")");
    require(command.weight <= admin::kMaxWeight, "weight " + std::to_string(command.weight) + " above the maximum");
    if (command.duration) require(command.duration->count() > 0, "disable server duration is not positive");
}

bool is_rule_command(const admin::Command& command) {
    return command.kind == admin::CommandKind::AddRule || command.kind == admin::CommandKind::ModifyRule;
}

void check_rule_round_trip(const config::RuleConfig& rule) {
    const std::string written = config::rule_to_toml(rule);
    config::Config reread;
    try {
        reread = config::parse_config(written, "fuzz-rule-dump");
    } catch (const config::ConfigError& error) {
        throw PropertyViolation(std::string("rule_to_toml() output does not parse again:\n") + error.what() +
                                "\n--- rule_to_toml() output:\n" + written);
    }
    require(reread.rules.size() == 1, "rule_to_toml() output holds " + std::to_string(reread.rules.size()) + " rules");
    const std::string rewritten = config::rule_to_toml(reread.rules.front());
    require(rewritten == written,
            "rule_to_toml() text changed over a parse round trip\n--- first:\n" + written + "--- second:\n" + rewritten);
}

void check_inline_rule(std::string_view table) {
    config::RuleConfig rule;
    try {
        rule = config::parse_rule_inline(table, "admin");
    } catch (const config::ConfigError&) {
        return;  // a rejected rule is a correct outcome
    }
    check_rule_round_trip(rule);
}

}  // namespace admin_target

inline void check_admin(std::string_view input) {
    const admin::ParseResult result = admin::parse_command(input);
    if (const auto* error = std::get_if<admin::CommandError>(&result)) {
        admin_target::check_error(input, *error);
    } else {
        const auto& command = std::get<admin::Command>(result);
        admin_target::check_command(input, command);
        if (admin_target::is_rule_command(command)) admin_target::check_inline_rule(command.text);
    }
    if (!input.empty() && input.front() == '{') admin_target::check_inline_rule(input);
}

}  // namespace ringlb::fuzz

RINGLB_FUZZ_ENTRY_SKIPPING(ringlb::fuzz::check_admin, ringlb::fuzz::reaches_known_toml_bug)
