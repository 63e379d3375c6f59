// Metrics and connection logs against the real binary: the Prometheus text is parsed, the log
// lines are parsed.
#include <map>
#include <regex>
#include <sstream>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// "name{labels}" -> value, for every sample line; fails the test on a line that is neither a
// comment nor a sample.
std::map<std::string, double> parse_samples(const std::string& body) {
    std::map<std::string, double> samples;
    std::istringstream lines(body);
    std::string line;
    const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?) (-?[0-9.eE+-]+|\+Inf|NaN)$)");
    while (std::getline(lines, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::smatch match;
        INFO("line: ", line);
        CHECK(std::regex_match(line, match, sample));
        if (!match.empty()) samples[match[1]] = std::stod(match[3]);
    }
    return samples;
}

}  // namespace

TEST_CASE("metrics: /metrics counts sessions, bytes and failures per rule and server") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port(), dead = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}, {loopback_endpoint(dead)}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    for (int i = 0; i < 5; ++i) CHECK(fetch_name(port) == "a");

    // A send is counted when its completion is handled, a moment after the client has the bytes.
    std::string response;
    for (int i = 0; i < 50; ++i) {
        response = http_get(metrics_port, "/metrics");
        if (response.find("ringlb_rule_bytes_total{rule=\"test\",direction=\"down\"} 10\n") != std::string::npos) break;
        std::this_thread::sleep_for(20ms);
    }
    INFO(response);
    REQUIRE(response.rfind("HTTP/1.", 0) == 0);
    CHECK(response.find(" 200 ") != std::string::npos);
    const std::string body = response.substr(response.find("\r\n\r\n") + 4);
    const auto samples = parse_samples(body);
    const std::string rule = "rule=\"test\"";
    CHECK(samples.at("ringlb_rule_sessions_total{" + rule + "}") >= 5);
    CHECK(samples.at("ringlb_server_sessions_total{" + rule + ",server=\"" + a.endpoint() + "\"}") == 5);
    CHECK(samples.at("ringlb_rule_bytes_total{" + rule + ",direction=\"down\"}") == 10);  // "a\n" x 5
    CHECK(samples.at("ringlb_server_up{" + rule + ",server=\"" + a.endpoint() + "\"}") == 1);
    CHECK(samples.at("ringlb_server_up{" + rule + ",server=\"" + loopback_endpoint(dead) + "\"}") == 0);
    CHECK(samples.at("ringlb_rule_connect_failures_total{" + rule + ",reason=\"refused\"}") >= 1);
    CHECK(samples.at("ringlb_connect_time_seconds_count{" + rule + "}") == 5);
    CHECK(body.find("ringlb_info{") != std::string::npos);
    CHECK(body.find("engine=\"" + test_engine() + "\"") != std::string::npos);
    CHECK(http_get(metrics_port, "/nope").find(" 404 ") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("connection log: one line per session with its end cause, text and json") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.extra_lines = {"log_connections = true"};
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{a.endpoint()}};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(fetch_name(port) == "a");
    REQUIRE(ringlb.wait_for_log(" end="));
    const std::regex text_line(
        "conn client=127\\.0\\.0\\.1:[0-9]+ listener=127\\.0\\.0\\.1:" + std::to_string(port) +
        " rule=test server=" + a.endpoint() + " up=0 down=2 connect_us=[0-9]+ duration_ms=[0-9]+ end=client-fin client_end=fin server_end=fin");
    CHECK(std::regex_search(ringlb.log_text(), text_line));
    CHECK_CLEAN_EXIT(ringlb);

    global.extra_lines = {"log_connections = true", "log_format = \"json\""};
    rule.extra_lines = {"clients = [\"10.0.0.0/8\"]"};
    RinglbProcess json(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(json);
    REQUIRE_READY(json);
    UniqueFd refused = connect_to(port);
    CHECK(read_until_closed(refused.get()).closed());
    REQUIRE(json.wait_for_log("\"end\":"));
    CHECK(json.log_text().find("\"end\":\"acl\"") != std::string::npos);
    CHECK(json.log_text().find("\"server\":null") != std::string::npos);
    CHECK(json.log_text().find("\"client_end\":\"fin\",\"server_end\":null}") != std::string::npos);
    CHECK_CLEAN_EXIT(json);
}

