#pragma once
// Builds ringlb TOML configs for the tests, and finds line numbers in them (for checking that
// error messages point at the right line).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb::test {

struct ServerSpec {
    std::string address;  // "127.0.0.1:9001"
    unsigned weight = 0;  // 0 = write the plain string form (weight defaults to 1)
    bool backup = false;  // written as a table { address, weight, backup = true }
    unsigned max_connections = 0;  // nonzero: written as a table with max_connections
    std::string name{};            // nonempty: written as a table with name
    std::string source{};          // nonempty: written as a table with source
};

struct RuleSpec {
    std::string id = "test";
    std::string mode = "rr";
    std::vector<std::string> listen;  // "127.0.0.1:8080", "[::1]:8080"
    std::vector<ServerSpec> servers;
    std::string timeout = "300s";
    std::string connect_timeout = "3s";
    std::vector<std::string> extra_lines;  // written verbatim inside the [[rule]] table
};

struct GlobalSpec {
    unsigned threads = 1;
    unsigned max_sessions_per_ip = 0;
    std::string log_level = "info";
    // Short, so a test that stops ringlb with sessions still open does not wait for them long.
    std::string shutdown_timeout = "1s";
    std::vector<std::string> extra_lines;  // written verbatim inside [global]
    std::vector<std::string> trailing_lines;  // written after the rules ([admin], [metrics])
};

std::string render_config(const GlobalSpec& global, const std::vector<RuleSpec>& rules);

// A rule `id` listening on 127.0.0.1:port with the one server `server` ("127.0.0.1:9001").
RuleSpec one_server_rule(const std::string& id, std::uint16_t port, const std::string& server);

// The most common shape: one rule listening on 127.0.0.1:listen_port.
std::string simple_config(std::uint16_t listen_port, const std::vector<ServerSpec>& servers,
                          const GlobalSpec& global = {});

// 1-based number of the line holding the `occurrence`-th (1-based) match of `needle`; 0 if none.
unsigned line_of(std::string_view text, std::string_view needle, unsigned occurrence = 1);

}  // namespace ringlb::test
