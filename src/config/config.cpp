#include "ringlb/config/config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <system_error>
#include <toml++/toml.h>

#include "ringlb/config/units.hpp"

namespace ringlb::config {
namespace {

constexpr int64_t kMaxSessions = 10'000'000;
constexpr uint64_t kMinBuffer = 1024;
constexpr uint64_t kMaxBuffer = 64 * 1024 * 1024;
constexpr int64_t kMaxWeight = 1000;
constexpr int64_t kMaxThreads = 256;
constexpr int64_t kMaxRetries = 1000;
constexpr int64_t kMaxConnRate = 1'000'000;  // new connections per second per client IP

std::string lowercase(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

std::string_view type_name(toml::node_type type) {
    switch (type) {
        case toml::node_type::table: return "table";
        case toml::node_type::array: return "array";
        case toml::node_type::string: return "string";
        case toml::node_type::integer: return "integer";
        case toml::node_type::floating_point: return "float";
        case toml::node_type::boolean: return "boolean";
        case toml::node_type::date: return "date";
        case toml::node_type::time: return "time";
        case toml::node_type::date_time: return "date-time";
        case toml::node_type::none: break;
    }
    return "nothing";
}

std::string quoted(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    out += '"';
    out += text;
    out += '"';
    return out;
}

std::string indexed(const std::string& key, size_t index) { return key + "[" + std::to_string(index) + "]"; }

bool valid_rule_id(std::string_view id) {
    return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '.' || c == '-';
    });
}

// Walks the parsed TOML document, fills a Config and collects every issue instead of stopping
// at the first, so that one run of `--check` shows everything that needs fixing.
class Validator {
public:
    explicit Validator(std::string file) : file_(std::move(file)) {}

    Config run(const toml::table& root) {
        Config config;
        config.source = file_;
        for (auto&& [name, node] : root) {
            if (name == "global") read_global(node, config.global);
            else if (name == "rule") read_rules(node, config.rules);
            else report(name.source(), std::string(name.str()), "unknown top-level key (expected [global] or [[rule]])");
        }
        if (!root.contains("rule")) report(root.source(), "rule", "no [[rule]] defined");
        return config;
    }

    std::vector<ConfigIssue> take_issues() {
        // toml++ iterates tables in key order; report in file order instead (unknown positions last).
        std::stable_sort(issues_.begin(), issues_.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
            auto position = [](const ConfigIssue& i) { return std::pair(i.line == 0 ? ~0u : i.line, i.column); };
            return position(a) < position(b);
        });
        return std::move(issues_);
    }

private:
    void report(const toml::source_region& where, std::string key, std::string message) {
        issues_.push_back({file_, where.begin.line, where.begin.column, std::move(key), std::move(message)});
    }

    void report_unknown_key(const toml::key& name, const std::string& key, std::string_view expected) {
        report(name.source(), key, "unknown key (expected one of: " + std::string(expected) + ")");
    }

    void report_type(const toml::node& node, const std::string& key, std::string_view expected) {
        report(node.source(), key, "expected " + std::string(expected) + ", got " + std::string(type_name(node.type())));
    }

    // ---- typed readers: each returns nullopt after reporting why ----

    std::optional<std::string> read_string(const toml::node& node, const std::string& key) {
        if (const auto* value = node.as_string()) return value->get();
        report_type(node, key, "a string");
        return std::nullopt;
    }

    std::optional<int64_t> read_integer(const toml::node& node, const std::string& key, int64_t min, int64_t max) {
        const auto* value = node.as_integer();
        if (!value) {
            report_type(node, key, "an integer");
            return std::nullopt;
        }
        if (value->get() < min || value->get() > max) {
            report(node.source(), key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                                           ", got " + std::to_string(value->get()));
            return std::nullopt;
        }
        return value->get();
    }

