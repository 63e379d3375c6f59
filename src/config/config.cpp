#include "ringlb/config/config.hpp"

#include <arpa/inet.h>
#include <sys/un.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <toml++/toml.h>

#include "ringlb/config/toml_guard.hpp"
#include "ringlb/config/units.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::config {
namespace {

constexpr int64_t kMaxSessions = 10'000'000;
constexpr uint64_t kMinBuffer = 1024;
constexpr uint64_t kMaxBuffer = uint64_t{64} * 1024 * 1024;
constexpr uint64_t kMinBufferMemory = uint64_t{1} * 1024 * 1024;
constexpr uint64_t kMaxBufferMemory = uint64_t{1} << 40;
constexpr int64_t kMaxWeight = 1000;
constexpr int64_t kMaxThreads = 256;
constexpr int64_t kMaxRetries = 1000;
constexpr int64_t kMaxBusyPollMicroseconds = 100000;  // 0.1 s: beyond that, sleeping costs nothing measurable
constexpr int64_t kMaxPipes = 32768;  // per worker: pipe ids are 16 bits, and each pipe is two descriptors
constexpr int64_t kMaxConnRate = 1'000'000;  // new connections per second per client IP
constexpr uint64_t kMinRate = 1024;                        // upload_rate / download_rate, bytes per second
constexpr uint64_t kMaxRate = uint64_t{100} * 1024 * 1024 * 1024;
constexpr int64_t kMinHealthCount = 1;        // rise / fall
constexpr int64_t kMaxHealthCount = 100;
constexpr std::string_view kUnixPrefix = "unix:";
constexpr std::string_view kDnsPrefix = "dns:";  // the string form of a DNS server entry
constexpr size_t kMaxHostname = 253;             // DNS limit on a name's text, without a final dot
constexpr size_t kMaxLabel = 63;
constexpr size_t kMinTokenLength = 16;  // [admin] and [metrics] tokens
constexpr std::chrono::milliseconds kMinResolveInterval{1000};  // no name is re-resolved more often
// sun_path holds the path and its terminating NUL.
constexpr size_t kMaxUnixPath = sizeof(sockaddr_un::sun_path) - 1;

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

// Values are echoed escaped: a control character in them must not reach a terminal or a log.
std::string quoted(std::string_view text) { return quoted_escaped(text); }

std::string indexed(const std::string& key, size_t index) { return key + "[" + std::to_string(index) + "]"; }

// Levenshtein distance, case-insensitive and with '-' taken as '_': how far a typo is from a key.
size_t edit_distance(std::string_view a, std::string_view b) {
    const auto same = [](char x, char y) {
        const auto fold = [](char c) { return c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
        return fold(x) == fold(y);
    };
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t substitution = diagonal + (same(a[i - 1], b[j - 1]) ? 0 : 1);
            diagonal = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitution});
        }
    }
    return row[b.size()];
}

// The known key closest to `name` when it is close enough to be a typo of it ("" otherwise):
// one edit for short names, two for longer ones, and names that differ only in case or in '-'.
std::string nearest_key(std::string_view name, std::string_view known_keys) {
    if (name.size() > 64) return {};  // no key is that long; spares the distance computation
    const size_t allowed = name.size() < 5 ? 1 : 2;
    std::string best;
    size_t best_distance = allowed + 1;
    size_t start = 0;
    while (start < known_keys.size()) {
        size_t end = known_keys.find(", ", start);
        if (end == std::string_view::npos) end = known_keys.size();
        const std::string_view key = known_keys.substr(start, end - start);
        if (const size_t distance = edit_distance(name, key); distance < best_distance) {
            best_distance = distance;
            best = std::string(key);
        }
        start = end + 2;
    }
    return best;
}

// What [admin] and [metrics] accept when `allow` is absent, and what counts as a loopback
// address for the admin hardening check: 127.0.0.0/8 and ::1 (IPv4-mapped 127.x included).
std::vector<net::ClientPattern> loopback_patterns() {
    return {*net::ClientPattern::parse("127.0.0.0/8"), *net::ClientPattern::parse("::1")};
}

bool is_loopback(const net::SocketAddress& address) {
    const auto patterns = loopback_patterns();
    return std::any_of(patterns.begin(), patterns.end(), [&](const auto& p) { return p.matches(address); });
}

bool same_listener(const ControlListen& a, const ControlListen& b) {
    if (a.unix_path.empty() != b.unix_path.empty()) return false;
    return a.unix_path.empty() ? a.address == b.address : a.unix_path == b.unix_path;
}

// Where one listen address of a rule was written, so that checks across tables can point at it.
struct ListenSite {
    net::SocketAddress address;
    std::string key;  // "rule[1].listen[0]"
    toml::source_region where;
};

// What the checks across rules need to know about one [[rule]] besides its values.
struct RuleSites {
    std::string path;  // "rule[1]"
    const toml::table* table = nullptr;
    std::vector<ListenSite> listen;
};

bool valid_rule_id(std::string_view id) {
    return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '.' || c == '-';
    });
}

// Why `name` is not a host name ("" when it is one): dot-separated labels of 1-63 letters, digits
// and hyphens, no label starting or ending with a hyphen, 253 characters at most; one final dot
// (a fully qualified name) is allowed. An IP address is refused: it needs no resolving.
std::string hostname_problem(std::string_view name) {
    if (std::string problem = control_byte_problem(name); !problem.empty()) return "the name " + problem;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    if (name.empty()) return "the name is empty";
    if (name.size() > kMaxHostname) return "the name is longer than 253 characters";
    in_addr v4{};
    if (inet_pton(AF_INET, std::string(name).c_str(), &v4) == 1)
        return "\"" + std::string(name) + "\" is an IP address: write it as address = \"IP:port\" instead";
    size_t start = 0;
    while (start <= name.size()) {
        const size_t end = std::min(name.find('.', start), name.size());
        const std::string_view label = name.substr(start, end - start);
        if (label.empty() || label.size() > kMaxLabel) return "each dot-separated label must have 1 to 63 characters";
        const bool allowed = std::all_of(label.begin(), label.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
        if (!allowed) return "a host name has only letters, digits, hyphens and dots";
        if (label.front() == '-' || label.back() == '-') return "a label must not start or end with a hyphen";
        start = end + 1;
    }
    return {};
}

struct DnsEndpoint {
    std::string name;
    uint16_t port = 0;
};

// "backend.example:9000" -> {name, port}; nullopt with the reason in *error.
std::optional<DnsEndpoint> parse_dns_endpoint(std::string_view text, std::string* error) {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
        *error = "missing port (expected name:port, e.g. backend.example:9000)";
        return std::nullopt;
    }
    const std::string_view port_text = text.substr(colon + 1);
    unsigned long port = 0;
    const bool digits = !port_text.empty() && port_text.size() <= 5 &&
                        std::all_of(port_text.begin(), port_text.end(), [](unsigned char c) { return std::isdigit(c); });
    if (digits) port = std::stoul(std::string(port_text));
    if (!digits || port < 1 || port > 65535) {
        *error = "invalid port '" + escaped(port_text) + "' (expected 1..65535)";
        return std::nullopt;
    }
    const std::string_view name = text.substr(0, colon);
    if (std::string problem = hostname_problem(name); !problem.empty()) {
        *error = "invalid host name '" + escaped(name) + "': " + problem;
        return std::nullopt;
    }
    return DnsEndpoint{std::string(name), static_cast<uint16_t>(port)};
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
            else if (name == "admin") read_admin(node, config.admin);
            else if (name == "metrics") read_metrics(node, config.metrics);
            else
                report_unknown_table(name);
        }
        if (!root.contains("rule")) report(root.source(), "rule", "no [[rule]] defined");
        index_listeners();
        check_accept_proxy_agreement(config.rules);
        warn_about_unreachable_rules(config.rules);
        warn_about_open_proxy_headers(config.rules);
        warn_about_zero_copy_without_pipes(config);
        check_control_listener_clashes(config);
        return config;
    }

    // A document holding one key `rule_key` whose value is a single rule table (parse_rule_inline).
    RuleConfig run_single_rule(const toml::table& root, std::string_view rule_key) {
        RuleConfig rule;
        for (auto&& [name, node] : root) {
            const std::string key(name.str());
            if (name != rule_key) {
                report(name.source(), key, "unexpected text after the rule's inline table");
            } else if (const auto* table = node.as_table()) {
                RuleSites unused_sites;  // no other rules to compare listeners with
                rule = read_rule(*table, key, unused_sites);
            } else {
                report_type(node, key, "an inline table such as { id = \"x\", listen = [...], servers = [...] }");
            }
        }
        if (!root.contains(rule_key)) report(root.source(), std::string(rule_key), "no rule given");
        return rule;
    }

    void report_unknown_table(const toml::key& name) {
        const std::string nearest = nearest_key(name.str(), "global, rule, admin, metrics");
        const std::string table = nearest == "rule" ? "[[rule]]" : "[" + nearest + "]";
        report(name.source(), std::string(name.str()),
               "unknown top-level key" + (nearest.empty() ? std::string() : "; did you mean " + table + "?") +
                   " (expected [global], [[rule]], [admin] or [metrics])");
    }

    std::vector<ConfigIssue> take_warnings() { return sorted_by_position(std::move(warnings_)); }

    std::vector<ConfigIssue> take_issues() { return sorted_by_position(std::move(issues_)); }

