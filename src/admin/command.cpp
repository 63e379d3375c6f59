#include "ringlb/admin/command.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>
#include <utility>
#include <vector>

#include "ringlb/config/config.hpp"
#include "ringlb/config/units.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::admin {
namespace {

// One entry of the grammar: the canonical name a user types, its arguments as help shows them,
// the other spellings accepted for it and what it does. help_text() prints exactly this table.
struct CommandSpec {
    CommandKind kind;
    std::string_view name;       // "set weight": one or two command words
    std::string_view arguments;  // "<rule> <server> <0..1000>"
    std::string_view aliases;    // "exit", or "list rules" ("" = none)
    std::string_view description;
};

constexpr CommandSpec kCommands[] = {
    {CommandKind::Help, "help", "", "?", "list the commands"},
    {CommandKind::Version, "version", "", "ver", "print the ringlb version"},
    {CommandKind::ShowRules, "show rules", "", "list rules", "rules with their servers, states and weights"},
    {CommandKind::ShowSessions, "show sessions", "[rule]", "list forwards", "active sessions, of one rule or all"},
    {CommandKind::ShowStats, "show stats", "", "", "counters of the whole forwarder"},
    {CommandKind::AddRule, "add rule", "<inline TOML table>", "", "add a rule: add rule { id = \"x\", ... }"},
    {CommandKind::ModifyRule, "modify rule", "<inline TOML table>", "", "replace the rule with the same id"},
    {CommandKind::RemoveRule, "remove rule", "<rule>", "", "remove a rule"},
    {CommandKind::CleanSessions, "clean sessions", "[rule]", "clean forwards",
     "close the sessions still on earlier versions (modified or removed) of a rule, or of every rule"},
    {CommandKind::DisableServer, "disable server", "<rule> <server> [duration]", "",
     "send a server no new sessions; enabled again after the duration (30s, 5m) if given"},
    {CommandKind::EnableServer, "enable server", "<rule> <server>", "", "send a server new sessions again"},
    {CommandKind::DrainServer, "drain server", "<rule> <server>", "", "send a server no new sessions and let its current ones finish"},
    {CommandKind::SetWeight, "set weight", "<rule> <server> <0..1000>", "", "change a server's weight"},
    {CommandKind::KillSession, "kill session", "<id>", "", "close one session (ids from show sessions)"},
    {CommandKind::ShowConfig, "show config", "", "", "print the running configuration as TOML (tokens hidden)"},
    {CommandKind::WriteConfig, "write config", "", "dump rules (deprecated)",
     "replace the configuration file with the running configuration; the last 5 files are kept as FILE.1..FILE.5"},
    {CommandKind::Reload, "reload", "", "", "read the configuration file again"},
    {CommandKind::Quit, "quit", "", "exit", "close this connection"},
    {CommandKind::Auth, "auth", "<token>", "", "authenticate with the [admin] token"},
};

// Spellings accepted besides the canonical names (which are matched from kCommands directly).
// "list sessions" and "show forwards" mix the two vocabularies: accepting them costs nothing.
struct Alias {
    std::string_view spelling;
    CommandKind kind;
};
constexpr Alias kAliases[] = {
    {"?", CommandKind::Help},
    {"ver", CommandKind::Version},
    {"list rules", CommandKind::ShowRules},
    {"list forwards", CommandKind::ShowSessions},
    {"list sessions", CommandKind::ShowSessions},
    {"show forwards", CommandKind::ShowSessions},
    {"clean forwards", CommandKind::CleanSessions},
    // G5's name. It never printed anything: it writes, as it always did.
    {"dump rules", CommandKind::WriteConfig},
    {"exit", CommandKind::Quit},
};

const CommandSpec& spec_of(CommandKind kind) {
    const auto* spec =
        std::find_if(std::begin(kCommands), std::end(kCommands), [&](const CommandSpec& s) { return s.kind == kind; });
    return *spec;  // every kind has an entry: the table is complete by construction
}

std::optional<CommandKind> kind_named(std::string_view spelling) {
    for (const CommandSpec& spec : kCommands)
        if (spec.name == spelling) return spec.kind;
    for (const Alias& alias : kAliases)
        if (alias.spelling == spelling) return alias.kind;
    return std::nullopt;
}

// Whether some two-word command starts with `verb` ("show" for "show rules").
bool is_verb(std::string_view verb) {
    auto starts_two_words = [&](std::string_view spelling) {
        return spelling.size() > verb.size() && spelling.substr(0, verb.size()) == verb && spelling[verb.size()] == ' ';
    };
    return std::any_of(std::begin(kCommands), std::end(kCommands),
                       [&](const CommandSpec& s) { return starts_two_words(s.name); }) ||
           std::any_of(std::begin(kAliases), std::end(kAliases),
                       [&](const Alias& a) { return starts_two_words(a.spelling); });
}

std::string lowercase(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// Echoes user input in messages, shortened so that a pasted blob cannot make a huge error line,
// with control bytes escaped: the message goes back to a terminal and into the log, and a NUL
// would end it early wherever it passes through a C string (an exception's what()).
std::string quoted(std::string_view text) {
    constexpr size_t kMaxEcho = 64;
    const bool shortened = text.size() > kMaxEcho;
    std::string out = "\"" + escape_control(text.substr(0, kMaxEcho));
    if (shortened) out += "...";
    out += '"';
    return out;
}

bool is_separator(char c) { return c == ' ' || c == '\t'; }

bool all_digits(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Hands out a line word by word; rest() gives what is left verbatim (for TOML and tokens).
class WordCursor {
public:
    explicit WordCursor(std::string_view line) : rest_(line) {}

    std::optional<std::string_view> next() {
        skip_separators();
        if (rest_.empty()) return std::nullopt;
        const auto end = std::find_if(rest_.begin(), rest_.end(), is_separator);
        const std::string_view word = rest_.substr(0, static_cast<size_t>(end - rest_.begin()));
        rest_.remove_prefix(word.size());
        return word;
    }

    std::string_view rest() {
        skip_separators();
        return std::exchange(rest_, std::string_view{});
    }

private:
    void skip_separators() {
        while (!rest_.empty() && is_separator(rest_.front())) rest_.remove_prefix(1);
    }

    std::string_view rest_;
};

// A parse error inside this file; parse_command() turns it into a CommandError. Throwing keeps
// each argument reader a one-liner at its call site instead of a chain of early returns.
class ParseFailure : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class LineParser {
public:
    explicit LineParser(std::string_view line) : words_(line) {}

    Command parse() {
        Command command;
        command.kind = read_kind();
        spec_ = &spec_of(command.kind);
        read_arguments(command);
        return command;
    }

private:
    CommandKind read_kind() {
        const auto first = words_.next();
        if (!first) throw ParseFailure("empty command (try help)");
        const std::string verb = lowercase(*first);
        if (auto kind = kind_named(verb)) return *kind;
        if (!is_verb(verb)) throw ParseFailure("unknown command " + quoted(*first) + " (try help)");
        const auto second = words_.next();
        if (!second) throw ParseFailure(quoted(*first) + " needs a second word (try help)");
        if (auto kind = kind_named(verb + " " + lowercase(*second))) return *kind;
        throw ParseFailure("unknown command " + quoted(std::string(*first) + " " + std::string(*second)) +
                           " (try help)");
    }

    void read_arguments(Command& command) {
        switch (command.kind) {
            case CommandKind::ShowSessions:
            case CommandKind::CleanSessions: command.rule = rule_id(words_.next().value_or("")); break;
            case CommandKind::AddRule:
            case CommandKind::ModifyRule:
                command.text = required_rest("<inline TOML table>");
                return;  // the rest of the line was the argument: nothing can follow
            case CommandKind::Auth: command.text = token(trim_trailing(required_rest("<token>"))); return;
            case CommandKind::RemoveRule: command.rule = rule_id(required("<rule>")); break;
            case CommandKind::DisableServer:
                read_rule_and_server(command);
                if (auto word = words_.next()) command.duration = duration(*word);
                break;
            case CommandKind::EnableServer:
            case CommandKind::DrainServer: read_rule_and_server(command); break;
            case CommandKind::SetWeight:
                read_rule_and_server(command);
                command.weight = weight(required("<0..1000>"));
                break;
            case CommandKind::KillSession: command.session_id = session_id(required("<id>")); break;
            default: break;  // no arguments
        }
        expect_end();
    }

    void read_rule_and_server(Command& command) {
        command.rule = rule_id(required("<rule>"));
        command.server = server_address(required("<server>"));
    }

    std::string required(std::string_view what) {
        if (auto word = words_.next()) return std::string(*word);
        fail("missing " + std::string(what) + usage_hint());
    }

    std::string required_rest(std::string_view what) {
        const std::string_view rest = words_.rest();
        if (rest.empty()) fail("missing " + std::string(what) + usage_hint());
        return std::string(rest);
    }

    void expect_end() {
        if (auto extra = words_.next()) fail("unexpected argument " + quoted(*extra) + usage_hint());
    }

    // Names and tokens never hold a control character (config files refuse them too).
    std::string rule_id(std::string_view text) {
        if (const std::string problem = control_byte_problem(text); !problem.empty())
            fail("rule id " + quoted(text) + " " + problem);
        return std::string(text);
    }

    std::string token(std::string text) {
        if (const std::string problem = control_byte_problem(text); !problem.empty()) fail("the token " + problem);
        return text;
    }

    std::string server_address(std::string_view text) {
        if (config::valid_server_name(text)) return std::string(text);  // a server's name
        const std::string reason = net::SocketAddress::parse_error(text);
        // The reason may quote the address too: escaped as well.
        if (!reason.empty()) fail("bad server address " + quoted(text) + ": " + escape_control(reason));
        return std::string(text);  // as typed: the controller matches it against the config's text
    }

    unsigned weight(std::string_view text) {
        unsigned value = 0;
        const bool parsed = all_digits(text) && text.size() <= 4 &&
                            std::from_chars(text.data(), text.data() + text.size(), value).ec == std::errc();
        if (!parsed || value > kMaxWeight)
            fail("weight must be 0.." + std::to_string(kMaxWeight) + ", got " + quoted(text));
        return value;
    }

    uint64_t session_id(std::string_view text) {
        uint64_t value = 0;
        const bool parsed =
            all_digits(text) && std::from_chars(text.data(), text.data() + text.size(), value).ec == std::errc();
        if (!parsed) fail("session id must be an unsigned 64-bit decimal number, got " + quoted(text));
        return value;
    }

    std::chrono::milliseconds duration(std::string_view text) {
        const auto value = config::parse_duration(text);
        if (!value) fail("bad duration " + quoted(text) + " (expected e.g. 30s, 5m, 1h, 250ms)");
        if (value->count() == 0) fail("duration must be greater than 0, got " + quoted(text));
        return *value;
    }

    static std::string trim_trailing(std::string text) {
        while (!text.empty() && is_separator(text.back())) text.pop_back();
        return text;
    }

    std::string usage_hint() const {
        std::string usage = " (usage: " + std::string(spec_->name);
        if (!spec_->arguments.empty()) usage += " " + std::string(spec_->arguments);
        return usage + ")";
    }

    // Every message names the command, so a script's log line says which step went wrong.
    [[noreturn]] void fail(const std::string& message) const {
        throw ParseFailure(std::string(spec_->name) + ": " + message);
    }

    WordCursor words_;
    const CommandSpec* spec_ = nullptr;
};

}  // namespace

ParseResult parse_command(std::string_view line) {
    try {
        return LineParser(line).parse();
    } catch (const ParseFailure& failure) {
        return CommandError{failure.what()};
    }
}

std::string help_text() {
    constexpr size_t kUsageColumn = 46;  // wide enough for the longest usage
    std::string text;
    for (const CommandSpec& spec : kCommands) {
        std::string usage(spec.name);
        if (!spec.arguments.empty()) usage += " " + std::string(spec.arguments);
        usage.resize(std::max(usage.size() + 1, kUsageColumn), ' ');
        text += usage;
        text += spec.description;
        if (!spec.aliases.empty()) text += " (alias: " + std::string(spec.aliases) + ")";
        text += '\n';
    }
    return text;
}

}  // namespace ringlb::admin