    // A duration string ("300s") or an integer number of seconds; must be > 0 (or >= 0 with allow_zero).
    std::optional<std::chrono::milliseconds> read_timeout(const toml::node& node, const std::string& key,
                                                          bool allow_zero = false) {
        std::optional<std::chrono::milliseconds> duration;
        if (const auto* text = node.as_string()) {
            duration = parse_duration(text->get());
            if (!duration) {
                report(node.source(), key, "invalid duration " + quoted(text->get()) + " (use e.g. 300s, 250ms, 5m, 1h)");
                return std::nullopt;
            }
        } else if (const auto* seconds = node.as_integer()) {
            if (seconds->get() > std::numeric_limits<int64_t>::max() / 1000) {
                report(node.source(), key, "duration is too large");
                return std::nullopt;
            }
            duration = std::chrono::seconds(seconds->get());
        } else {
            report_type(node, key, "a duration string such as \"300s\" or an integer number of seconds");
            return std::nullopt;
        }
        if (duration->count() < 0 || (duration->count() == 0 && !allow_zero)) {
            report(node.source(), key, allow_zero ? "must not be negative" : "must be greater than 0");
            return std::nullopt;
        }
        return duration;
    }

    std::optional<uint64_t> read_size(const toml::node& node, const std::string& key, uint64_t min, uint64_t max) {
        std::optional<uint64_t> bytes;
        std::string shown;
        if (const auto* text = node.as_string()) {
            shown = quoted(text->get());
            bytes = parse_size(text->get());
            if (!bytes) {
                report(node.source(), key, "invalid size " + shown + " (use e.g. 64k, 1m or a number of bytes)");
                return std::nullopt;
            }
        } else if (const auto* integer = node.as_integer()) {
            shown = std::to_string(integer->get());
            if (integer->get() >= 0) bytes = static_cast<uint64_t>(integer->get());
        } else {
            report_type(node, key, "a size string such as \"64k\" or an integer number of bytes");
            return std::nullopt;
        }
        if (!bytes || *bytes < min || *bytes > max) {
            report(node.source(), key, "must be between 1k and 64m, got " + shown);
            return std::nullopt;
        }
        return bytes;
    }

    std::optional<net::SocketAddress> read_address(const toml::node& node, const std::string& key) {
        const auto* text = node.as_string();
        if (!text) {
            report_type(node, key, "an address string such as \"127.0.0.1:80\"");
            return std::nullopt;
        }
        if (auto address = net::SocketAddress::parse(text->get())) return address;
        report(node.source(), key, "bad address " + quoted(text->get()) + ": " + net::SocketAddress::parse_error(text->get()));
        return std::nullopt;
    }

    // Calls read(item, item_key) for each element of an array, or once for a single value.
    template <typename ReadItem>
    void for_each_item(const toml::node& node, const std::string& key, ReadItem read) {
        const auto* array = node.as_array();
        if (!array) {
            read(node, key);
            return;
        }
        if (array->empty()) report(node.source(), key, "must not be empty");
        for (size_t i = 0; i < array->size(); ++i) read((*array)[i], indexed(key, i));
    }

    // ---- [global] ----

    void read_global(const toml::node& node, GlobalConfig& global) {
        const auto* table = node.as_table();
        if (!table) return report_type(node, "global", "a table [global]");
        for (auto&& [name, value] : *table) {
            const std::string key = "global." + std::string(name.str());
            if (name == "engine") read_engine(value, key, global.engine);
            else if (name == "threads") read_threads(value, key, global.threads);
            else if (name == "max_sessions") {
                if (auto n = read_integer(value, key, 1, kMaxSessions)) global.max_sessions = static_cast<uint32_t>(*n);
            } else if (name == "max_sessions_per_ip") {
                if (auto n = read_integer(value, key, 0, kMaxSessions)) global.max_sessions_per_ip = static_cast<uint32_t>(*n);
            } else if (name == "buffer_size") {
                if (auto n = read_size(value, key, kMinBuffer, kMaxBuffer)) global.buffer_size = static_cast<uint32_t>(*n);
            } else if (name == "receive_buffers") {
                read_receive_buffers(value, key, global.receive_buffers);
            } else if (name == "log_level") read_log_level(value, key, global.log_level);
            else report_unknown_key(name, key,
                                    "engine, threads, max_sessions, max_sessions_per_ip, buffer_size, receive_buffers, "
                                    "log_level");
        }
    }

