#pragma once
// The validated configuration: what the TOML file says, checked and turned into typed values.
// Every problem is reported with file, line, column and the key it concerns.
#include <chrono>
#include <cstdint>
#include <optional>
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

enum class ProxyProtocol { Off, V1, V2 };
// How an established session moves bytes: copied through receive buffers, or by splice(2)
// through a pipe (no copy through user space); auto copies until a direction looks like bulk.
enum class ZeroCopy { Auto, Splice, Off };
enum class LogFormat { Text, Json };

std::string_view to_string(EngineChoice engine);
std::string_view to_string(BalanceMode mode);  // the long name: "round_robin", "source_hash", ...
std::string_view to_string(ProxyProtocol version);  // "off", "v1", "v2"
std::string_view to_string(ZeroCopy mode);           // "auto", "splice", "off"

// `source`: the local address outgoing connections to servers are bound to ("IP" or
// "IP:first-last"). Without a port range the kernel picks the port at connect time.
struct SourceConfig {
    net::SocketAddress address;  // the IP; port 0. Family 0 = not set
    uint16_t first_port = 0;     // 0 = no port range
    uint16_t last_port = 0;
    bool enabled() const { return address.family() != 0; }
    bool has_port_range() const { return first_port != 0; }
    std::string to_string() const;  // as written: "127.0.0.2", "[::1]:20000-29999"
    bool operator==(const SourceConfig&) const = default;
};
// Parses a source text; nullopt with the reason in *error.
std::optional<SourceConfig> parse_source(std::string_view text, std::string* error);

// A server name: 1-64 characters of A-Z a-z 0-9 _ . -, a letter first (so never an address).
bool valid_server_name(std::string_view name);
// The name of a dns entry, whose servers are named name1, name2, ...: no digit last (so "web1"'s
// servers never take "web"'s names) and room for the number.
bool valid_dns_server_name(std::string_view name);

struct ServerConfig {
    net::SocketAddress address;
    unsigned weight = 1;  // 0..1000; 0 takes no new sessions
    bool backup = false;           // used only when no non-backup server can take the session
    uint32_t max_connections = 0;  // 0..10000000; 0 = unlimited
    // A DNS entry ({ dns = "name:port" } or "dns:name:port"): every A/AAAA address of the name
    // becomes a server with the settings above, re-resolved in the background. Empty dns_name =
    // a plain server at `address` (which a DNS entry leaves unused).
    std::string dns_name{};  // {}: lets "{address, weight}" initialisers leave it out without a warning
    uint16_t dns_port = 0;
    std::chrono::milliseconds resolve_interval{std::chrono::seconds(5)};  // at least 1s; shorter TTLs win
    // Names the server in logs, metrics labels and admin commands instead of its address; empty =
    // none. Unique in its rule; a letter first, then letters, digits, '_', '.', '-'. On a dns
    // entry, the base of its servers' names: name1, name2, ... by place (dns::keep_places).
    std::string name{};
    SourceConfig source{};  // overrides the rule's source for this server
    // The name if it has one, else the address: what metrics labels and admin replies show.
    std::string label() const { return name.empty() ? address.to_string() : name; }
    bool is_dns() const { return !dns_name.empty(); }
    std::string dns_endpoint() const { return dns_name + ":" + std::to_string(dns_port); }  // "name:port"
    bool operator==(const ServerConfig&) const = default;
};

// [rule.health]: active checks. With them on, a server starts DOWN and is UP after `rise`
// consecutive passed checks; `fall` consecutive failed checks take it DOWN again.
struct HealthCheckConfig {
    bool enabled = false;  // true when the rule has a [rule.health] table
    std::chrono::milliseconds interval{std::chrono::seconds(2)};
    std::chrono::milliseconds timeout{std::chrono::seconds(1)};
    unsigned rise = 2;   // 1..100
    unsigned fall = 3;   // 1..100
    std::string send;    // sent after connecting; empty = plain TCP connect check
    std::string expect;  // the reply must start with this; empty = any reply (or none) passes
    bool operator==(const HealthCheckConfig&) const = default;
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
    // Bytes per second each session may read from its client (upload) and from its server
    // (download); 0 = unlimited.
    uint64_t upload_rate = 0;
    uint64_t download_rate = 0;
    std::chrono::milliseconds timeout{std::chrono::seconds(300)};
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(3)};
    // Passive health (see health/passive.hpp): a failed connect marks the server down for
    // down_time, doubling per consecutive failure up to max_down_time.
    std::chrono::milliseconds down_time{std::chrono::seconds(10)};
    std::chrono::milliseconds max_down_time{std::chrono::minutes(5)};
    std::chrono::milliseconds slow_start{0};  // 0 = off: a server back UP gets its full weight at once
    uint32_t retries = 0;                     // 0 = try each server once; N = at most N + 1 servers per client
    // Clients that find every server at max_connections wait, at most `queue` of them over all
    // workers (0 = closed at once), each at most queue_timeout (unset = connect_timeout).
    uint32_t queue = 0;
    std::optional<std::chrono::milliseconds> queue_timeout;
    bool failback = true;  // ms mode: return to an earlier server once it is up again
    ProxyProtocol send_proxy = ProxyProtocol::Off;  // PROXY header to the server before any client byte
    ZeroCopy zero_copy = ZeroCopy::Off;
    bool accept_proxy = false;  // clients must start with a PROXY v1/v2 header naming the real client
    // accept_proxy: the peers (load balancers) allowed to send a PROXY header, matched against the
    // TCP peer, never against the address in the header; empty = any peer (warned about).
    std::vector<net::ClientPattern> proxy_from;
    // TLS passthrough: the server names (lower-case; "*.x" = one label then x) and ALPN protocols
    // the client's ClientHello must offer, one of each listed; empty = not looked at.
    std::vector<std::string> sni;
    std::vector<std::string> alpn;
    // Where connections to the servers come from (a server's own source wins); not set = the
    // kernel's choice.
    SourceConfig source;
    bool freebind = false;  // bind the listen addresses even when they are not (yet) on the host
    HealthCheckConfig health;
    // Connect-time and session-duration histograms per server in the metrics; unset = on for
    // rules of at most kServerHistogramsAutoLimit servers (a scrape of a large rule stays small).
    std::optional<bool> server_histograms;
    std::vector<ServerConfig> servers;
    // Every field: equal rules have equal rule_to_toml() texts, and comparing is much cheaper
    // than writing them (a reload compares every rule of the file with the running one).
    bool operator==(const RuleConfig&) const = default;
};

