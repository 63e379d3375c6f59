#pragma once
// The validated configuration: what the TOML file says, checked and turned into typed values.
// Every problem is reported with file, line, column and the key it concerns.
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/net/address.hpp"
#include "ringlb/net/client_pattern.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::config {

enum class EngineChoice { Auto, Uring, Epoll };
enum class BalanceMode { RoundRobin, MasterStandby, LeastConn, Random, PowerOfTwo, SourceHash, ResponseTime };

std::string_view to_string(EngineChoice engine);
std::string_view to_string(BalanceMode mode);

struct ServerConfig {
    net::SocketAddress address;
    unsigned weight = 1;  // 0..1000; 0 takes no new sessions
    bool backup = false;           // used only when no non-backup server can take the session
    uint32_t max_connections = 0;  // 0..10000000; 0 = unlimited
};

struct RuleConfig {
    std::string id;
    BalanceMode mode = BalanceMode::RoundRobin;
    std::vector<net::SocketAddress> listen;
    std::vector<net::ClientPattern> clients;  // empty = any client
    std::vector<net::ClientPattern> deny;     // checked first: a client matching one skips this rule
    uint32_t max_clients = 0;                 // concurrent sessions in this rule; 0 = unlimited
    uint32_t max_sessions_per_ip = 0;         // concurrent sessions in this rule per client IP; 0 = unlimited
    uint32_t max_conn_rate_per_ip = 0;        // new sessions per second per client IP, burst as many; 0 = off
    std::chrono::milliseconds timeout{std::chrono::seconds(300)};
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(3)};
    // Passive health (see health/passive.hpp): a failed connect marks the server down for
    // down_time, doubling per consecutive failure up to max_down_time.
    std::chrono::milliseconds down_time{std::chrono::seconds(10)};
    std::chrono::milliseconds max_down_time{std::chrono::minutes(5)};
    std::chrono::milliseconds slow_start{0};  // 0 = off: a server back UP gets its full weight at once
    uint32_t retries = 0;                     // 0 = try each server once; N = at most N + 1 servers per client
    std::vector<ServerConfig> servers;
};

struct GlobalConfig {
    EngineChoice engine = EngineChoice::Auto;
    unsigned threads = 1;  // 0 = one per CPU this process may use
    uint32_t max_sessions = 100000;
    uint32_t max_sessions_per_ip = 0;  // 0 = unlimited
    uint32_t buffer_size = 64 * 1024;  // bytes in flight per direction per session
    uint32_t receive_buffers = 2048;   // per worker: the pool receives draw from, 16 KiB each
    LogLevel log_level = LogLevel::Info;
};

struct Config {
    std::string source;  // file name, for messages
    GlobalConfig global;
    std::vector<RuleConfig> rules;
};

// One problem found in a config: "etc/x.toml:12:10: rule[1].listen[0]: bad address ...".
struct ConfigIssue {
    std::string file;
    unsigned line = 0;    // 1-based; 0 when unknown
    unsigned column = 0;  // 1-based; 0 when unknown
    std::string key;      // dotted path such as "global.buffer_size" or "rule[0].servers[1].weight"
    std::string message;
    std::string to_string() const;
};

// Thrown with every problem found (not just the first). what() joins them, one per line.
class ConfigError : public std::runtime_error {
public:
    explicit ConfigError(std::vector<ConfigIssue> issues);
    const std::vector<ConfigIssue>& issues() const { return issues_; }

private:
    std::vector<ConfigIssue> issues_;
};

Config parse_config(std::string_view toml_text, std::string_view source_name);
Config load_config_file(const std::string& path);  // also reports an unreadable file as ConfigError

// One line for `--check`: "ok: 2 rules, 3 listeners, 4 servers (etc/ringlb.toml)".
std::string summarize(const Config& config);

}  // namespace ringlb::config