    void read_engine(const toml::node& node, const std::string& key, EngineChoice& engine) {
        const auto text = read_string(node, key);
        if (!text) return;
        const std::string name = lowercase(*text);
        if (name == "auto") engine = EngineChoice::Auto;
        else if (name == "uring") engine = EngineChoice::Uring;
        else if (name == "epoll") engine = EngineChoice::Epoll;
        else report(node.source(), key, "unknown engine " + quoted(*text) + " (supported: auto, uring, epoll)");
    }

    // A power of two, as the io_uring provided-buffer ring requires, and at most its 32768 entries.
    void read_receive_buffers(const toml::node& node, const std::string& key, uint32_t& count) {
        const auto n = read_integer(node, key, 16, 32768);
        if (!n) return;
        if ((*n & (*n - 1)) != 0) return report(node.source(), key, "must be a power of two (16, 32, ..., 32768)");
        count = static_cast<uint32_t>(*n);
    }

    void read_threads(const toml::node& node, const std::string& key, unsigned& threads) {
        // 0 = one worker per CPU this process may use, decided at start-up.
        if (const auto n = read_integer(node, key, 0, kMaxThreads)) threads = static_cast<unsigned>(*n);
    }

    void read_log_level(const toml::node& node, const std::string& key, LogLevel& level) {
        const auto text = read_string(node, key);
        if (!text) return;
        if (auto parsed = parse_log_level(*text)) level = *parsed;
        else report(node.source(), key, "unknown log level " + quoted(*text) + " (supported: error, warn, info, debug)");
    }

    // ---- [[rule]] ----

    void read_rules(const toml::node& node, std::vector<RuleConfig>& rules) {
        const auto* array = node.as_array();
        if (!array) return report_type(node, "rule", "[[rule]] tables (an array of tables)");
        if (array->empty()) report(node.source(), "rule", "no [[rule]] defined");
        for (size_t i = 0; i < array->size(); ++i) {
            const toml::node& item = (*array)[i];
            const std::string key = indexed("rule", i);
            if (const auto* table = item.as_table()) rules.push_back(read_rule(*table, key));
            else report_type(item, key, "a table");
        }
    }

    RuleConfig read_rule(const toml::table& table, const std::string& path) {
        RuleConfig rule;
        for (auto&& [name, value] : table) {
            const std::string key = path + "." + std::string(name.str());
            if (name == "id") read_rule_id(value, key, rule.id);
            else if (name == "mode") read_mode(value, key, rule.mode);
            else if (name == "listen") read_listen(value, key, rule.listen);
            else if (name == "clients") read_clients(value, key, rule.clients);
            else if (name == "max_clients") {
                if (auto n = read_integer(value, key, 0, kMaxSessions)) rule.max_clients = static_cast<uint32_t>(*n);
            } else if (name == "max_sessions_per_ip") {
                if (auto n = read_integer(value, key, 0, kMaxSessions)) rule.max_sessions_per_ip = static_cast<uint32_t>(*n);
            } else if (name == "max_conn_rate_per_ip") {
                if (auto n = read_integer(value, key, 0, kMaxConnRate)) rule.max_conn_rate_per_ip = static_cast<uint32_t>(*n);
            } else if (name == "deny") read_clients(value, key, rule.deny);
            else if (name == "timeout") {
                if (auto d = read_timeout(value, key)) rule.timeout = *d;
            } else if (name == "connect_timeout") {
                if (auto d = read_timeout(value, key)) rule.connect_timeout = *d;
            } else if (name == "down_time") {
                if (auto d = read_timeout(value, key)) rule.down_time = *d;
            } else if (name == "max_down_time") {
                if (auto d = read_timeout(value, key)) rule.max_down_time = *d;
            } else if (name == "slow_start") {
                if (auto d = read_timeout(value, key, true)) rule.slow_start = *d;
            } else if (name == "retries") {
                if (auto n = read_integer(value, key, 0, kMaxRetries)) rule.retries = static_cast<uint32_t>(*n);
            } else if (name == "servers") read_servers(value, key, rule.servers);
            else report_unknown_key(name, key, "id, mode, listen, clients, deny, max_clients, max_sessions_per_ip, "
                                               "max_conn_rate_per_ip, timeout, connect_timeout, down_time, "
                                               "max_down_time, slow_start, retries, servers");
        }
        if (!table.contains("id")) report(table.source(), path + ".id", "missing required key id");
        if (!table.contains("listen")) report(table.source(), path + ".listen", "missing required key listen");
        if (!table.contains("servers")) report(table.source(), path + ".servers", "rule has no servers (servers is required)");
        if (rule.max_down_time < rule.down_time) {
            const toml::node* where = table.get("max_down_time");
            report(where ? where->source() : table.source(), path + ".max_down_time",
                   "must not be less than down_time (" + std::to_string(rule.max_down_time.count()) + " ms < " +
                       std::to_string(rule.down_time.count()) + " ms)");
        }
        return rule;
    }

