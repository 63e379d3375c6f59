// Prometheus rendering (checked with a small exposition-format parser) and the HTTP endpoint
// served through a real EpollEngine and Dispatcher on 127.0.0.1.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringlb/admin/metrics.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/engine/epoll/epoll_engine.hpp"
#include "ringlb/net/socket.hpp"

using namespace ringlb;
using namespace ringlb::admin;
using namespace std::chrono_literals;

namespace {

// ---- a minimal exposition-format parser: throws std::runtime_error naming the bad line ------

struct ParsedSample {
    std::string name;
    std::map<std::string, std::string> labels;
    std::string value;
};

struct ParsedExposition {
    std::map<std::string, std::string> types;  // family name -> counter, gauge, histogram, ...
    std::vector<ParsedSample> samples;
};

bool is_name_char(char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
}

std::string take_name(std::string_view& rest) {
    size_t n = 0;
    while (n < rest.size() && is_name_char(rest[n], n == 0)) ++n;
    if (n == 0) throw std::runtime_error("expected a name");
    std::string name(rest.substr(0, n));
    rest.remove_prefix(n);
    return name;
}

// Reads `"..."` with the format's escapes (\\, \", \n) and returns the unescaped text.
std::string take_label_value(std::string_view& rest) {
    if (rest.empty() || rest.front() != '"') throw std::runtime_error("expected '\"'");
    rest.remove_prefix(1);
    std::string value;
    while (!rest.empty() && rest.front() != '"') {
        char c = rest.front();
        rest.remove_prefix(1);
        if (c == '\n') throw std::runtime_error("raw newline in a label value");
        if (c == '\\') {
            if (rest.empty()) throw std::runtime_error("dangling backslash");
            const char escaped = rest.front();
            rest.remove_prefix(1);
            if (escaped == 'n') c = '\n';
            else if (escaped == '\\' || escaped == '"') c = escaped;
            else throw std::runtime_error("bad escape in a label value");
        }
        value += c;
    }
    if (rest.empty()) throw std::runtime_error("unterminated label value");
    rest.remove_prefix(1);
    return value;
}

std::map<std::string, std::string> take_labels(std::string_view& rest) {
    std::map<std::string, std::string> labels;
    if (rest.empty() || rest.front() != '{') return labels;
    rest.remove_prefix(1);
    while (!rest.empty() && rest.front() != '}') {
        const std::string name = take_name(rest);
        if (rest.empty() || rest.front() != '=') throw std::runtime_error("expected '='");
        rest.remove_prefix(1);
        if (!labels.emplace(name, take_label_value(rest)).second) throw std::runtime_error("duplicate label " + name);
        if (!rest.empty() && rest.front() == ',') rest.remove_prefix(1);
    }
    if (rest.empty()) throw std::runtime_error("unterminated label set");
    rest.remove_prefix(1);
    return labels;
}

void check_value(const std::string& value) {
    if (value == "+Inf" || value == "-Inf" || value == "NaN") return;
    char* end = nullptr;
    std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0') throw std::runtime_error("bad value '" + value + "'");
}

// The family a sample belongs to: itself, or the histogram its suffix points at.
std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
    if (types.count(name)) return name;
    for (const std::string suffix : {"_bucket", "_sum", "_count"}) {
        if (name.size() > suffix.size() && name.ends_with(suffix)) {
            const std::string base = name.substr(0, name.size() - suffix.size());
            const auto type = types.find(base);
            if (type != types.end() && type->second == "histogram") return base;
        }
    }
    throw std::runtime_error("sample " + name + " has no TYPE line before it");
}

ParsedExposition parse_exposition(const std::string& text) {
    if (text.empty() || text.back() != '\n') throw std::runtime_error("output must end with a newline");
    ParsedExposition parsed;
    std::set<std::string> helped, finished;
    std::string current_family;
    size_t start = 0;
    for (size_t line_number = 1; start < text.size(); ++line_number) {
        const size_t end = text.find('\n', start);
        const std::string line = text.substr(start, end - start);
        start = end + 1;
        try {
            std::string_view rest = line;
            if (rest.starts_with("# HELP ")) {
                rest.remove_prefix(7);
                const std::string name = take_name(rest);
                if (!helped.insert(name).second) throw std::runtime_error("second HELP for " + name);
                continue;
            }
            if (rest.starts_with("# TYPE ")) {
                rest.remove_prefix(7);
                const std::string name = take_name(rest);
                const std::string type(rest.substr(1));
                static const std::set<std::string> kTypes{"counter", "gauge", "histogram", "summary", "untyped"};
                if (rest.empty() || rest.front() != ' ' || !kTypes.count(type)) throw std::runtime_error("bad TYPE");
                if (!helped.count(name)) throw std::runtime_error("TYPE before HELP for " + name);
                if (!parsed.types.emplace(name, type).second) throw std::runtime_error("second TYPE for " + name);
                continue;
            }
            if (rest.starts_with("#")) throw std::runtime_error("unexpected comment");
            ParsedSample sample;
            sample.name = take_name(rest);
            sample.labels = take_labels(rest);
            if (rest.size() < 2 || rest.front() != ' ') throw std::runtime_error("expected ' value'");
            sample.value = std::string(rest.substr(1));
            check_value(sample.value);
            const std::string family = family_of(sample.name, parsed.types);
            if (!helped.count(family)) throw std::runtime_error("no HELP for " + family);
            if (family != current_family) {
                if (finished.count(family)) throw std::runtime_error("samples of " + family + " are not contiguous");
                if (!current_family.empty()) finished.insert(current_family);
                current_family = family;
            }
            parsed.samples.push_back(std::move(sample));
        } catch (const std::runtime_error& failure) {
            throw std::runtime_error("line " + std::to_string(line_number) + " '" + line + "': " + failure.what());
        }
    }
    return parsed;
}

