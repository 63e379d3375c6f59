// Rule-level access and limits: deny lists (checked before clients, a later rule may still take
// the client), clients by exact IP and wildcard, max_clients, per-rule max_sessions_per_ip,
// max_conn_rate_per_ip, and exact release of every count under churn across two workers.
#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// A connection ringlb accepts and closes at once, without a byte.
bool refused_without_data(std::uint16_t port) {
    UniqueFd client = connect_to(port);
    if (!client.valid()) return false;
    ReadResult result = read_until_closed(client.get(), 3s);
    INFO("ended by ", std::string(to_string(result.end)), " with ", result.data.size(), " bytes");
    return result.closed() && result.data.empty();
}

// Retries for a while: a closed session is released only once ringlb has noticed the FIN.
std::string open_session_eventually(std::uint16_t port, UniqueFd& client, const std::string& expected) {
    std::string name;
    for (auto deadline = Clock::now() + 3s; Clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
        name = open_session(port, client);
        if (name == expected) break;
    }
    return name;
}

RuleSpec rule(std::string id, std::vector<std::string> listen, std::vector<ServerSpec> servers,
              std::vector<std::string> extra_lines = {}) {
    RuleSpec spec;
    spec.id = std::move(id);
    spec.listen = std::move(listen);
    spec.servers = std::move(servers);
    spec.extra_lines = std::move(extra_lines);
    return spec;
}

}  // namespace