    void read_rule_id(const toml::node& node, const std::string& key, std::string& id) {
        const auto text = read_string(node, key);
        if (!text) return;
        if (!valid_rule_id(*text))
            return report(node.source(), key, "invalid rule id " + quoted(*text) + " (1-64 characters of A-Z a-z 0-9 _ . -)");
        const auto [first, inserted] = rule_id_lines_.emplace(*text, node.source().begin.line);
        if (!inserted)
            return report(node.source(), key, "duplicate rule id " + quoted(*text) + " (first defined at line " +
                                                  std::to_string(first->second) + ")");
        id = *text;
    }

    void read_mode(const toml::node& node, const std::string& key, BalanceMode& mode) {
        const auto text = read_string(node, key);
        if (!text) return;
        const std::string name = lowercase(*text);
        if (name == "rr" || name == "round_robin") mode = BalanceMode::RoundRobin;
        else if (name == "ms" || name == "master_standby") mode = BalanceMode::MasterStandby;
        else if (name == "lc" || name == "least_conn") mode = BalanceMode::LeastConn;
        else if (name == "rd" || name == "random") mode = BalanceMode::Random;
        else if (name == "p2c") mode = BalanceMode::PowerOfTwo;
        else if (name == "hs" || name == "source_hash") mode = BalanceMode::SourceHash;
        else if (name == "rt" || name == "response_time") mode = BalanceMode::ResponseTime;
        else
            report(node.source(), key,
                   "unsupported mode " + quoted(*text) +
                       " (supported: rr, round_robin, ms, master_standby, lc, least_conn, rd, random, p2c, hs, "
                       "source_hash, rt, response_time)");
    }

    void read_listen(const toml::node& node, const std::string& key, std::vector<net::SocketAddress>& listen) {
        std::vector<std::string> keys;  // parallel to listen, to name the first occurrence of a duplicate
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto address = read_address(item, item_key);
            if (!address) return;
            const auto same = std::find(listen.begin(), listen.end(), *address);
            if (same != listen.end()) {
                // Across rules a shared listener is fine; twice in one rule is a typo.
                report(item.source(), item_key, "duplicate listen address " + address->to_string() + " in this rule (also " +
                                                    keys[static_cast<size_t>(same - listen.begin())] + ")");
                return;
            }
            listen.push_back(*address);
            keys.push_back(item_key);
        });
    }

    void read_clients(const toml::node& node, const std::string& key, std::vector<net::ClientPattern>& clients) {
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto text = read_string(item, item_key);
            if (!text) return;
            std::string error;
            if (auto pattern = net::ClientPattern::parse(*text, &error)) clients.push_back(*pattern);
            else report(item.source(), item_key, error);
        });
    }

    void read_servers(const toml::node& node, const std::string& key, std::vector<ServerConfig>& servers) {
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            if (item.is_string()) {
                if (auto address = read_address(item, item_key)) servers.push_back({*address, 1});
            } else if (const auto* table = item.as_table()) {
                if (auto server = read_server_table(*table, item_key)) servers.push_back(*server);
            } else {
                report_type(item, item_key, "an address string or a table { address = ..., weight = ... }");
            }
        });
    }

    std::optional<ServerConfig> read_server_table(const toml::table& table, const std::string& path) {
        ServerConfig server;
        bool ok = true;
        for (auto&& [name, value] : table) {
            const std::string key = path + "." + std::string(name.str());
            if (name == "address") {
                auto address = read_address(value, key);
                if (address) server.address = *address;
                ok = ok && address.has_value();
            } else if (name == "weight") {
                auto weight = read_integer(value, key, 0, kMaxWeight);
                if (weight) server.weight = static_cast<unsigned>(*weight);
                ok = ok && weight.has_value();
            } else if (name == "backup") {
                const auto* backup = value.as_boolean();
                if (backup) server.backup = backup->get();
                else report_type(value, key, "a boolean");
                ok = ok && backup != nullptr;
            } else if (name == "max_connections") {
                auto limit = read_integer(value, key, 0, kMaxSessions);
                if (limit) server.max_connections = static_cast<uint32_t>(*limit);
                ok = ok && limit.has_value();
            } else {
                report_unknown_key(name, key, "address, weight, backup, max_connections");
                ok = false;
            }
        }
        if (!table.contains("address")) {
            report(table.source(), path + ".address", "missing required key address");
            return std::nullopt;
        }
        if (!ok) return std::nullopt;
        return server;
    }

    std::string file_;
    std::vector<ConfigIssue> issues_;
    std::map<std::string, uint32_t> rule_id_lines_;  // rule id -> line of its first definition
};