TEST_CASE("metrics: with a token, /metrics needs the bearer token; /healthz stays open") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\"",
                             "token = \"scrape-me-0123456789\""};
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(http_get(metrics_port, "/metrics").find(" 401 ") != std::string::npos);
    CHECK(http_get(metrics_port, "/healthz").find(" 200 ") != std::string::npos);
    const auto with_header = [&](const std::string& header) {
        UniqueFd fd = connect_to(metrics_port);
        send_all(fd.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n" + header + "\r\n\r\n");
        return read_until_closed(fd.get(), 5s).data;
    };
    CHECK(with_header("Authorization: Bearer wrong").find(" 401 ") != std::string::npos);
    const std::string ok = with_header("authorization: bearer scrape-me-0123456789");
    CHECK(ok.find(" 200 ") != std::string::npos);
    CHECK(ok.find("ringlb_info{") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("metrics: reject causes, limits, peak sessions, check results, transitions and per-server histograms") {
    NameBackend a("a"), b("b");
    const std::uint16_t capped_port = find_free_port(), checked_port = find_free_port(), failing_port = find_free_port();
    const std::uint16_t metrics_port = find_free_port(), dead = find_free_port();
    RuleSpec capped;
    capped.id = "capped";
    capped.listen = {loopback_endpoint(capped_port)};
    capped.servers = {{a.endpoint(), 0, false, 7}};
    capped.extra_lines = {"max_clients = 3"};
    RuleSpec checked;
    checked.id = "checked";
    checked.listen = {loopback_endpoint(checked_port)};
    checked.servers = {{b.endpoint()}};
    checked.extra_lines = {"server_histograms = false", "[rule.health]", "interval = \"100ms\"", "rise = 1", "fall = 1"};
    RuleSpec failing;
    failing.id = "failing";
    failing.listen = {loopback_endpoint(failing_port)};
    failing.servers = {{loopback_endpoint(dead)}};
    GlobalSpec global;
    global.extra_lines = {"max_sessions = 5000"};
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    RinglbProcess ringlb(render_config(global, {capped, checked, failing}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<UniqueFd> held(3);
    for (UniqueFd& client : held) REQUIRE(open_session(capped_port, client) == "a");
    UniqueFd over = connect_to(capped_port);  // the fourth: over max_clients
    CHECK(read_until_closed(over.get()).closed());
    held.clear();
    UniqueFd refused = connect_to(failing_port);  // its only server is dead: marked down
    CHECK(read_until_closed(refused.get()).closed());

    std::map<std::string, double> samples;
    const std::string server_b = "rule=\"checked\",server=\"" + b.endpoint() + "\"";
    const std::string server_a = "rule=\"capped\",server=\"" + a.endpoint() + "\"";
    for (int i = 0; i < 100; ++i) {  // checks every 100 ms, sessions counted as they end
        const std::string response = http_get(metrics_port, "/metrics");
        samples = parse_samples(response.substr(response.find("\r\n\r\n") + 4));
        if (samples["ringlb_server_checks_total{" + server_b + ",result=\"pass\"}"] >= 3 &&
            samples["ringlb_sessions_active"] == 0)
            break;
        std::this_thread::sleep_for(50ms);
    }
    CHECK(samples.at("ringlb_rejects_by_cause_total{cause=\"max_clients\"}") == 1);
    CHECK(samples.at("ringlb_rejects_by_cause_total{cause=\"per_ip_limit\"}") == 0);
    CHECK(samples.at("ringlb_rejects_by_cause_total{cause=\"no_server\"}") == 1);
    CHECK(samples.at("ringlb_rule_rejects_by_cause_total{rule=\"capped\",cause=\"max_clients\"}") == 1);
    CHECK(samples.at("ringlb_rejects_total{reason=\"limit\"}") == 1);
    CHECK(samples.at("ringlb_sessions_peak") >= 3);
    CHECK(samples.at("ringlb_sessions_active") == 0);
    CHECK(samples.at("ringlb_max_sessions") == 5000);
    CHECK(samples.at("ringlb_rule_max_clients{rule=\"capped\"}") == 3);
    CHECK(samples.at("ringlb_server_max_connections{" + server_a + "}") == 7);
    CHECK(samples.at("ringlb_server_checks_total{" + server_b + ",result=\"pass\"}") >= 3);
    CHECK(samples.at("ringlb_server_checks_total{" + server_b + ",result=\"fail\"}") == 0);
    CHECK(samples.at("ringlb_server_transitions_total{" + server_b + ",to=\"up\"}") == 1);
    const std::string server_dead = "rule=\"failing\",server=\"" + loopback_endpoint(dead) + "\"";
    CHECK(samples.at("ringlb_server_transitions_total{" + server_dead + ",to=\"down\"}") == 1);
    CHECK(samples.at("ringlb_server_transitions_total{" + server_dead + ",to=\"up\"}") == 0);
    // Per-server histograms for the small rule; none for the rule that switched them off.
    CHECK(samples.at("ringlb_server_connect_time_seconds_count{" + server_a + "}") == 3);
    CHECK(samples.at("ringlb_server_session_duration_seconds_count{" + server_a + "}") == 3);
    CHECK(samples.count("ringlb_server_connect_time_seconds_count{" + server_b + "}") == 0);
    CHECK(samples.at("process_open_fds") >= 6);  // listeners, engine, metrics port at least
    CHECK(samples.at("process_resident_memory_bytes") > 0);
    CHECK(samples.at("process_cpu_seconds_total") >= 0);
    const double now = static_cast<double>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    CHECK(samples.at("process_start_time_seconds") <= now + 1);
    CHECK(samples.at("process_start_time_seconds") >= now - 120);  // started by this test
    CHECK_CLEAN_EXIT(ringlb);
}