// The samples named `name` whose labels include every pair of `subset`.
std::vector<ParsedSample> find_samples(const ParsedExposition& parsed, const std::string& name,
                                       const std::map<std::string, std::string>& subset = {}) {
    std::vector<ParsedSample> found;
    for (const auto& sample : parsed.samples) {
        if (sample.name != name) continue;
        bool all = true;
        for (const auto& [key, value] : subset) {
            const auto it = sample.labels.find(key);
            all = all && it != sample.labels.end() && it->second == value;
        }
        if (all) found.push_back(sample);
    }
    return found;
}

std::string value_of(const ParsedExposition& parsed, const std::string& name,
                     const std::map<std::string, std::string>& labels = {}) {
    const auto found = find_samples(parsed, name, labels);
    if (found.size() != 1) throw std::runtime_error(name + ": expected 1 sample, found " + std::to_string(found.size()));
    return found.front().value;
}

// ---- snapshots ------------------------------------------------------------------------------

ServerSnapshot make_server(std::string address, std::string state, unsigned weight, uint64_t seed) {
    ServerSnapshot server;
    server.address = std::move(address);
    server.state = std::move(state);
    server.weight = weight;
    server.active_sessions = seed;
    server.total_sessions = seed * 10;
    server.connect_failures = seed + 1;
    server.bytes_up = seed * 1000;
    server.bytes_down = seed * 2000;
    return server;
}