std::string read_whole_file(const std::string& path, std::string* error) {
    const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) {
        *error = std::generic_category().message(errno);
        return {};
    }
    std::string text;
    char chunk[64 * 1024];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, file.get())) > 0) text.append(chunk, n);
    if (std::ferror(file.get())) *error = std::generic_category().message(errno);  // e.g. a directory: EISDIR
    return text;
}

}  // namespace

std::string_view to_string(EngineChoice engine) {
    switch (engine) {
        case EngineChoice::Auto: return "auto";
        case EngineChoice::Uring: return "uring";
        case EngineChoice::Epoll: return "epoll";
    }
    return "?";
}

std::string_view to_string(BalanceMode mode) {
    switch (mode) {
        case BalanceMode::RoundRobin: return "rr";
        case BalanceMode::MasterStandby: return "ms";
        case BalanceMode::LeastConn: return "lc";
        case BalanceMode::Random: return "rd";
        case BalanceMode::PowerOfTwo: return "p2c";
        case BalanceMode::SourceHash: return "hs";
        case BalanceMode::ResponseTime: return "rt";
    }
    return "?";
}

std::string ConfigIssue::to_string() const {
    std::string out = file;
    if (line != 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
    if (!out.empty()) out += ": ";
    if (!key.empty()) out += key + ": ";
    return out + message;
}

namespace {
std::string join_issues(const std::vector<ConfigIssue>& issues) {
    std::string out;
    for (const auto& issue : issues) {
        if (!out.empty()) out += '\n';
        out += issue.to_string();
    }
    return out;
}
}  // namespace

ConfigError::ConfigError(std::vector<ConfigIssue> issues) : std::runtime_error(join_issues(issues)), issues_(std::move(issues)) {}

Config parse_config(std::string_view toml_text, std::string_view source_name) {
    const std::string file(source_name);
    toml::table root;
    try {
        root = toml::parse(toml_text, file);
    } catch (const toml::parse_error& error) {
        const auto& begin = error.source().begin;
        throw ConfigError({{file, begin.line, begin.column, "", std::string(error.description())}});
    }
    Validator validator(file);
    Config config = validator.run(root);
    auto issues = validator.take_issues();
    if (!issues.empty()) throw ConfigError(std::move(issues));
    return config;
}

Config load_config_file(const std::string& path) {
    std::string error;
    const std::string text = read_whole_file(path, &error);
    if (!error.empty()) throw ConfigError({{path, 0, 0, "", "cannot read: " + error}});
    return parse_config(text, path);
}

std::string summarize(const Config& config) {
    std::set<std::string> listen;
    size_t servers = 0;
    for (const auto& rule : config.rules) {
        for (const auto& address : rule.listen) listen.insert(address.to_string());
        servers += rule.servers.size();
    }
    return "ok: " + std::to_string(config.rules.size()) + " rules, " + std::to_string(listen.size()) +
           " listen addresses, " + std::to_string(servers) + " servers (" + config.source + ")";
}

}  // namespace ringlb::config
