#pragma once
// What the management port can ask of a running ringlb. The admin server parses and checks the
// command lines; an implementation of Controller (app/runtime) carries them out across the worker
// threads. Every call returns a Reply: the admin server prints `body` and then `ok`, or the line
// `error: <error>`.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace ringlb::admin {

struct Reply {
    bool ok = true;
    std::string body;   // zero or more lines, each ending in '\n'
    std::string error;  // when !ok: one line, no '\n'

    static Reply success(std::string body = {}) { return Reply{true, std::move(body), {}}; }
    static Reply failure(std::string error) { return Reply{false, {}, std::move(error)}; }
};

// Delivers a reply that is not ready when the call returns.
using ReplyCallback = std::function<void(Reply)>;

// The administrative state of one server, as `show rules` prints it.
enum class ServerAdminState { Enabled, Disabled, Draining };

class Controller {
public:
    virtual ~Controller() = default;

    virtual Reply show_rules() = 0;
    virtual Reply show_sessions(std::string_view rule_id) = 0;  // empty: every rule
    virtual Reply show_stats() = 0;

    virtual Reply add_rule(std::string_view inline_table) = 0;
    virtual Reply modify_rule(std::string_view inline_table) = 0;
    virtual Reply remove_rule(std::string_view rule_id) = 0;
    // Closes the sessions still on earlier versions (modified or removed) of the rule; of every
    // rule when `rule_id` is empty.
    virtual Reply clean_sessions(std::string_view rule_id) = 0;

    // `server` is an address as written in the config ("127.0.0.1:9001", "[::1]:9001").
    // Disabled with a duration: enabled again by itself after it.
    virtual Reply set_server_state(std::string_view rule_id, std::string_view server, ServerAdminState state,
                                   std::optional<std::chrono::milliseconds> duration) = 0;
    virtual Reply set_weight(std::string_view rule_id, std::string_view server, unsigned weight) = 0;
    virtual Reply kill_session(uint64_t session_id) = 0;

    // The running configuration as TOML, tokens hidden: for looking, it writes nothing.
    virtual Reply show_config() = 0;
    // Replaces the configuration file with the running configuration, keeping numbered backups.
    virtual Reply write_config() = 0;
    // Reads the configuration file again. The reading runs off the control thread, so `done` is
    // called later on the control thread (or at once, when the reload cannot start); it is never
    // called after the controller is destroyed.
    virtual void reload(ReplyCallback done) = 0;
};

}  // namespace ringlb::admin