TEST_CASE("deny: a denied client skips the rule; a later rule takes it, or it is closed without data") {
    NameBackend a("a"), b("b");
    std::uint16_t shared_port = find_free_port();
    std::uint16_t only_port = find_free_port();
    GlobalSpec global;
    global.log_level = "debug";
    RinglbProcess ringlb(render_config(
        global, {rule("blocked", {loopback_endpoint(shared_port), loopback_endpoint(only_port)}, {{a.endpoint()}},
                      {"deny = [\"127.0.0.0/8\"]"}),
                 rule("rest", {loopback_endpoint(shared_port)}, {{b.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    for (int i = 0; i < 3; ++i) CHECK(fetch_name(shared_port) == "b");
    CHECK(refused_without_data(only_port));
    CHECK(ringlb.wait_for_log("is denied", 3s));
    std::this_thread::sleep_for(200ms);
    CHECK(a.accepted() == 0);  // the denying rule's backend was never reached
    CHECK(b.accepted() == 3);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("clients: an exact IP and 127.0.0.* match, 10.* does not (closed without data)") {
    NameBackend exact("exact"), wild("wild"), ten("ten");
    std::uint16_t exact_port = find_free_port(), wild_port = find_free_port(), ten_port = find_free_port();
    RinglbProcess ringlb(render_config(
        {}, {rule("exact", {loopback_endpoint(exact_port)}, {{exact.endpoint()}}, {"clients = [\"127.0.0.1\"]"}),
             rule("wild", {loopback_endpoint(wild_port)}, {{wild.endpoint()}}, {"clients = [\"127.0.0.*\"]"}),
             rule("ten", {loopback_endpoint(ten_port)}, {{ten.endpoint()}}, {"clients = [\"10.*\"]"})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    CHECK(fetch_name(exact_port) == "exact");
    CHECK(fetch_name(wild_port) == "wild");
    CHECK(refused_without_data(ten_port));
    std::this_thread::sleep_for(200ms);
    CHECK(ten.accepted() == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("max_clients = 2: the third concurrent session of the rule is closed, a freed one is reusable") {
    NameBackend backend("a");
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(render_config({}, {rule("capped", {loopback_endpoint(port)}, {{backend.endpoint()}},
                                                 {"max_clients = 2"})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd first, second, again;
    REQUIRE(open_session(port, first) == "a");
    REQUIRE(open_session(port, second) == "a");
    CHECK(refused_without_data(port));
    std::this_thread::sleep_for(200ms);
    CHECK(backend.accepted() == 2);

    first.reset();
    CHECK(open_session_eventually(port, again, "a") == "a");
    CHECK(refused_without_data(port));
    CHECK(backend.accepted() == 3);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("rule max_sessions_per_ip = 1 with global max_sessions_per_ip = 0") {
    NameBackend backend("a");
    std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.max_sessions_per_ip = 0;
    RinglbProcess ringlb(render_config(global, {rule("one", {loopback_endpoint(port)}, {{backend.endpoint()}},
                                                     {"max_sessions_per_ip = 1"})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd first, again;
    REQUIRE(open_session(port, first) == "a");
    CHECK(refused_without_data(port));
    CHECK(refused_without_data(port));
    std::this_thread::sleep_for(200ms);
    CHECK(backend.accepted() == 1);

    first.reset();
    CHECK(open_session_eventually(port, again, "a") == "a");
    CHECK(refused_without_data(port));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("max_conn_rate_per_ip = 5: a burst of about 5 of 20 quick connections, more after a second") {
    NameBackend backend("a");
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(render_config({}, {rule("rated", {loopback_endpoint(port)}, {{backend.endpoint()}},
                                                 {"max_conn_rate_per_ip = 5"})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<UniqueFd> clients;
    for (int i = 0; i < 20; ++i) clients.push_back(connect_to(port));
    int served = 0, refused = 0;
    for (UniqueFd& client : clients) {
        REQUIRE(client.valid());
        ReadResult line = read_line(client.get(), 3s);
        if (line.end == ReadEnd::Limit && line.data == "a") ++served;
        else if (line.closed() && line.data.empty()) ++refused;
    }
    INFO("served ", served, ", refused ", refused);
    CHECK(served >= 5);
    CHECK(served <= 7);  // one more token per 200 ms while the 20 were being opened
    CHECK(served + refused == 20);
    clients.clear();

    std::this_thread::sleep_for(1100ms);  // the bucket is full again
    int served_later = 0;
    for (int i = 0; i < 5; ++i)
        if (fetch_name(port) == "a") ++served_later;
    CHECK(served_later == 5);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("churn over two workers: 2,000 failed or refused connections leave no count behind") {
    NameBackend live("live");
    std::string dead1 = loopback_endpoint(find_free_port());
    std::string dead2 = loopback_endpoint(find_free_port());
    std::uint16_t dead_port = find_free_port(), live_port = find_free_port();
    GlobalSpec global;
    global.threads = 2;
    global.max_sessions_per_ip = 2;
    global.log_level = "debug";
    RinglbProcess ringlb(render_config(
        global, {rule("dead", {loopback_endpoint(dead_port)}, {{dead1}, {dead2}},
                      {"max_clients = 3", "max_sessions_per_ip = 1", "max_conn_rate_per_ip = 0"}),
                 rule("live", {loopback_endpoint(live_port)}, {{live.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    constexpr int kTotal = 2000, kWave = 20;
    int closed_empty = 0;
    for (int done = 0; done < kTotal; done += kWave) {
        std::vector<UniqueFd> wave;
        for (int i = 0; i < kWave; ++i) wave.push_back(connect_to(dead_port));
        for (UniqueFd& client : wave) {
            if (!client.valid()) continue;
            ReadResult result = read_until_closed(client.get(), 5s);
            if (result.closed() && result.data.empty()) ++closed_empty;
        }
    }
    CHECK(closed_empty == kTotal);
    CHECK(ringlb.running());

    // The global per-IP count is back to 0: exactly two sessions fit again.
    std::this_thread::sleep_for(200ms);
    UniqueFd one, two;
    CHECK(open_session_eventually(live_port, one, "live") == "live");
    CHECK(open_session(live_port, two) == "live");
    CHECK(refused_without_data(live_port));
    one.reset();
    two.reset();

    // The dead rule's own counts are back to 0 too: a new client is admitted (its session starts
    // and ends) instead of being refused by max_clients or the rule's per-IP limit.
    std::this_thread::sleep_for(300ms);
    const std::size_t log_before = ringlb.log_text().size();
    UniqueFd probe = connect_to(dead_port);
    REQUIRE(probe.valid());
    ReadResult result = read_until_closed(probe.get(), 5s);
    CHECK(result.closed());
    std::this_thread::sleep_for(200ms);
    const std::string tail = ringlb.log_text().substr(log_before);
    INFO("log after the probe:\n", tail);
    CHECK(tail.find(" ended") != std::string::npos);
    CHECK(tail.find("(rule dead): closed") == std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}
