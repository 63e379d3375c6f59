#pragma once
// The admin port's command language: one line in, one typed command out. Parsing is separate from
// the server so that the grammar (and every error message a user can see) is testable without
// sockets, and so that the help text is written next to the grammar it describes.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace ringlb::admin {

enum class CommandKind {
    Help,
    Version,
    ShowRules,
    ShowSessions,
    ShowStats,
    AddRule,
    ModifyRule,
    RemoveRule,
    CleanSessions,
    DisableServer,
    EnableServer,
    DrainServer,
    SetWeight,
    KillSession,
    ShowConfig,
    WriteConfig,
    Reload,
    Quit,
    Auth,
};

// One parsed command. Only the fields its kind uses are set; the rest keep their defaults.
struct Command {
    CommandKind kind = CommandKind::Help;
    std::string rule;    // rule id: remove/server commands/set weight; show sessions and clean sessions (empty = all)
    std::string server;  // server address as typed ("127.0.0.1:9001"), checked to be an IP:port
    std::string text;    // add/modify rule: the inline TOML table verbatim; auth: the token
    std::optional<std::chrono::milliseconds> duration;  // disable server: re-enable after it
    unsigned weight = 0;                                // set weight: 0..kMaxWeight
    uint64_t session_id = 0;                            // kill session
};

inline constexpr unsigned kMaxWeight = 1000;

// Why a line is not a valid command. `message` has no "error: " prefix and no newline: the
// server prints it as "error: <message>".
struct CommandError {
    std::string message;
};

using ParseResult = std::variant<Command, CommandError>;

// Parses one line (without its "\r\n"). Words are separated by spaces or tabs; command words are
// case-insensitive, arguments (rule ids, addresses, tokens, TOML) are kept as typed.
ParseResult parse_command(std::string_view line);

// What `help` prints: one line per command, usage then a short description, each ending in '\n'.
std::string help_text();

}  // namespace ringlb::admin