private:
    // toml++ iterates tables in key order; report in file order instead (unknown positions last).
    static std::vector<ConfigIssue> sorted_by_position(std::vector<ConfigIssue> issues) {
        std::stable_sort(issues.begin(), issues.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
            auto position = [](const ConfigIssue& i) { return std::pair(i.line == 0 ? ~0u : i.line, i.column); };
            return position(a) < position(b);
        });
        return issues;
    }

    void report(const toml::source_region& where, const std::string& key, std::string message) {
        // A quoted TOML key may hold any character: escaped like values.
        issues_.push_back({file_, where.begin.line, where.begin.column, escaped(key), std::move(message)});
    }

    void report_unknown_key(const toml::key& name, const std::string& key, std::string_view expected) {
        const std::string nearest = nearest_key(name.str(), expected);
        report(name.source(), key,
               "unknown key" + (nearest.empty() ? std::string() : "; did you mean " + nearest + "?") +
                   " (expected one of: " + std::string(expected) + ")");
    }

    void warn(const toml::source_region& where, const std::string& key, std::string message) {
        warnings_.push_back({file_, where.begin.line, where.begin.column, escaped(key), std::move(message)});
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

    // For values where an empty string or a control character could only be a mistake (a path, a
    // user name, a token). `secret`: the value is never echoed in a message.
    std::optional<std::string> read_name_string(const toml::node& node, const std::string& key, bool secret = false) {
        auto text = read_string(node, key);
        if (!text) return std::nullopt;
        if (text->empty()) {
            report(node.source(), key, "must not be empty (leave the key out instead)");
            return std::nullopt;
        }
        if (const std::string problem = control_byte_problem(*text); !problem.empty()) {
            report(node.source(), key, (secret ? "the value " : quoted(*text) + " ") + problem +
                                           " (paths, names and tokens must not hold control characters)");
            return std::nullopt;
        }
        return text;
    }

    void read_nonempty_string(const toml::node& node, const std::string& key, std::string& out) {
        if (auto text = read_name_string(node, key)) out = std::move(*text);
    }

    // [admin] and [metrics] tokens: long enough that guessing is hopeless, never echoed.
    void read_token(const toml::node& node, const std::string& key, std::string& out) {
        auto token = read_name_string(node, key, true);
        if (!token) return;
        const bool blank = std::all_of(token->begin(), token->end(), [](unsigned char c) { return std::isspace(c); });
        if (blank) return report(node.source(), key, "is only whitespace: use at least 16 random characters");
        if (token->size() < kMinTokenLength)
            return report(node.source(), key,
                          "is " + std::to_string(token->size()) + " characters long: use at least " +
                              std::to_string(kMinTokenLength) + " (e.g. the output of `openssl rand -hex 16`)");
        out = std::move(*token);
    }

    std::optional<bool> read_bool(const toml::node& node, const std::string& key) {
        if (const auto* value = node.as_boolean()) return value->get();
        report_type(node, key, "a boolean");
        return std::nullopt;
    }

    void read_bool_into(const toml::node& node, const std::string& key, bool& out) {
        if (const auto value = read_bool(node, key)) out = *value;
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
            } else if (name == "max_handshakes") {
                if (auto n = read_integer(value, key, 1, kMaxSessions)) global.max_handshakes = static_cast<uint32_t>(*n);
            } else if (name == "buffer_size") {
                if (auto n = read_size(value, key, kMinBuffer, kMaxBuffer)) global.buffer_size = static_cast<uint32_t>(*n);
            } else if (name == "receive_buffers") {
                read_receive_buffers(value, key, global.receive_buffers);
            } else if (name == "max_buffer_memory") {
                if (auto n = read_size(value, key, kMinBufferMemory, kMaxBufferMemory)) global.max_buffer_memory = *n;
            } else if (name == "multishot_recv") read_bool_into(value, key, global.multishot_recv);
            else if (name == "max_pipes") {
                if (auto n = read_integer(value, key, 0, kMaxPipes)) global.max_pipes = static_cast<uint32_t>(*n);
            } else if (name == "busy_poll_us") {
                if (auto n = read_integer(value, key, 0, kMaxBusyPollMicroseconds))
                    global.busy_poll = std::chrono::microseconds(*n);
            }
            else if (name == "log_level") read_log_level(value, key, global.log_level);
            else if (name == "shutdown_timeout") {
                // 0 is a real choice: close every session at once on SIGTERM.
                if (auto d = read_timeout(value, key, true)) global.shutdown_timeout = *d;
            } else if (name == "log_connections") read_bool_into(value, key, global.log_connections);
            else if (name == "log_format") read_log_format(value, key, global.log_format);
            else if (name == "log_file") read_nonempty_string(value, key, global.log_file);
            else if (name == "user") read_nonempty_string(value, key, global.user);
            else if (name == "resolvers") read_resolvers(value, key, global.resolvers);
            else report_unknown_key(name, key,
                                    "engine, threads, max_sessions, max_sessions_per_ip, max_handshakes, buffer_size, receive_buffers, "
                                    "max_buffer_memory, multishot_recv, max_pipes, busy_poll_us, log_level, shutdown_timeout, log_connections, log_format, log_file, user, "
                                    "resolvers");
        }
    }

    void read_log_format(const toml::node& node, const std::string& key, LogFormat& format) {
        const auto text = read_string(node, key);
        if (!text) return;
        const std::string name = lowercase(*text);
        if (name == "text") format = LogFormat::Text;
        else if (name == "json") format = LogFormat::Json;
        else report(node.source(), key, "unknown log format " + quoted(*text) + " (supported: text, json)");
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

    // The DNS servers that resolve dns entries, as "IP:port" ("127.0.0.1:53", "[::1]:5353").
    void read_resolvers(const toml::node& node, const std::string& key, std::vector<net::SocketAddress>& resolvers) {
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto address = read_address(item, item_key);
            if (!address) return;
            if (address->port() == 0) return report(item.source(), item_key, "port must be 1..65535 (DNS is port 53)");
            resolvers.push_back(*address);
        });
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
            const auto* table = item.as_table();
            if (!table) {
                report_type(item, key, "a table");
                continue;
            }
            RuleSites sites;
            rules.push_back(read_rule(*table, key, sites));
            rule_sites_.push_back(std::move(sites));  // parallel to rules
        }
    }

    // One rule, whether from a [[rule]] of a file or from parse_rule_inline().
    RuleConfig read_rule(const toml::table& table, const std::string& path, RuleSites& sites) {
        RuleConfig rule;
        sites.path = path;
        sites.table = &table;
        for (auto&& [name, value] : table) {
            const std::string key = path + "." + std::string(name.str());
            if (name == "id") read_rule_id(value, key, rule.id);
            else if (name == "mode") read_mode(value, key, rule.mode);
            else if (name == "listen") read_listen(value, key, rule.listen, sites.listen);
            else if (name == "clients") read_clients(value, key, rule.clients);
            else if (name == "max_clients") {
                if (auto n = read_integer(value, key, 0, kMaxSessions)) rule.max_clients = static_cast<uint32_t>(*n);
            } else if (name == "max_sessions_per_ip") {
                if (auto n = read_integer(value, key, 0, kMaxSessions)) rule.max_sessions_per_ip = static_cast<uint32_t>(*n);
            } else if (name == "max_conn_rate_per_ip") {
                if (auto n = read_integer(value, key, 0, kMaxConnRate)) rule.max_conn_rate_per_ip = static_cast<uint32_t>(*n);
            } else if (name == "upload_rate") read_rate(value, key, rule.upload_rate);
            else if (name == "download_rate") read_rate(value, key, rule.download_rate);
            else if (name == "deny") read_clients(value, key, rule.deny);
            else if (name == "timeout") {
                // 0: no idle timeout (as a G5 rule without `timeout`).
                if (auto d = read_timeout(value, key, true)) rule.timeout = *d;
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
            } else if (name == "queue") {
                if (auto n = read_integer(value, key, 0, kMaxSessions)) rule.queue = static_cast<uint32_t>(*n);
            } else if (name == "queue_timeout") {
                if (auto d = read_timeout(value, key)) rule.queue_timeout = *d;
            } else if (name == "failback") read_bool_into(value, key, rule.failback);
            else if (name == "send_proxy") read_send_proxy(value, key, rule.send_proxy);
            else if (name == "zero_copy") read_zero_copy(value, key, rule.zero_copy);
            else if (name == "accept_proxy") read_bool_into(value, key, rule.accept_proxy);
            else if (name == "proxy_from") read_clients(value, key, rule.proxy_from);
            else if (name == "sni") read_server_names(value, key, rule.sni);
            else if (name == "alpn") read_alpn_protocols(value, key, rule.alpn);
            else if (name == "health") read_health(value, key, rule.health);
            else if (name == "server_histograms") rule.server_histograms = read_bool(value, key);
            else if (name == "source") read_source(value, key, rule.source);
            else if (name == "freebind") read_bool_into(value, key, rule.freebind);
            else if (name == "servers") read_servers(value, key, rule.servers);
            else report_unknown_key(name, key, "id, mode, listen, clients, deny, max_clients, max_sessions_per_ip, "
                                               "max_conn_rate_per_ip, upload_rate, download_rate, timeout, "
                                               "connect_timeout, down_time, "
                                               "max_down_time, slow_start, retries, queue, queue_timeout, failback, send_proxy, "
                                               "zero_copy, accept_proxy, proxy_from, health, server_histograms, servers, sni, alpn, "
                                               "source, freebind");
        }
        if (!table.contains("id")) report(table.source(), path + ".id", "missing required key id");
        if (!table.contains("listen")) report(table.source(), path + ".listen", "missing required key listen");
        if (!table.contains("servers")) report(table.source(), path + ".servers", "rule has no servers (servers is required)");
        if (const toml::node* queue = table.get("queue"); queue && rule.queue > 0 &&
            std::none_of(rule.servers.begin(), rule.servers.end(),
                         [](const ServerConfig& server) { return server.max_connections != 0; }))
            warn(queue->source(), path + ".queue",
                 "has no effect: no server of the rule has max_connections, so none is ever full");
        if (const toml::node* timeout = table.get("queue_timeout"); timeout && rule.queue == 0)
            warn(timeout->source(), path + ".queue_timeout", "has no effect without queue");
        if (!rule.proxy_from.empty() && !rule.accept_proxy)
            report(table.get("proxy_from")->source(), path + ".proxy_from",
                   "applies only with accept_proxy = true (it lists the peers allowed to send a PROXY header)");
        check_source_families(table, path, rule);
        if (rule.max_down_time < rule.down_time) {
            const toml::node* where = table.get("max_down_time");
            report(where ? where->source() : table.source(), path + ".max_down_time",
                   "must not be less than down_time (" + std::to_string(rule.max_down_time.count()) + " ms < " +
                       std::to_string(rule.down_time.count()) + " ms)");
        }
        return rule;
    }

    // sni: host names as clients send them in the ClientHello, lower-cased; "*." may only lead.
    void read_server_names(const toml::node& node, const std::string& key, std::vector<std::string>& names) {
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto text = read_string(item, item_key);
            if (!text) return;
            const std::string name = lowercase(*text);
            if (const std::string error = server_name_error(name); !error.empty())
                report(item.source(), item_key, "server name " + quoted(*text) + " " + error);
            else if (std::find(names.begin(), names.end(), name) != names.end())
                report(item.source(), item_key, "duplicate server name " + quoted(*text));
            else names.push_back(name);
        });
    }

    // Why `name` (lower-case) can never equal a server name a client sends, or "" if it can.
    static std::string server_name_error(const std::string& name) {
        constexpr size_t kMaxHostName = 253;
        if (name.empty()) return "is empty";
        if (name.size() > kMaxHostName) return "is longer than 253 characters";
        const std::string_view host = name.starts_with("*.") ? std::string_view(name).substr(2) : std::string_view(name);
        if (host.empty()) return "has nothing after \"*.\"";
        if (host.find('*') != std::string_view::npos)
            return "has a \"*\" that is not a leading \"*.\" (a wildcard stands for exactly one leading label)";
        for (const char c : host)
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
                return "holds a character other than letters, digits, '-', '_' and '.'";
        if (host.front() == '.' || host.back() == '.' || host.find("..") != std::string_view::npos)
            return "has an empty label (a leading, trailing or doubled '.')";
        return "";
    }

    // alpn: protocol ids as registered with IANA ("h2", "http/1.1"), compared exactly.
    void read_alpn_protocols(const toml::node& node, const std::string& key, std::vector<std::string>& protocols) {
        constexpr size_t kMaxProtocol = 255;
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto text = read_string(item, item_key);
            if (!text) return;
            const bool printable = std::all_of(text->begin(), text->end(), [](char c) { return c > 0x20 && c < 0x7F; });
            if (text->empty() || text->size() > kMaxProtocol || !printable)
                report(item.source(), item_key, "ALPN protocol " + quoted(*text) +
                                                    " must be 1 to 255 printable characters without spaces, "
                                                    "e.g. \"h2\" or \"http/1.1\"");
            else if (std::find(protocols.begin(), protocols.end(), *text) != protocols.end())
                report(item.source(), item_key, "duplicate ALPN protocol " + quoted(*text));
            else protocols.push_back(*text);
        });
    }

    // upload_rate / download_rate: a size per second ("1m" = 1 MiB/s), 0 = unlimited.
    void read_rate(const toml::node& node, const std::string& key, uint64_t& rate) {
        std::optional<uint64_t> bytes;
        std::string shown;
        if (const auto* text = node.as_string()) {
            shown = quoted(text->get());
            bytes = parse_size(text->get());
        } else if (const auto* integer = node.as_integer()) {
            shown = std::to_string(integer->get());
            if (integer->get() >= 0) bytes = static_cast<uint64_t>(integer->get());
        } else {
            return report_type(node, key, "a size per second such as \"1m\" or an integer number of bytes per second");
        }
        if (!bytes || (*bytes != 0 && (*bytes < kMinRate || *bytes > kMaxRate)))
            return report(node.source(), key,
                          "must be 0 (unlimited) or a size per second between 1k and 100g (e.g. \"512k\", \"10m\"), got " +
                              shown);
        rate = *bytes;
    }

    void read_source(const toml::node& node, const std::string& key, SourceConfig& source) {
        const auto text = read_string(node, key);
        if (!text) return;
        std::string error;
        if (auto parsed = parse_source(*text, &error)) source = *parsed;
        else report(node.source(), key, "bad source " + quoted(*text) + ": " + error);
    }

    // A socket binds only an address of its own family: an IPv4 source cannot reach an IPv6
    // server. (A dns entry's addresses are known only once resolved; a mismatch there fails its
    // connects, logged.)
    void check_source_families(const toml::table& table, const std::string& path, const RuleConfig& rule) {
        for (size_t i = 0; i < rule.servers.size(); ++i) {
            const ServerConfig& server = rule.servers[i];
            const SourceConfig& source = server.source.enabled() ? server.source : rule.source;
            if (server.is_dns() || !source.enabled() || source.address.family() == server.address.family()) continue;
            const toml::node* where = table.get(server.source.enabled() ? "servers" : "source");
            report(where ? where->source() : table.source(),
                   server.source.enabled() ? path + ".servers" : path + ".source",
                   "source " + source.to_string() + " and server " + server.address.to_string() +
                       " are of different address families");
            return;
        }
    }

    // A server's name: a letter first, so that it never reads as an address.
    void read_server_name(const toml::node& node, const std::string& key, std::string& name) {
        const auto text = read_string(node, key);
        if (!text) return;
        if (!valid_server_name(*text))
            return report(node.source(), key,
                          "invalid server name " + quoted(*text) +
                              " (1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter)");
        name = *text;
    }

    void read_send_proxy(const toml::node& node, const std::string& key, ProxyProtocol& version) {
        const auto text = read_string(node, key);
        if (!text) return;
        const std::string name = lowercase(*text);
        if (name == "off") version = ProxyProtocol::Off;
        else if (name == "v1") version = ProxyProtocol::V1;
        else if (name == "v2") version = ProxyProtocol::V2;
        else report(node.source(), key, "unknown PROXY protocol version " + quoted(*text) + " (supported: v1, v2, off)");
    }

    void read_zero_copy(const toml::node& node, const std::string& key, ZeroCopy& mode) {
        const auto text = read_string(node, key);
        if (!text) return;
        const std::string name = lowercase(*text);
        if (name == "auto") mode = ZeroCopy::Auto;
        else if (name == "splice") mode = ZeroCopy::Splice;
        else if (name == "off") mode = ZeroCopy::Off;
        else report(node.source(), key, "unknown zero_copy mode " + quoted(*text) + " (supported: auto, splice, off)");
    }

    // ---- [rule.health] ----

    void read_health(const toml::node& node, const std::string& path, HealthCheckConfig& health) {
        const auto* table = node.as_table();
        if (!table) return report_type(node, path, "a table [rule.health]");
        health.enabled = true;  // the table itself switches active checks on; every key has a default
        for (auto&& [name, value] : *table) {
            const std::string key = path + "." + std::string(name.str());
            if (name == "interval") {
                if (auto d = read_timeout(value, key)) health.interval = *d;
            } else if (name == "timeout") {
                if (auto d = read_timeout(value, key)) health.timeout = *d;
            } else if (name == "rise") {
                if (auto n = read_integer(value, key, kMinHealthCount, kMaxHealthCount)) health.rise = static_cast<unsigned>(*n);
            } else if (name == "fall") {
                if (auto n = read_integer(value, key, kMinHealthCount, kMaxHealthCount)) health.fall = static_cast<unsigned>(*n);
            } else if (name == "send") {
                if (auto text = read_string(value, key)) health.send = std::move(*text);
            } else if (name == "expect") {
                if (auto text = read_string(value, key)) health.expect = std::move(*text);
            } else {
                report_unknown_key(name, key, "interval, timeout, rise, fall, send, expect");
            }
        }
        fit_health_timeout(*table, path, health);
    }

    // A check must end before the next one starts. An explicit timeout longer than the interval is
    // an error; the default timeout (1s) shrinks to a shorter interval rather than making
    // `interval = "500ms"` alone an error about a key the user never wrote.
    void fit_health_timeout(const toml::table& table, const std::string& path, HealthCheckConfig& health) {
        const toml::node* timeout = table.get("timeout");
        if (!timeout) {
            health.timeout = std::min(health.timeout, health.interval);
            return;
        }
        if (health.timeout > health.interval)
            report(timeout->source(), path + ".timeout",
                   "must not be longer than interval (" + std::to_string(health.timeout.count()) + " ms > " +
                       std::to_string(health.interval.count()) + " ms)");
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

    // `sites` gets one entry per accepted address (parallel to listen) for the checks across tables.
    void read_listen(const toml::node& node, const std::string& key, std::vector<net::SocketAddress>& listen,
                     std::vector<ListenSite>& sites) {
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto address = read_address(item, item_key);
            if (!address) return;
            const auto same = std::find(listen.begin(), listen.end(), *address);
            if (same != listen.end()) {
                // Across rules a shared listener is fine; twice in one rule is a typo.
                report(item.source(), item_key, "duplicate listen address " + address->to_string() + " in this rule (also " +
                                                    sites[static_cast<size_t>(same - listen.begin())].key + ")");
                return;
            }
            listen.push_back(*address);
            sites.push_back({*address, item_key, item.source()});
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
        ServerSites sites;  // for the duplicate check, linear in the number of servers
        for_each_item(node, key, [&](const toml::node& item, const std::string& item_key) {
            const auto* text = item.as_string();
            std::optional<ServerConfig> server;
            if (text && text->get().starts_with(kDnsPrefix)) {
                ServerConfig entry;
                if (read_dns(item, std::string_view(text->get()).substr(kDnsPrefix.size()), item_key, entry)) server = entry;
            } else if (text) {
                if (auto address = read_server_address(item, item_key, "\"dns:")) server = ServerConfig{*address, 1};
            } else if (const auto* table = item.as_table()) {
                server = read_server_table(*table, item_key);
            } else {
                report_type(item, item_key,
                            "an address string, \"dns:name:port\" or a table { address = ..., weight = ... }");
            }
            if (!server) return;
            if (!server->name.empty()) {
                const auto [first, added] = sites.names.emplace(server->name, item_key);
                if (!added)
                    return report(item.source(), item_key + ".name",
                                  "duplicate server name " + quoted(server->name) + " in this rule (also " +
                                      first->second + ")");
            }
            warn_if_listed_before(*server, item, item_key, sites);
            servers.push_back(std::move(*server));
        });
        report_names_taken_by_dns_entries(node, key, servers);
        warn_if_all_weights_zero(node, key, servers);
    }

    // A named dns entry "web" names its servers web1, web2, ...: a server with a fixed address
    // may not take one of those names.
    void report_names_taken_by_dns_entries(const toml::node& node, const std::string& key,
                                           const std::vector<ServerConfig>& servers) {
        std::unordered_set<std::string> bases;
        for (const ServerConfig& server : servers)
            if (server.is_dns() && !server.name.empty()) bases.insert(server.name);
        if (bases.empty()) return;
        for (const ServerConfig& server : servers) {
            if (server.is_dns() || server.name.empty()) continue;
            const size_t digits = server.name.find_last_not_of("0123456789") + 1;
            if (digits < server.name.size() && bases.contains(server.name.substr(0, digits)))
                report(node.source(), key,
                       "server name " + quoted(server.name) + " is one the dns entry named " +
                           quoted(server.name.substr(0, digits)) + " gives its servers");
        }
    }

    // Where each server of one rule was first written: address (or dns name:port) -> its key.
    struct ServerSites {
        std::unordered_map<net::SocketAddress, std::string, net::SocketAddressHash> addresses;
        std::unordered_map<std::string, std::string> dns;
        std::unordered_map<std::string, std::string> names;  // server names -> key
    };

    // The second entry for one address is ignored: the rule has the server once.
    void warn_if_listed_before(const ServerConfig& server, const toml::node& item, const std::string& key,
                               ServerSites& sites) {
        const std::string* first = nullptr;
        if (server.is_dns()) {
            const auto [entry, added] = sites.dns.emplace(server.dns_endpoint(), key);
            if (!added) first = &entry->second;
        } else {
            const auto [entry, added] = sites.addresses.emplace(server.address, key);
            if (!added) first = &entry->second;
        }
        if (!first) return;
        const std::string what = server.is_dns() ? "dns:" + server.dns_endpoint() : server.address.to_string();
        warn(item.source(), key,
             "duplicate server " + what + " (also " + *first + "): the rule uses it once, with the first "
             "entry's settings");
    }

    void warn_if_all_weights_zero(const toml::node& node, const std::string& key, const std::vector<ServerConfig>& servers) {
        if (servers.empty() || !std::all_of(servers.begin(), servers.end(), [](const ServerConfig& s) { return s.weight == 0; }))
            return;
        warn(node.source(), key,
             "every server has weight 0, so this rule takes no new session (give one a weight, or `set weight` at runtime)");
    }

    // A server address; a host name gets a hint at the form that resolves it (`dns_form` opens it).
    std::optional<net::SocketAddress> read_server_address(const toml::node& node, const std::string& key,
                                                          std::string_view dns_form) {
        const auto* text = node.as_string();
        if (text && !net::SocketAddress::parse(text->get())) {
            std::string unused;
            if (parse_dns_endpoint(text->get(), &unused)) {
                report(node.source(), key,
                       "bad address " + quoted(text->get()) + ": a host name needs the dns form, " +
                           std::string(dns_form) + escaped(text->get()) +
                           "\" (resolved in the background; each of its addresses is a server)");
                return std::nullopt;
            }
        }
        return read_address(node, key);
    }

    std::optional<ServerConfig> read_server_table(const toml::table& table, const std::string& path) {
        ServerConfig server;
        bool ok = true;
        for (auto&& [name, value] : table) {
            const std::string key = path + "." + std::string(name.str());
            if (name == "address") {
                auto address = read_server_address(value, key, "dns = \"");
                if (address) server.address = *address;
                ok = ok && address.has_value();
            } else if (name == "dns") {
                const auto text = read_string(value, key);
                ok = text && read_dns(value, *text, key, server) && ok;
            } else if (name == "resolve_interval") {
                const auto interval = read_resolve_interval(value, key);
                if (interval) server.resolve_interval = *interval;
                ok = ok && interval.has_value();
            } else if (name == "weight") {
                auto weight = read_integer(value, key, 0, kMaxWeight);
                if (weight) server.weight = static_cast<unsigned>(*weight);
                ok = ok && weight.has_value();
            } else if (name == "backup") {
                auto backup = read_bool(value, key);
                if (backup) server.backup = *backup;
                ok = ok && backup.has_value();
            } else if (name == "name") {
                read_server_name(value, key, server.name);
                ok = ok && !server.name.empty();
            } else if (name == "source") {
                read_source(value, key, server.source);
                ok = ok && server.source.enabled();
            } else if (name == "max_connections") {
                auto limit = read_integer(value, key, 0, kMaxSessions);
                if (limit) server.max_connections = static_cast<uint32_t>(*limit);
                ok = ok && limit.has_value();
            } else {
                report_unknown_key(name, key,
                                   "address, weight, backup, max_connections, dns, resolve_interval, name, source");
                ok = false;
            }
        }
        return check_server_kind(table, path, server, ok) ? std::optional(server) : std::nullopt;
    }

    // A server table names exactly one of `address` (one server) and `dns` (a name's addresses);
    // resolve_interval only makes sense with dns.
    bool check_server_kind(const toml::table& table, const std::string& path, const ServerConfig& server, bool ok) {
        const bool address = table.contains("address"), dns = table.contains("dns");
        if (address && dns) {
            report(table.get("dns")->source(), path + ".dns",
                   "address and dns exclude each other (address is one server, dns every address of a name)");
            return false;
        }
        if (!address && !dns) {
            report(table.source(), path + ".address", "missing required key address (or dns = \"name:port\")");
            return false;
        }
        if (dns && !server.name.empty() && !valid_dns_server_name(server.name)) {
            report(table.get("name")->source(), path + ".name",
                   "a dns entry's name " + quoted(server.name) +
                       " names its servers " + server.name + "1, " + server.name +
                       "2, ...: it may not end in a digit and has at most 58 characters");
            return false;
        }
        if (address && table.contains("resolve_interval")) {
            report(table.get("resolve_interval")->source(), path + ".resolve_interval",
                   "applies to dns entries only (this server has a fixed address)");
            return false;
        }
        return ok;
    }

    // "name:port" of a dns entry, from { dns = ... } or "dns:..." (`text` without the prefix).
    bool read_dns(const toml::node& node, std::string_view text, const std::string& key, ServerConfig& server) {
        std::string error;
        const auto endpoint = parse_dns_endpoint(text, &error);
        if (!endpoint) {
            report(node.source(), key, "bad dns entry " + quoted(text) + ": " + error);
            return false;
        }
        server.dns_name = endpoint->name;
        server.dns_port = endpoint->port;
        return true;
    }

    std::optional<std::chrono::milliseconds> read_resolve_interval(const toml::node& node, const std::string& key) {
        const auto interval = read_timeout(node, key);
        if (interval && *interval < kMinResolveInterval) {
            report(node.source(), key, "must be at least 1s (got " + std::to_string(interval->count()) + " ms)");
            return std::nullopt;
        }
        return interval;
    }

    // ---- [admin] and [metrics] ----

    void read_admin(const toml::node& node, AdminConfig& admin) {
        const auto* table = node.as_table();
        if (!table) return report_type(node, "admin", "a table [admin]");
        for (auto&& [name, value] : *table) {
            const std::string key = "admin." + std::string(name.str());
            if (name == "listen") admin_site_ = read_control_listen(value, key, admin.listen);
            else if (name == "allow") read_clients(value, key, admin.allow);
            else if (name == "token") read_token(value, key, admin.token);
            else if (name == "insecure") read_bool_into(value, key, admin.insecure);
            else report_unknown_key(name, key, "listen, allow, token, insecure");
        }
        finish_control_table(*table, "admin", admin.allow);
        check_admin_exposure(admin);
    }

    void read_metrics(const toml::node& node, MetricsConfig& metrics) {
        const auto* table = node.as_table();
        if (!table) return report_type(node, "metrics", "a table [metrics]");
        for (auto&& [name, value] : *table) {
            const std::string key = "metrics." + std::string(name.str());
            if (name == "listen") metrics_site_ = read_control_listen(value, key, metrics.listen);
            else if (name == "allow") read_clients(value, key, metrics.allow);
            else if (name == "token") read_token(value, key, metrics.token);
            else report_unknown_key(name, key, "listen, allow, token");
        }
        finish_control_table(*table, "metrics", metrics.allow);
    }

    void finish_control_table(const toml::table& table, const std::string& name, std::vector<net::ClientPattern>& allow) {
        if (!table.contains("listen")) report(table.source(), name + ".listen", "missing required key listen");
        if (!table.contains("allow")) allow = loopback_patterns();
    }

    // "unix:/abs/path" or an address as for rule listeners. Returns where it was written (for the
    // clash checks) when it is valid.
    std::optional<ListenSite> read_control_listen(const toml::node& node, const std::string& key, ControlListen& listen) {
        const auto* text = node.as_string();
        if (text && text->get().starts_with(kUnixPrefix)) {
            std::string path = text->get().substr(kUnixPrefix.size());
            if (const std::string problem = control_byte_problem(path); !problem.empty()) {
                report(node.source(), key, "unix socket path " + quoted(path) + " " + problem);
                return std::nullopt;
            }
            if (path.empty() || path.front() != '/') {
                report(node.source(), key, "unix socket path must be absolute, as in \"unix:/run/ringlb.sock\"");
                return std::nullopt;
            }
            if (path.size() > kMaxUnixPath) {
                report(node.source(), key, "unix socket path is longer than " + std::to_string(kMaxUnixPath) +
                                               " bytes, the limit of a socket address");
                return std::nullopt;
            }
            listen = {true, {}, std::move(path)};
            return ListenSite{{}, key, node.source()};
        }
        const auto address = read_address(node, key);
        if (!address) return std::nullopt;
        listen = {true, *address, {}};
        return ListenSite{*address, key, node.source()};
    }

    // The admin port can change rules and drain servers: reachable from other machines it needs a
    // token, unless the operator explicitly accepts the risk (e.g. a firewalled management network).
    void check_admin_exposure(const AdminConfig& admin) {
        if (!admin_site_ || !admin.listen.unix_path.empty()) return;
        if (is_loopback(admin.listen.address) || !admin.token.empty() || admin.insecure) return;
        report(admin_site_->where, admin_site_->key,
               admin.listen.address.to_string() +
                   " is not a loopback address and [admin] has no token, so anyone who can reach it could change "
                   "rules and drain servers; set token = \"...\" (clients then send \"auth <token>\" first), listen on "
                   "127.0.0.1, ::1 or a unix: path, or set insecure = true to accept the risk");
    }

    // ---- checks across tables ----

    // Rules sharing a listen address share its socket, and whether clients start with a PROXY header,
    // and from which peers, is decided per socket: the first rule on an address sets it, later ones
    // must agree.
    void check_accept_proxy_agreement(const std::vector<RuleConfig>& rules) {
        for (size_t later = 0; later < rules.size(); ++later) {
            for (const ListenSite& site : rule_sites_[later].listen) {
                const auto earlier = first_rule_listening_on(site.address, later);
                if (!earlier) continue;
                if (rules[*earlier].accept_proxy != rules[later].accept_proxy) {
                    report_accept_proxy_disagreement(rules, *earlier, later, site);
                    break;  // one report per rule: the fix (its accept_proxy) is the same for every listener
                }
                if (same_patterns(rules[*earlier].proxy_from, rules[later].proxy_from)) continue;
                report_proxy_from_disagreement(rules, *earlier, later, site);
                break;
            }
        }
    }

    // The first rule listening on each address, so that the checks across rules stay linear in
    // the number of rules (a file may have thousands).
    void index_listeners() {
        first_listener_.clear();
        for (size_t i = 0; i < rule_sites_.size(); ++i)
            for (const ListenSite& site : rule_sites_[i].listen) first_listener_.emplace(site.address, i);
    }

    // A rule that takes every client (no clients, or "*"; no deny): later rules on its listen
    // addresses never see a client there.
    static bool takes_everyone(const RuleConfig& rule) {
        return rule.deny.empty() && rule.sni.empty() && rule.alpn.empty() && (rule.clients.empty() || std::any_of(rule.clients.begin(), rule.clients.end(),
                                                                          [](const auto& p) { return p.matches_everyone(); }));
    }

    // A rule whose every listen address has an earlier rule taking every client can never match:
    // valid, but almost surely rules in the wrong order or a forgotten `clients`.
    void warn_about_unreachable_rules(const std::vector<RuleConfig>& rules) {
        std::unordered_map<net::SocketAddress, size_t, net::SocketAddressHash> taken;  // address -> first such rule
        for (size_t later = 0; later < rules.size(); ++later) {
            const std::vector<ListenSite>& listen = rule_sites_[later].listen;
            std::optional<std::pair<size_t, net::SocketAddress>> shadow;
            bool every_address = !listen.empty();
            for (const ListenSite& site : listen) {
                const auto earlier = taken.find(site.address);
                if (earlier == taken.end()) {
                    every_address = false;
                    break;
                }
                if (!shadow) shadow = std::pair(earlier->second, site.address);
            }
            if (every_address && shadow) report_unreachable(rules, *shadow, later);
            if (takes_everyone(rules[later]))
                for (const ListenSite& site : listen) taken.emplace(site.address, later);
        }
    }

    // The same patterns in any order (as written: "10.0.0.1" and "10.0.0.1/32" differ).
    static bool same_patterns(const std::vector<net::ClientPattern>& a, const std::vector<net::ClientPattern>& b) {
        std::vector<std::string> a_texts, b_texts;
        for (const auto& pattern : a) a_texts.push_back(pattern.text());
        for (const auto& pattern : b) b_texts.push_back(pattern.text());
        std::sort(a_texts.begin(), a_texts.end());
        std::sort(b_texts.begin(), b_texts.end());
        return a_texts == b_texts;
    }

    static std::string pattern_list(const std::vector<net::ClientPattern>& patterns) {
        if (patterns.empty()) return "none (any peer)";
        std::string out = "[";
        for (size_t i = 0; i < patterns.size(); ++i) out += (i == 0 ? "" : ", ") + quoted(patterns[i].text());
        return out + "]";
    }

    void report_proxy_from_disagreement(const std::vector<RuleConfig>& rules, size_t earlier, size_t later,
                                        const ListenSite& shared) {
        const RuleSites& sites = rule_sites_[later];
        const toml::node* proxy_from = sites.table->get("proxy_from");
        report(proxy_from ? proxy_from->source() : shared.where, proxy_from ? sites.path + ".proxy_from" : shared.key,
               "proxy_from = " + pattern_list(rules[later].proxy_from) + " disagrees with rule " +
                   quoted(rules[earlier].id) + " (" + rule_sites_[earlier].path + "), which also listens on " +
                   shared.address.to_string() + " with proxy_from = " + pattern_list(rules[earlier].proxy_from) +
                   "; who may send a PROXY header is decided per listening socket, so every rule on it must list "
                   "the same peers");
    }

    // accept_proxy without proxy_from: valid (a PROXY header from any peer, as before proxy_from
    // existed), but any client that can connect may then claim any address.
    void warn_about_open_proxy_headers(const std::vector<RuleConfig>& rules) {
        for (size_t i = 0; i < rules.size(); ++i) {
            const RuleConfig& rule = rules[i];
            if (!rule.accept_proxy || !rule.proxy_from.empty()) continue;
            std::string listen;
            for (const auto& address : rule.listen) listen += (listen.empty() ? "" : ", ") + address.to_string();
            warn(rule_sites_[i].table->source(), rule_sites_[i].path,
                 "rule " + quoted(rule.id) + ": accept_proxy = true without proxy_from: any client that can connect to " +
                     listen + " may send a PROXY header and claim any address (for clients, deny, limits and logs); "
                     "list your load balancers in proxy_from");
        }
    }

    // Valid, but a rule asking for the splice path gets none when no worker may hold a pipe.
    void warn_about_zero_copy_without_pipes(const Config& config) {
        if (config.global.max_pipes != 0) return;
        for (size_t i = 0; i < config.rules.size(); ++i) {
            if (config.rules[i].zero_copy == ZeroCopy::Off) continue;
            if (const toml::node* where = rule_sites_[i].table->get("zero_copy"))
                warn(where->source(), rule_sites_[i].path + ".zero_copy", "has no effect: [global] max_pipes = 0");
        }
    }

    void report_unreachable(const std::vector<RuleConfig>& rules, const std::pair<size_t, net::SocketAddress>& shadow,
                            size_t later) {
        const auto& [earlier, address] = shadow;
        const std::string others = rule_sites_[later].listen.size() > 1 ? " (and on every other listen address of this rule)" : "";
        warn(rule_sites_[later].table->source(), rule_sites_[later].path,
             "rule " + quoted(rules[later].id) + " can never match: rule " + quoted(rules[earlier].id) + " (" +
                 rule_sites_[earlier].path + ") comes first on " + address.to_string() + others +
                 " and takes every client (it has no clients or deny); put " + quoted(rules[later].id) +
                 " first or give " + quoted(rules[earlier].id) + " clients");
    }

    std::optional<size_t> first_rule_listening_on(const net::SocketAddress& address, size_t before) const {
        const auto first = first_listener_.find(address);
        if (first == first_listener_.end() || first->second >= before) return std::nullopt;
        return first->second;
    }

    void report_accept_proxy_disagreement(const std::vector<RuleConfig>& rules, size_t earlier, size_t later,
                                          const ListenSite& shared) {
        const RuleSites& sites = rule_sites_[later];
        const toml::node* accept_proxy = sites.table->get("accept_proxy");
        const auto flag = [](bool on) { return std::string(on ? "true" : "false"); };
        report(accept_proxy ? accept_proxy->source() : shared.where,
               accept_proxy ? sites.path + ".accept_proxy" : shared.key,
               "accept_proxy = " + flag(rules[later].accept_proxy) + " disagrees with rule " +
                   quoted(rules[earlier].id) + " (" + rule_sites_[earlier].path + "), which also listens on " +
                   shared.address.to_string() + " with accept_proxy = " + flag(rules[earlier].accept_proxy) +
                   "; a PROXY header is expected per listening socket, so every rule on it must set the same value");
    }

    // Each control endpoint needs a socket of its own: it cannot share one with a rule or the other.
    void check_control_listener_clashes(const Config& config) {
        if (admin_site_) check_clash_with_rules(config.admin.listen, *admin_site_, config.rules);
        if (metrics_site_) check_clash_with_rules(config.metrics.listen, *metrics_site_, config.rules);
        if (admin_site_ && metrics_site_ && same_listener(config.admin.listen, config.metrics.listen))
            report(metrics_site_->where, metrics_site_->key,
                   config.metrics.listen.to_string() + " is already the admin listener (" + admin_site_->key +
                       "); give [metrics] an address of its own");
    }

    void check_clash_with_rules(const ControlListen& listen, const ListenSite& site, const std::vector<RuleConfig>& rules) {
        if (!listen.unix_path.empty()) return;
        const auto owner = first_rule_listening_on(listen.address, rules.size());
        if (!owner) return;
        const auto& rule_listen = rule_sites_[*owner].listen;
        const auto same = std::find_if(rule_listen.begin(), rule_listen.end(),
                                       [&](const ListenSite& s) { return s.address == listen.address; });
        report(site.where, site.key,
               listen.address.to_string() + " is already a listen address of rule " + quoted(rules[*owner].id) + " (" +
                   same->key + "); give it an address of its own");
    }

    std::string file_;
    std::vector<ConfigIssue> issues_;
    std::vector<ConfigIssue> warnings_;
    std::map<std::string, uint32_t> rule_id_lines_;  // rule id -> line of its first definition
    std::vector<RuleSites> rule_sites_;              // parallel to Config::rules
    std::unordered_map<net::SocketAddress, size_t, net::SocketAddressHash> first_listener_;  // address -> rule index
    std::optional<ListenSite> admin_site_;           // where [admin] listen was written, when valid
    std::optional<ListenSite> metrics_site_;
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

// Each name is one that read_mode() accepts. p2c has no longer name in the file format.
std::string_view to_string(BalanceMode mode) {
    switch (mode) {
        case BalanceMode::RoundRobin: return "round_robin";
        case BalanceMode::MasterStandby: return "master_standby";
        case BalanceMode::LeastConn: return "least_conn";
        case BalanceMode::Random: return "random";
        case BalanceMode::PowerOfTwo: return "p2c";
        case BalanceMode::SourceHash: return "source_hash";
        case BalanceMode::ResponseTime: return "response_time";
    }
    return "?";
}

std::string_view to_string(ZeroCopy mode) {
    switch (mode) {
        case ZeroCopy::Auto: return "auto";
        case ZeroCopy::Splice: return "splice";
        case ZeroCopy::Off: return "off";
    }
    return "?";
}

std::string_view to_string(ProxyProtocol version) {
    switch (version) {
        case ProxyProtocol::Off: return "off";
        case ProxyProtocol::V1: return "v1";
        case ProxyProtocol::V2: return "v2";
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

namespace {
ConfigIssue syntax_issue(const toml::parse_error& error, const std::string& file) {
    const auto& begin = error.source().begin;
    return {file, begin.line, begin.column, "", std::string(error.description())};
}

// toml::parse, after the guard against characters the library cannot handle (toml_guard.hpp).
toml::table parse_toml(std::string_view text, const std::string& file) {
    if (const auto unsafe = find_unsafe_character(text)) {
        char code[16];
        std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(unsafe->code_point));
        throw ConfigError({{file, unsafe->line, unsafe->column, "",
                            std::string("character ") + code +
                                " outside a string or comment: keys and values must be ASCII here "
                                "(non-ASCII text belongs in quoted strings or comments)"}});
    }
    try {
        return toml::parse(text, file);
    } catch (const toml::parse_error& error) {
        throw ConfigError({syntax_issue(error, file)});
    }
}

// The line of a `[rule.health]` header written before any `[[rule]]`, 0 when there is none.
unsigned health_before_any_rule(std::string_view text) {
    unsigned line = 0;
    for (size_t start = 0; start < text.size(); ++line) {
        const size_t end = std::min(text.find('\n', start), text.size());
        std::string header;  // the line without blanks, so that "[ rule . health ]" is found too
        for (const char c : text.substr(start, end - start))
            if (c != ' ' && c != '\t' && c != '\r') header += c;
        if (header.starts_with("[[rule]]")) return 0;
        if (header.starts_with("[rule.health]")) return line + 1;
        start = end + 1;
    }
    return 0;
}

// TOML reads a [rule.health] above every [[rule]] as a table `rule`, which the [[rule]] array
// cannot then extend: the resulting messages do not say what to do, so a hint goes with them.
ConfigError with_health_order_hint(const ConfigError& error, std::string_view text, const std::string& file) {
    const unsigned line = health_before_any_rule(text);
    if (line == 0) return error;
    std::vector<ConfigIssue> issues = error.issues();
    issues.push_back({file, line, 1, "rule.health",
                      "[rule.health] comes before any [[rule]]: it belongs after the [[rule]] whose servers it checks "
                      "(write [[rule]] and its keys first, then [rule.health])"});
    std::stable_sort(issues.begin(), issues.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
        return std::pair(a.line == 0 ? ~0u : a.line, a.column) < std::pair(b.line == 0 ? ~0u : b.line, b.column);
    });
    return ConfigError(std::move(issues));
}

// parse_rule_inline() parses "<prefix><text>" on one line: columns on that line are shifted back
// so that they count within the text the caller gave.
std::vector<ConfigIssue> without_prefix_columns(std::vector<ConfigIssue> issues, size_t prefix_length) {
    for (auto& issue : issues) {
        if (issue.line != 1) continue;
        issue.column = issue.column > prefix_length ? issue.column - static_cast<unsigned>(prefix_length) : 1;
    }
    return issues;
}
}  // namespace

Config parse_config(std::string_view toml_text, std::string_view source_name) {
    const std::string file(source_name);
    try {
        const toml::table root = parse_toml(toml_text, file);
        Validator validator(file);
        Config config = validator.run(root);
        auto issues = validator.take_issues();
        if (!issues.empty()) throw ConfigError(std::move(issues));
        config.warnings = validator.take_warnings();
        return config;
    } catch (const ConfigError& error) {
        throw with_health_order_hint(error, toml_text, file);
    }
}

RuleConfig parse_rule_inline(std::string_view inline_table, std::string_view source_name) {
    // The text is a TOML value, not a document: give it a key so that toml++ parses it, on the
    // same line so that line numbers stay those of the text.
    constexpr std::string_view kRuleKey = "rule";
    const std::string prefix = std::string(kRuleKey) + " = ";
    const std::string file(source_name);
    toml::table root;
    try {
        root = parse_toml(prefix + std::string(inline_table), file);
    } catch (const ConfigError& error) {
        throw ConfigError(without_prefix_columns(error.issues(), prefix.size()));
    }
    Validator validator(file);
    RuleConfig rule = validator.run_single_rule(root, kRuleKey);
    auto issues = validator.take_issues();
    if (!issues.empty()) throw ConfigError(without_prefix_columns(std::move(issues), prefix.size()));
    return rule;
}

Config load_config_file(const std::string& path) {
    std::string error;
    const std::string text = read_whole_file(path, &error);
    if (!error.empty()) throw ConfigError({{path, 0, 0, "", "cannot read: " + error}});
    return parse_config(text, path);
}

// ---- writing TOML (`dump rules`, reload diff) ----

namespace {

// A TOML basic string. Quotes, backslashes and control characters are escaped; other bytes go
// out as they are, since TOML text is UTF-8 and every string parse_config() read was UTF-8.
std::string toml_string(std::string_view text) { return "\"" + escaped(text) + "\""; }

// Whole seconds as "300s", anything else as "250ms": both read back exactly.
std::string toml_duration(std::chrono::milliseconds duration) {
    const auto ms = duration.count();
    return toml_string(ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms");
}

std::string toml_bool(bool value) { return value ? "true" : "false"; }

std::string toml_string_array(const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) {
        if (i != 0) out += ", ";
        out += toml_string(items[i]);
    }
    return out + "]";
}

std::vector<std::string> address_texts(const std::vector<net::SocketAddress>& addresses) {
    std::vector<std::string> texts;
    texts.reserve(addresses.size());
    for (const auto& address : addresses) texts.push_back(address.to_string());
    return texts;
}

std::vector<std::string> pattern_texts(const std::vector<net::ClientPattern>& patterns) {
    std::vector<std::string> texts;
    texts.reserve(patterns.size());
    for (const auto& pattern : patterns) texts.push_back(pattern.text());
    return texts;
}

std::string_view log_format_name(LogFormat format) { return format == LogFormat::Json ? "json" : "text"; }

void put(std::string& out, std::string_view key, std::string_view value) {
    out += key;
    out += " = ";
    out += value;
    out += '\n';
}

std::string server_inline_table(const ServerConfig& server) {
    const std::string where = server.is_dns() ? "dns = " + toml_string(server.dns_endpoint()) +
                                                    ", resolve_interval = " + toml_duration(server.resolve_interval)
                                              : "address = " + toml_string(server.address.to_string());
    const std::string named = server.name.empty() ? "" : ", name = " + toml_string(server.name);
    const std::string source = server.source.enabled() ? ", source = " + toml_string(server.source.to_string()) : "";
    return "{ " + where + named + source + ", weight = " + std::to_string(server.weight) +
           ", backup = " + toml_bool(server.backup) + ", max_connections = " + std::to_string(server.max_connections) +
           " }";
}

std::string global_to_toml(const GlobalConfig& global) {
    std::string out = "[global]\n";
    put(out, "engine", toml_string(to_string(global.engine)));
    put(out, "threads", std::to_string(global.threads));
    put(out, "max_sessions", std::to_string(global.max_sessions));
    put(out, "max_sessions_per_ip", std::to_string(global.max_sessions_per_ip));
    // 0 = derived from max_sessions: left out, so that the file keeps following max_sessions.
    if (global.max_handshakes != 0) put(out, "max_handshakes", std::to_string(global.max_handshakes));
    put(out, "buffer_size", std::to_string(global.buffer_size));
    put(out, "receive_buffers", std::to_string(global.receive_buffers));
    if (global.max_buffer_memory != 0) put(out, "max_buffer_memory", std::to_string(global.max_buffer_memory));
    put(out, "multishot_recv", toml_bool(global.multishot_recv));
    put(out, "max_pipes", std::to_string(global.max_pipes));
    put(out, "busy_poll_us", std::to_string(global.busy_poll.count()));
    put(out, "log_level", toml_string(to_string(global.log_level)));
    put(out, "shutdown_timeout", toml_duration(global.shutdown_timeout));
    put(out, "log_connections", toml_bool(global.log_connections));
    put(out, "log_format", toml_string(log_format_name(global.log_format)));
    // Empty means "stderr" / "keep the user": the file says that by leaving the key out, since
    // an empty string there is rejected as a likely mistake.
    if (!global.log_file.empty()) put(out, "log_file", toml_string(global.log_file));
    if (!global.user.empty()) put(out, "user", toml_string(global.user));
    if (!global.resolvers.empty()) put(out, "resolvers", toml_string_array(address_texts(global.resolvers)));
    return out;
}

std::string health_to_toml(const HealthCheckConfig& health) {
    std::string out = "[rule.health]\n";
    put(out, "interval", toml_duration(health.interval));
    put(out, "timeout", toml_duration(health.timeout));
    put(out, "rise", std::to_string(health.rise));
    put(out, "fall", std::to_string(health.fall));
    put(out, "send", toml_string(health.send));
    put(out, "expect", toml_string(health.expect));
    return out;
}

std::string control_to_toml(std::string_view header, const ControlListen& listen,
                            const std::vector<net::ClientPattern>& allow) {
    std::string out = std::string(header) + "\n";
    put(out, "listen", toml_string(listen.to_string()));
    // An empty list cannot be written (it is rejected); leaving the key out gives the default.
    if (!allow.empty()) put(out, "allow", toml_string_array(pattern_texts(allow)));
    return out;
}

std::string admin_to_toml(const AdminConfig& admin) {
    std::string out = control_to_toml("[admin]", admin.listen, admin.allow);
    if (!admin.token.empty()) put(out, "token", toml_string(admin.token));
    put(out, "insecure", toml_bool(admin.insecure));
    return out;
}

}  // namespace

std::string rule_to_toml(const RuleConfig& rule) {
    std::string out = "[[rule]]\n";
    put(out, "id", toml_string(rule.id));
    put(out, "mode", toml_string(to_string(rule.mode)));
    put(out, "listen", toml_string_array(address_texts(rule.listen)));
    // Empty lists mean "any client" and "deny nobody"; an empty array would be rejected.
    if (!rule.clients.empty()) put(out, "clients", toml_string_array(pattern_texts(rule.clients)));
    if (!rule.deny.empty()) put(out, "deny", toml_string_array(pattern_texts(rule.deny)));
    put(out, "max_clients", std::to_string(rule.max_clients));
    put(out, "max_sessions_per_ip", std::to_string(rule.max_sessions_per_ip));
    put(out, "max_conn_rate_per_ip", std::to_string(rule.max_conn_rate_per_ip));
    if (rule.upload_rate != 0) put(out, "upload_rate", std::to_string(rule.upload_rate));
    if (rule.download_rate != 0) put(out, "download_rate", std::to_string(rule.download_rate));
    put(out, "timeout", toml_duration(rule.timeout));
    put(out, "connect_timeout", toml_duration(rule.connect_timeout));
    put(out, "down_time", toml_duration(rule.down_time));
    put(out, "max_down_time", toml_duration(rule.max_down_time));
    put(out, "slow_start", toml_duration(rule.slow_start));
    put(out, "retries", std::to_string(rule.retries));
    put(out, "queue", std::to_string(rule.queue));
    if (rule.queue_timeout) put(out, "queue_timeout", toml_duration(*rule.queue_timeout));
    put(out, "failback", toml_bool(rule.failback));
    put(out, "send_proxy", toml_string(to_string(rule.send_proxy)));
    put(out, "zero_copy", toml_string(to_string(rule.zero_copy)));
    put(out, "accept_proxy", toml_bool(rule.accept_proxy));
    if (!rule.proxy_from.empty()) put(out, "proxy_from", toml_string_array(pattern_texts(rule.proxy_from)));
    if (rule.server_histograms) put(out, "server_histograms", toml_bool(*rule.server_histograms));
    if (!rule.sni.empty()) put(out, "sni", toml_string_array(rule.sni));
    if (!rule.alpn.empty()) put(out, "alpn", toml_string_array(rule.alpn));
    if (rule.source.enabled()) put(out, "source", toml_string(rule.source.to_string()));
    if (rule.freebind) put(out, "freebind", toml_bool(rule.freebind));
    out += "servers = [\n";
    for (const auto& server : rule.servers) out += "    " + server_inline_table(server) + ",\n";
    out += "]\n";
    if (rule.health.enabled) out += health_to_toml(rule.health);
    return out;
}

std::string to_toml(const Config& config) {
    std::string out = "# Written by ringlb: the running configuration, defaults included.\n\n";
    out += global_to_toml(config.global);
    for (const auto& rule : config.rules) {
        out += '\n';
        out += rule_to_toml(rule);
    }
    if (config.admin.listen.enabled) {
        out += '\n';
        out += admin_to_toml(config.admin);
    }
    if (config.metrics.listen.enabled) {
        out += '\n';
        out += control_to_toml("[metrics]", config.metrics.listen, config.metrics.allow);
        if (!config.metrics.token.empty()) put(out, "token", toml_string(config.metrics.token));
    }
    return out;
}

uint32_t handshake_limit(const GlobalConfig& global) {
    if (global.max_handshakes != 0) return std::min(global.max_handshakes, global.max_sessions);
    return std::max(global.max_sessions / 4, std::min(kMinDerivedHandshakes, global.max_sessions));
}

std::chrono::milliseconds queue_timeout(const RuleConfig& rule) { return rule.queue_timeout.value_or(rule.connect_timeout); }

bool server_histograms_enabled(const RuleConfig& rule) {
    return rule.server_histograms.value_or(rule.servers.size() <= kServerHistogramsAutoLimit);
}

std::string summarize(const Config& config) {
    std::set<std::string> listen;
    size_t servers = 0;
    for (const auto& rule : config.rules) {
        for (const auto& address : rule.listen) listen.insert(address.to_string());
        servers += rule.servers.size();
    }
    const auto counted = [](size_t count, const char* one, const char* many) {
        return std::to_string(count) + " " + (count == 1 ? one : many);
    };
    return "ok: " + counted(config.rules.size(), "rule", "rules") + ", " +
           counted(listen.size(), "listen address", "listen addresses") + ", " + counted(servers, "server", "servers") +
           " (" + config.source + ")";
}

uint64_t buffer_memory_cap(const GlobalConfig& global, uint64_t physical_memory) {
    if (global.max_buffer_memory != 0) return global.max_buffer_memory;
    constexpr uint64_t kBuffer = uint64_t{32} * 1024;
    const uint64_t one_per_direction = uint64_t{global.max_sessions} * 2 * kBuffer;
    return std::max(kMinBufferMemory, std::min(one_per_direction, physical_memory / 4));
}

}  // namespace ringlb::config