struct GlobalConfig {
    EngineChoice engine = EngineChoice::Auto;
    unsigned threads = 1;  // 0 = one per CPU this process may use
    uint32_t max_sessions = 100000;
    uint32_t max_sessions_per_ip = 0;  // 0 = unlimited
    // Connections still in a handshake (waiting for a PROXY header) at most; 0 = derived from
    // max_sessions, see handshake_limit().
    uint32_t max_handshakes = 0;
    uint32_t buffer_size = 64 * 1024;  // bytes in flight per direction per session
    uint32_t receive_buffers = 2048;   // per worker: receive buffers (32 KiB each) ready at start
    // Receive-buffer memory the whole process may hold; 0 = enough for every session to hold one
    // buffer per direction, at most a quarter of the machine's memory (see buffer_memory_cap()).
    uint64_t max_buffer_memory = 0;
    bool multishot_recv = true;        // io_uring: capped multishot receives where the kernel has them
    uint32_t max_pipes = 1024;         // per worker: pipes for the splice path (zero_copy); 0 = no splice
    // After a round with completions, a worker polls without sleeping for this long before it
    // sleeps again (a sleeping CPU, above all a virtual one, takes tens of microseconds to wake).
    std::chrono::microseconds busy_poll{0};
    LogLevel log_level = LogLevel::Info;
    std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(30)};  // SIGTERM: time sessions get to finish
    bool log_connections = false;  // one line per closed session
    LogFormat log_format = LogFormat::Text;
    std::string log_file;  // empty = stderr; reopened on SIGUSR1
    std::string user;      // drop privileges to this user after binding; empty = stay
    std::vector<net::SocketAddress> resolvers;  // DNS servers for dns entries; empty = /etc/resolv.conf
};

// The effective max_handshakes: the configured value (never above max_sessions), or a quarter of
// max_sessions but at least kMinDerivedHandshakes (or max_sessions when that is smaller).
constexpr uint32_t kMinDerivedHandshakes = 8;
uint32_t handshake_limit(const GlobalConfig& global);

// Whether the metrics keep histograms for each server of `rule` (see RuleConfig::server_histograms).
constexpr size_t kServerHistogramsAutoLimit = 100;
bool server_histograms_enabled(const RuleConfig& rule);
// How long a client of `rule` waits in its queue at most.
std::chrono::milliseconds queue_timeout(const RuleConfig& rule);

// The receive-buffer memory cap in force: max_buffer_memory, or its default for this machine
// (`physical_memory` bytes of RAM) when it is 0.
uint64_t buffer_memory_cap(const GlobalConfig& global, uint64_t physical_memory);

// Where a control endpoint listens: a TCP address, or a unix socket path ("unix:/run/ringlb.sock").
struct ControlListen {
    bool enabled = false;
    net::SocketAddress address;  // when unix_path is empty
    std::string unix_path;
    std::string to_string() const { return unix_path.empty() ? address.to_string() : "unix:" + unix_path; }
};

// [admin]: the management port.
struct AdminConfig {
    ControlListen listen;
    std::vector<net::ClientPattern> allow;  // default: 127.0.0.0/8 and ::1
    std::string token;                      // empty = no auth; else the first line must be "auth <token>"
    bool insecure = false;                  // allow a non-loopback admin listener without a token
};

// [metrics]: Prometheus text at GET /metrics.
struct MetricsConfig {
    ControlListen listen;
    std::vector<net::ClientPattern> allow;  // default: 127.0.0.0/8 and ::1
    std::string token;  // when set, GET /metrics needs "Authorization: Bearer <token>"
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

struct Config {
    std::string source;  // file name, for messages
    GlobalConfig global;
    std::vector<RuleConfig> rules;
    AdminConfig admin;
    MetricsConfig metrics;
    // What is valid but likely a mistake (a rule that can never match, a server listed twice, a
    // rule whose servers all have weight 0): `--check` prints these and the start-up log shows
    // them; they do not stop ringlb.
    std::vector<ConfigIssue> warnings;
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

// `add rule` / `modify rule`: one rule given as an inline TOML table
// ({id="x", mode="rr", listen=["127.0.0.1:8081"], servers=["127.0.0.1:9001"]}), validated as a
// [[rule]] of a file would be, with `source_name` in messages (e.g. "admin").
RuleConfig parse_rule_inline(std::string_view inline_table, std::string_view source_name);

// The whole config as TOML that parse_config() reads back to an equal config (`dump rules`).
std::string to_toml(const Config& config);
// One rule as a [[rule]] table; two rules are equal (==) iff their texts are equal.
std::string rule_to_toml(const RuleConfig& rule);


// One line for `--check`: "ok: 2 rules, 3 listeners, 4 servers (etc/ringlb.toml)".
std::string summarize(const Config& config);

}  // namespace ringlb::config