Snapshot two_rules_three_servers() {
    Snapshot snapshot;
    snapshot.version = "1.2.3";
    snapshot.engine = "epoll";
    snapshot.features = "edge-triggered, 64 buffers";
    snapshot.threads = 4;
    snapshot.uptime_seconds = 3600;
    snapshot.accepted = 1000;
    snapshot.active_sessions = 7;
    snapshot.sessions_ended = 993;
    snapshot.rejects = {3, 4, 5, 8, 9};
    snapshot.handshakes_active = 2;

    RuleSnapshot web;
    web.id = "web";
    web.active_sessions = 5;
    web.total_sessions = 600;
    web.bytes_up = 12345;
    web.bytes_down = 67890;
    web.rejects = {1, 2, 3};
    web.connect_failures = {4, 5, 6};
    for (uint64_t us : {50u, 100u, 300u, 2000u, 70'000'000u}) web.connect_time.add(us);
    for (uint64_t us : {1'500'000u, 20'000u}) web.session_duration.add(us);
    web.servers.push_back(make_server("127.0.0.1:9001", "up", 3, 2));
    web.servers.push_back(make_server("[::1]:9002", "draining", 1, 3));

    RuleSnapshot db;
    db.id = "d\"b\\x\nz";  // quote, backslash and newline: all three must be escaped
    db.active_sessions = 2;
    db.connect_time.add(250);
    db.servers.push_back(make_server("10.0.0.1:5432", "down", 0, 4));

    snapshot.rules = {web, db};
    return snapshot;
}

// Big enough that the response needs many send completions.
Snapshot large_snapshot() {
    Snapshot snapshot = two_rules_three_servers();
    for (int r = 0; r < 150; ++r) {
        RuleSnapshot rule;
        rule.id = "rule-" + std::to_string(r);
        for (int s = 0; s < 10; ++s)
            rule.servers.push_back(make_server("10.1." + std::to_string(r) + "." + std::to_string(s) + ":80", "up", 1, 1));
        snapshot.rules.push_back(rule);
    }
    return snapshot;
}

}  // namespace

// ---- rendering ------------------------------------------------------------------------------

TEST_CASE("prometheus output parses: HELP and TYPE first, contiguous families, valid samples") {
    const std::string text = render_prometheus(two_rules_three_servers());
    ParsedExposition parsed;
    REQUIRE_NOTHROW(parsed = parse_exposition(text));
    CHECK(parsed.types.at("ringlb_accepted_total") == "counter");
    CHECK(parsed.types.at("ringlb_sessions_active") == "gauge");
    CHECK(parsed.types.at("ringlb_connect_time_seconds") == "histogram");
    for (const auto& [name, type] : parsed.types)
        if (type == "counter") CHECK_MESSAGE(name.ends_with("_total"), name);
}

TEST_CASE("prometheus output carries the snapshot's values") {
    const ParsedExposition parsed = parse_exposition(render_prometheus(two_rules_three_servers()));
    const auto info = find_samples(parsed, "ringlb_info");
    REQUIRE(info.size() == 1);
    CHECK(info[0].labels == std::map<std::string, std::string>{
                                {"version", "1.2.3"}, {"engine", "epoll"}, {"features", "edge-triggered, 64 buffers"}, {"threads", "4"}});
    CHECK(info[0].value == "1");
    CHECK(value_of(parsed, "ringlb_uptime_seconds") == "3600");
    CHECK(value_of(parsed, "ringlb_accepted_total") == "1000");
    CHECK(value_of(parsed, "ringlb_sessions_active") == "7");
    CHECK(value_of(parsed, "ringlb_sessions_ended_total") == "993");
    CHECK(value_of(parsed, "ringlb_rejects_total", {{"reason", "acl"}}) == "3");
    CHECK(value_of(parsed, "ringlb_rejects_total", {{"reason", "no_server"}}) == "5");
    CHECK(value_of(parsed, "ringlb_rejects_total", {{"reason", "untrusted_proxy"}}) == "8");
    CHECK(value_of(parsed, "ringlb_rejects_total", {{"reason", "max_handshakes"}}) == "9");
    CHECK(value_of(parsed, "ringlb_handshakes_active") == "2");
    CHECK(parsed.types.at("ringlb_handshakes_active") == "gauge");

    CHECK(value_of(parsed, "ringlb_rule_sessions_active", {{"rule", "web"}}) == "5");
    CHECK(value_of(parsed, "ringlb_rule_sessions_total", {{"rule", "web"}}) == "600");
    CHECK(value_of(parsed, "ringlb_rule_bytes_total", {{"rule", "web"}, {"direction", "up"}}) == "12345");
    CHECK(value_of(parsed, "ringlb_rule_bytes_total", {{"rule", "web"}, {"direction", "down"}}) == "67890");
    CHECK(value_of(parsed, "ringlb_rule_rejects_total", {{"rule", "web"}, {"reason", "limit"}}) == "2");
    CHECK(value_of(parsed, "ringlb_rule_connect_failures_total", {{"rule", "web"}, {"reason", "timeout"}}) == "5");

    const std::map<std::string, std::string> drained{{"rule", "web"}, {"server", "[::1]:9002"}};
    CHECK(value_of(parsed, "ringlb_server_up", drained) == "0");
    CHECK(value_of(parsed, "ringlb_server_up", {{"server", "127.0.0.1:9001"}}) == "1");
    auto draining = drained;
    draining["state"] = "draining";
    CHECK(value_of(parsed, "ringlb_server_state", draining) == "1");
    draining["state"] = "up";
    CHECK(value_of(parsed, "ringlb_server_state", draining) == "0");
    CHECK(value_of(parsed, "ringlb_server_weight", drained) == "1");
    CHECK(value_of(parsed, "ringlb_server_sessions_active", drained) == "3");
    CHECK(value_of(parsed, "ringlb_server_sessions_total", drained) == "30");
    CHECK(value_of(parsed, "ringlb_server_connect_failures_total", drained) == "4");
    auto up = drained;
    up["direction"] = "down";
    CHECK(value_of(parsed, "ringlb_server_bytes_total", up) == "6000");
    CHECK(find_samples(parsed, "ringlb_server_weight").size() == 3);
}

TEST_CASE("histogram buckets are cumulative, in seconds, and end with +Inf equal to _count") {
    const ParsedExposition parsed = parse_exposition(render_prometheus(two_rules_three_servers()));
    for (const std::string family : {"ringlb_connect_time_seconds", "ringlb_session_duration_seconds"}) {
        for (const std::string rule : {"web", "d\"b\\x\nz"}) {
            const auto buckets = find_samples(parsed, family + "_bucket", {{"rule", rule}});
            REQUIRE(buckets.size() == Histogram::kBoundsUs.size() + 1);
            double previous_bound = -1;
            uint64_t previous_count = 0;
            for (size_t i = 0; i + 1 < buckets.size(); ++i) {
                const double bound = std::stod(buckets[i].labels.at("le"));
                CHECK(bound > previous_bound);
                CHECK(bound == doctest::Approx(static_cast<double>(Histogram::kBoundsUs[i]) / 1e6));
                const uint64_t count = std::stoull(buckets[i].value);
                CHECK(count >= previous_count);
                previous_bound = bound;
                previous_count = count;
            }
            CHECK(buckets.back().labels.at("le") == "+Inf");
            CHECK(std::stoull(buckets.back().value) >= previous_count);
            CHECK(buckets.back().value == value_of(parsed, family + "_count", {{"rule", rule}}));
        }
    }
    // web's connect times: 50us and 100us are <= 0.0001 s; 70 s is above every bound.
    CHECK(value_of(parsed, "ringlb_connect_time_seconds_bucket", {{"rule", "web"}, {"le", "0.0001"}}) == "2");
    CHECK(value_of(parsed, "ringlb_connect_time_seconds_bucket", {{"rule", "web"}, {"le", "60"}}) == "4");
    CHECK(value_of(parsed, "ringlb_connect_time_seconds_bucket", {{"rule", "web"}, {"le", "+Inf"}}) == "5");
    CHECK(value_of(parsed, "ringlb_connect_time_seconds_sum", {{"rule", "web"}}) == "70.00245");
    CHECK(value_of(parsed, "ringlb_session_duration_seconds_sum", {{"rule", "web"}}) == "1.52");
}

TEST_CASE("label values escape quote, backslash and newline") {
    const std::string text = render_prometheus(two_rules_three_servers());
    CHECK(text.find("ringlb_rule_sessions_active{rule=\"d\\\"b\\\\x\\nz\"} 2\n") != std::string::npos);
    const ParsedExposition parsed = parse_exposition(text);
    CHECK(value_of(parsed, "ringlb_rule_sessions_active", {{"rule", "d\"b\\x\nz"}}) == "2");
}

TEST_CASE("the control ports' refusals and the reload outcome are exported") {
    Snapshot snapshot;
    snapshot.admin_port = {1, 2, 3, 4, 5};
    snapshot.metrics_port = {6, 7, 8, 9};
    snapshot.reload.reloads = 10;
    snapshot.reload.failures = 2;
    snapshot.reload.last_successful = false;
    snapshot.reload.last_attempt_unix = 1'800'000'100;
    snapshot.reload.last_success_unix = 1'800'000'000;
    const ParsedExposition parsed = parse_exposition(render_prometheus(snapshot));
    CHECK(value_of(parsed, "ringlb_admin_connections_refused_total", {{"reason", "allow"}}) == "1");
    CHECK(value_of(parsed, "ringlb_admin_connections_refused_total", {{"reason", "full"}}) == "2");
    CHECK(value_of(parsed, "ringlb_admin_unauthenticated_evicted_total") == "3");
    CHECK(value_of(parsed, "ringlb_admin_auth_timeouts_total") == "4");
    CHECK(value_of(parsed, "ringlb_admin_auth_failures_total") == "5");
    CHECK(value_of(parsed, "ringlb_metrics_connections_refused_total", {{"reason", "allow"}}) == "6");
    CHECK(value_of(parsed, "ringlb_metrics_connections_refused_total", {{"reason", "per_ip"}}) == "7");
    CHECK(value_of(parsed, "ringlb_metrics_connections_refused_total", {{"reason", "full"}}) == "8");
    CHECK(value_of(parsed, "ringlb_metrics_request_timeouts_total") == "9");
    CHECK(value_of(parsed, "ringlb_config_reloads_total") == "10");
    CHECK(value_of(parsed, "ringlb_config_reload_failures_total") == "2");
    CHECK(value_of(parsed, "ringlb_config_last_reload_successful") == "0");
    CHECK(value_of(parsed, "ringlb_config_last_reload_timestamp_seconds") == "1800000100");
    CHECK(value_of(parsed, "ringlb_config_last_reload_success_timestamp_seconds") == "1800000000");
    CHECK(parsed.types.at("ringlb_config_last_reload_successful") == "gauge");
}

TEST_CASE("an empty snapshot still renders every family with HELP and TYPE") {
    const ParsedExposition parsed = parse_exposition(render_prometheus(Snapshot{}));
    CHECK(parsed.types.count("ringlb_server_bytes_total") == 1);
    CHECK(find_samples(parsed, "ringlb_server_bytes_total").empty());
}

TEST_CASE("limit rejects split by the limit that refused them add up to the limit count") {
    RejectCounts rejects;
    using Limit = RejectCounts::Limit;
    for (Limit limit : {Limit::Global, Limit::PerIp, Limit::PerIp, Limit::Rate, Limit::MaxClients, Limit::MaxClients,
                        Limit::MaxClients})
        rejects.count_limit(limit);
    CHECK(rejects.limit == 7);
    CHECK(rejects.global_limit == 1);
    CHECK(rejects.per_ip_limit == 2);
    CHECK(rejects.rate_limit == 1);
    CHECK(rejects.max_clients == 3);
    RejectCounts sum;
    sum.merge(rejects);
    sum.merge(rejects);
    CHECK(sum.limit == 14);
    CHECK(sum.max_clients == 6);
}

TEST_CASE("reject causes, limits, peaks, checks, transitions and per-server histograms are exported") {
    Snapshot snapshot = two_rules_three_servers();
    snapshot.rejects.global_limit = 11;
    snapshot.rejects.per_ip_limit = 12;
    snapshot.rejects.rate_limit = 13;
    snapshot.rejects.max_clients = 14;
    snapshot.peak_sessions = 4242;
    snapshot.max_sessions = 100000;
    snapshot.max_handshakes = 25000;
    RuleSnapshot& web = snapshot.rules[0];
    web.max_clients = 77;
    web.rejects.rate_limit = 21;
    ServerSnapshot& first = web.servers[0];
    first.max_connections = 500;
    first.checks_passed = 30;
    first.checks_failed = 4;
    first.went_up = 2;
    first.went_down = 1;
    first.has_histograms = true;
    first.connect_time.add(300);
    first.session_duration.add(200'000'000);  // 200 s: past the minute, in the 300 s bucket
    snapshot.process = ProcessStats{12.5, 4096, 8192, 17, 1024, 1'700'000'000.25};

    const ParsedExposition parsed = parse_exposition(render_prometheus(snapshot));
    CHECK(value_of(parsed, "ringlb_rejects_by_cause_total", {{"cause", "global_limit"}}) == "11");
    CHECK(value_of(parsed, "ringlb_rejects_by_cause_total", {{"cause", "per_ip_limit"}}) == "12");
    CHECK(value_of(parsed, "ringlb_rejects_by_cause_total", {{"cause", "rate_limit"}}) == "13");
    CHECK(value_of(parsed, "ringlb_rejects_by_cause_total", {{"cause", "max_clients"}}) == "14");
    CHECK(value_of(parsed, "ringlb_rejects_by_cause_total", {{"cause", "acl"}}) == "3");
    CHECK(value_of(parsed, "ringlb_rejects_by_cause_total", {{"cause", "no_server"}}) == "5");
    CHECK(value_of(parsed, "ringlb_rejects_total", {{"reason", "limit"}}) == "4");  // unchanged beside it
    CHECK(value_of(parsed, "ringlb_rule_rejects_by_cause_total", {{"rule", "web"}, {"cause", "rate_limit"}}) == "21");
    CHECK(value_of(parsed, "ringlb_sessions_peak") == "4242");
    CHECK(value_of(parsed, "ringlb_max_sessions") == "100000");
    CHECK(value_of(parsed, "ringlb_max_handshakes") == "25000");
    CHECK(value_of(parsed, "ringlb_rule_max_clients", {{"rule", "web"}}) == "77");
    const std::map<std::string, std::string> server{{"rule", "web"}, {"server", "127.0.0.1:9001"}};
    CHECK(value_of(parsed, "ringlb_server_max_connections", server) == "500");
    auto with = [&](const char* name, const char* value) {
        auto labels = server;
        labels[name] = value;
        return labels;
    };
    CHECK(value_of(parsed, "ringlb_server_checks_total", with("result", "pass")) == "30");
    CHECK(value_of(parsed, "ringlb_server_checks_total", with("result", "fail")) == "4");
    CHECK(value_of(parsed, "ringlb_server_transitions_total", with("to", "up")) == "2");
    CHECK(value_of(parsed, "ringlb_server_transitions_total", with("to", "down")) == "1");
    CHECK(value_of(parsed, "ringlb_server_connect_time_seconds_count", server) == "1");
    CHECK(value_of(parsed, "ringlb_server_session_duration_seconds_bucket", with("le", "120")) == "0");
    CHECK(value_of(parsed, "ringlb_server_session_duration_seconds_bucket", with("le", "300")) == "1");
    CHECK(value_of(parsed, "ringlb_server_session_duration_seconds_bucket", with("le", "3600")) == "1");
    // The second server has no histograms (its rule's server_histograms is off): no series at all.
    CHECK(find_samples(parsed, "ringlb_server_connect_time_seconds_count").size() == 1);
    CHECK(value_of(parsed, "process_cpu_seconds_total") == "12.50");
    CHECK(value_of(parsed, "process_resident_memory_bytes") == "4096");
    CHECK(value_of(parsed, "process_open_fds") == "17");
    CHECK(value_of(parsed, "process_max_fds") == "1024");
    CHECK(value_of(parsed, "process_start_time_seconds") == "1700000000.25");
    CHECK(parsed.types.at("process_cpu_seconds_total") == "counter");
}

TEST_CASE("the process's own figures come from /proc and are plausible") {
    const auto stats = read_process_stats();
    REQUIRE(stats.has_value());
    CHECK(stats->resident_bytes > 0);
    CHECK(stats->virtual_bytes >= stats->resident_bytes);
    CHECK(stats->open_fds >= 3);  // at least stdin, stdout and stderr in a test run
    CHECK(stats->max_fds >= stats->open_fds);
    const double now = static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    CHECK(stats->start_time_unix <= now + 1);
    CHECK(stats->start_time_unix > now - 24 * 3600);  // this test process started today
}

// ---- the HTTP endpoint ----------------------------------------------------------------------

namespace {

config::MetricsConfig metrics_config(std::initializer_list<const char*> allow) {
    config::MetricsConfig config;
    config.listen.enabled = true;
    config.listen.address = *net::SocketAddress::parse("127.0.0.1:0");  // the kernel picks a free port
    for (const char* pattern : allow) config.allow.push_back(*net::ClientPattern::parse(pattern));
    return config;
}

// From `source` (a loopback IP such as "127.0.0.2") when given.
net::UniqueFd connect_client(const net::SocketAddress& to, const char* source = nullptr) {
    net::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    if (source != nullptr) {
        const auto from = net::SocketAddress::parse(std::string(source) + ":0");
        REQUIRE(from.has_value());
        REQUIRE(::bind(fd.get(), from->sockaddr_ptr(), from->length()) == 0);
    }
    REQUIRE(::connect(fd.get(), to.sockaddr_ptr(), to.length()) == 0);  // the listen backlog takes it
    return fd;
}

// Whether the server closed (or reset) the connection without sending anything.
bool closed_silently(int fd) {
    char byte;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

struct HttpResponse {
    std::string status_line;
    std::map<std::string, std::string> headers;
    std::string body;
};

HttpResponse parse_response(const std::string& raw) {
    HttpResponse response;
    const size_t head_end = raw.find("\r\n\r\n");
    REQUIRE(head_end != std::string::npos);
    std::string_view head(raw.data(), head_end);
    const size_t first_end = head.find("\r\n");
    response.status_line = std::string(head.substr(0, first_end));
    head.remove_prefix(first_end == std::string_view::npos ? head.size() : first_end + 2);
    while (!head.empty()) {
        const size_t line_end = head.find("\r\n");
        const std::string_view line = head.substr(0, line_end);
        const size_t colon = line.find(": ");
        REQUIRE(colon != std::string_view::npos);
        response.headers[std::string(line.substr(0, colon))] = std::string(line.substr(colon + 2));
        head.remove_prefix(line_end == std::string_view::npos ? head.size() : line_end + 2);
    }
    response.body = raw.substr(head_end + 4);
    return response;
}

// One engine, one dispatcher and a MetricsServer, all driven from the test thread.
struct MetricsFixture {
    engine::EpollEngine engine{engine::EngineOptions{16 * 1024, 64, 64}};
    engine::Dispatcher dispatcher{engine};
    Logger log{LogLevel::Error};
    Snapshot snapshot = two_rules_three_servers();
    std::unique_ptr<MetricsServer> server;

    explicit MetricsFixture(std::initializer_list<const char*> allow = {"127.0.0.0/8"}, MetricsLimits limits = {}) {
        server = std::make_unique<MetricsServer>(dispatcher, metrics_config(allow), [this] { return snapshot; }, log,
                                                 limits);
    }
    ~MetricsFixture() { stop(); }

    void stop() {
        server->stop();
        for (int round = 0; round < 500 && !server->idle(); ++round) dispatcher.run_once(10ms);
        CHECK(server->idle());
    }

    // Runs the loop until the server has closed every connection (the client side is gone).
    size_t settle() {
        for (int round = 0; round < 200 && server->open_connections() > 0; ++round) dispatcher.run_once(10ms);
        return server->open_connections();
    }

    // Reads until the server closes (or resets) the connection, running the loop meanwhile.
    std::string read_all(int fd) {
        net::set_nonblocking(fd, true);
        std::string received;
        const auto give_up = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < give_up) {
            dispatcher.run_once(10ms);
            char buffer[16384];
            for (;;) {
                const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
                if (n > 0) {
                    received.append(buffer, static_cast<size_t>(n));
                    continue;
                }
                if (n == 0 || errno == ECONNRESET) return received;
                break;  // EAGAIN: run the loop again
            }
        }
        FAIL("the server did not close the connection");
        return received;
    }

    std::string exchange(const std::string& request) {
        net::UniqueFd client = connect_client(server->local_address());
        REQUIRE(::send(client.get(), request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
        return read_all(client.get());
    }
};

}  // namespace

TEST_CASE("GET /metrics answers 200 with the rendered snapshot") {
    MetricsFixture fixture;
    const HttpResponse response =
        parse_response(fixture.exchange("GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"));
    CHECK(response.status_line == "HTTP/1.1 200 OK");
    CHECK(response.headers.at("Content-Type") == "text/plain; version=0.0.4");
    CHECK(response.headers.at("Connection") == "close");
    CHECK(response.headers.at("Content-Length") == std::to_string(response.body.size()));
    CHECK(response.body == render_prometheus(fixture.snapshot));
}

TEST_CASE("the metrics endpoint answers /, /healthz, unknown paths, other methods and garbage") {
    MetricsFixture fixture;
    SUBCASE("healthz") {
        const HttpResponse response = parse_response(fixture.exchange("GET /healthz HTTP/1.0\r\n\r\n"));
        CHECK(response.status_line == "HTTP/1.1 200 OK");
        CHECK(response.body == "ok\n");
    }
    SUBCASE("root points at /metrics") {
        const HttpResponse response = parse_response(fixture.exchange("GET / HTTP/1.1\r\n\r\n"));
        CHECK(response.status_line == "HTTP/1.1 200 OK");
        CHECK(response.body.find("/metrics") != std::string::npos);
    }
    SUBCASE("a query string is ignored") {
        CHECK(parse_response(fixture.exchange("GET /metrics?x=1 HTTP/1.1\r\n\r\n")).status_line == "HTTP/1.1 200 OK");
    }
    SUBCASE("unknown path") {
        CHECK(parse_response(fixture.exchange("GET /nope HTTP/1.1\r\n\r\n")).status_line == "HTTP/1.1 404 Not Found");
    }
    SUBCASE("other method") {
        const HttpResponse response = parse_response(fixture.exchange("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        CHECK(response.status_line == "HTTP/1.1 405 Method Not Allowed");
        CHECK(response.headers.at("Allow") == "GET");
    }
    SUBCASE("garbage") {
        CHECK(parse_response(fixture.exchange("hello there\r\n\r\n")).status_line == "HTTP/1.1 400 Bad Request");
        CHECK(parse_response(fixture.exchange("GET /metrics HTTP/9\r\n\r\n")).status_line == "HTTP/1.1 400 Bad Request");
        CHECK(parse_response(fixture.exchange("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n")).status_line ==
              "HTTP/1.1 400 Bad Request");
    }
    SUBCASE("a head over 8 KiB") {
        const std::string request = "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n";
        CHECK(parse_response(fixture.exchange(request)).status_line == "HTTP/1.1 431 Request Header Fields Too Large");
    }
    CHECK(fixture.settle() == 0);
}

TEST_CASE("two requests in a row on new connections both succeed") {
    MetricsFixture fixture;
    for (int i = 0; i < 2; ++i) {
        const HttpResponse response = parse_response(fixture.exchange("GET /metrics HTTP/1.1\r\n\r\n"));
        CHECK(response.status_line == "HTTP/1.1 200 OK");
        CHECK(response.body == render_prometheus(fixture.snapshot));
    }
    CHECK(fixture.settle() == 0);
}

TEST_CASE("a request split over several sends is answered once complete") {
    MetricsFixture fixture;
    net::UniqueFd client = connect_client(fixture.server->local_address());
    for (const std::string piece : {"GET /heal", "thz HTTP/1.1\r\n", "\r\n"}) {
        REQUIRE(::send(client.get(), piece.data(), piece.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(piece.size()));
        for (int i = 0; i < 3; ++i) fixture.dispatcher.run_once(10ms);
    }
    CHECK(parse_response(fixture.read_all(client.get())).body == "ok\n");
}

TEST_CASE("a large body goes out in pieces and arrives whole") {
    MetricsFixture fixture;
    fixture.snapshot = large_snapshot();
    const std::string expected = render_prometheus(fixture.snapshot);
    REQUIRE(expected.size() > 1024 * 1024);
    const HttpResponse response = parse_response(fixture.exchange("GET /metrics HTTP/1.1\r\n\r\n"));
    CHECK(response.headers.at("Content-Length") == std::to_string(expected.size()));
    CHECK(response.body == expected);
}

TEST_CASE("a peer outside allow is closed at once without an answer") {
    MetricsFixture fixture({"10.0.0.0/8"});
    CHECK(fixture.exchange("GET /metrics HTTP/1.1\r\n\r\n").empty());
    CHECK(fixture.settle() == 0);
}

TEST_CASE("connections beyond the limit are closed at once") {
    MetricsLimits limits;
    limits.max_connections_per_ip = 1000;  // the global limit alone
    MetricsFixture fixture({"127.0.0.0/8"}, limits);
    std::vector<net::UniqueFd> clients;
    for (size_t i = 0; i < limits.max_connections + 1; ++i) {
        clients.push_back(connect_client(fixture.server->local_address()));
        net::set_nonblocking(clients.back().get(), true);
    }
    for (int round = 0; round < 20; ++round) fixture.dispatcher.run_once(10ms);
    CHECK(fixture.server->open_connections() == limits.max_connections);
    const auto closed = std::count_if(clients.begin(), clients.end(), [](const auto& c) { return closed_silently(c.get()); });
    CHECK(closed == 1);
    CHECK(fixture.server->counters().refused_full == 1);
}

TEST_CASE("one IP gets its share of the connections; a scraper from another address is still served") {
    MetricsFixture fixture;
    const MetricsLimits defaults;
    std::vector<net::UniqueFd> flood;
    for (size_t i = 0; i < defaults.max_connections_per_ip + 5; ++i) {
        flood.push_back(connect_client(fixture.server->local_address(), "127.0.0.1"));
        net::set_nonblocking(flood.back().get(), true);
    }
    for (int round = 0; round < 20; ++round) fixture.dispatcher.run_once(10ms);
    CHECK(fixture.server->open_connections() == defaults.max_connections_per_ip);
    const auto closed = std::count_if(flood.begin(), flood.end(), [](const auto& c) { return closed_silently(c.get()); });
    CHECK(closed == 5);
    CHECK(fixture.server->counters().refused_per_ip == 5);

    net::UniqueFd scraper = connect_client(fixture.server->local_address(), "127.0.0.2");
    const std::string request = "GET /metrics HTTP/1.1\r\n\r\n";
    REQUIRE(::send(scraper.get(), request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
    CHECK(parse_response(fixture.read_all(scraper.get())).status_line == "HTTP/1.1 200 OK");
}

TEST_CASE("a connection without a complete request head is closed after the head timeout, and counted") {
    MetricsLimits limits;
    limits.head_timeout = 200ms;
    MetricsFixture fixture({"127.0.0.0/8"}, limits);
    net::UniqueFd silent = connect_client(fixture.server->local_address());
    const std::string partial = "GET /metrics HTTP/1.1\r\n";
    REQUIRE(::send(silent.get(), partial.data(), partial.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(partial.size()));
    const auto start = std::chrono::steady_clock::now();
    CHECK(fixture.read_all(silent.get()).empty());
    CHECK(std::chrono::steady_clock::now() - start >= 200ms);
    CHECK(fixture.server->counters().request_timeouts == 1);
}

TEST_CASE("stop() closes the listener and every connection; idle() then allows destruction") {
    MetricsFixture fixture;
    const net::SocketAddress address = fixture.server->local_address();
    net::UniqueFd waiting = connect_client(address);
    for (int round = 0; round < 5; ++round) fixture.dispatcher.run_once(10ms);
    REQUIRE(fixture.server->open_connections() == 1);
    fixture.stop();
    CHECK(fixture.settle() == 0);
    net::UniqueFd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    CHECK(::connect(late.get(), address.sockaddr_ptr(), address.length()) != 0);
}

TEST_CASE("the metrics endpoint also serves a unix socket, and removes its file when stopped") {
    char directory[] = "/tmp/ringlb-metrics-XXXXXX";
    REQUIRE(::mkdtemp(directory) != nullptr);
    const std::string path = std::string(directory) + "/metrics.sock";
    engine::EpollEngine engine{engine::EngineOptions{16 * 1024, 64, 64}};
    engine::Dispatcher dispatcher{engine};
    Logger log{LogLevel::Error};
    config::MetricsConfig config;
    config.listen.enabled = true;
    config.listen.unix_path = path;  // allow is empty: it does not apply to unix sockets
    MetricsServer server(dispatcher, config, [] { return two_rules_three_servers(); }, log);

    sockaddr_un address{};
    socklen_t length = 0;
    REQUIRE(net::make_unix_address(path, address, length));
    net::UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(client.get(), reinterpret_cast<const sockaddr*>(&address), length) == 0);
    const std::string request = "GET /metrics HTTP/1.1\r\n\r\n";
    REQUIRE(::send(client.get(), request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
    net::set_nonblocking(client.get(), true);
    std::string received;
    for (int round = 0; round < 500; ++round) {
        dispatcher.run_once(10ms);
        char buffer[16384];
        const ssize_t n = ::recv(client.get(), buffer, sizeof buffer, 0);
        if (n > 0) received.append(buffer, static_cast<size_t>(n));
        if (n == 0) break;
    }
    const HttpResponse response = parse_response(received);
    CHECK(response.status_line == "HTTP/1.1 200 OK");
    CHECK(response.body == render_prometheus(two_rules_three_servers()));

    server.stop();
    for (int round = 0; round < 500 && !server.idle(); ++round) dispatcher.run_once(10ms);
    CHECK(server.idle());
    CHECK(::access(path.c_str(), F_OK) != 0);
    ::rmdir(directory);
}
