// Proves that a server refusing connections is skipped (the session goes to the next server),
// and that a rule whose servers are all down closes clients without harming ringlb.
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

TEST_CASE("refused servers are skipped: 20 sessions over [dead, a, dead, b] are all served") {
    NameBackend a("a"), b("b");
    std::string dead1 = loopback_endpoint(find_free_port());
    std::string dead2 = loopback_endpoint(find_free_port());
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{dead1}, {a.endpoint()}, {dead2}, {b.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    unsigned served = 0;
    for (int i = 0; i < 20; ++i) {
        std::string name = fetch_name(port);
        CHECK_MESSAGE((name == "a" || name == "b"), "session ", i, " got '", name, "'");
        if (!name.empty()) ++served;
    }
    CHECK(served == 20);
    CHECK(a.accepted() + b.accepted() == 20);
    CHECK(a.accepted() > 0);
    CHECK(b.accepted() > 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("all servers refused: the client is closed without data and ringlb keeps serving") {
    NameBackend live("live");
    std::string dead1 = loopback_endpoint(find_free_port());
    std::string dead2 = loopback_endpoint(find_free_port());
    std::uint16_t dead_port = find_free_port();
    std::uint16_t live_port = find_free_port();
    RuleSpec dead_rule;
    dead_rule.id = "dead";
    dead_rule.listen = {loopback_endpoint(dead_port)};
    dead_rule.servers = {{dead1}, {dead2}};
    dead_rule.connect_timeout = "2s";
    RuleSpec live_rule;
    live_rule.id = "live";
    live_rule.listen = {loopback_endpoint(live_port)};
    live_rule.servers = {{live.endpoint()}};
    RinglbProcess ringlb(render_config({}, {dead_rule, live_rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    for (int attempt = 0; attempt < 3; ++attempt) {
        CAPTURE(attempt);
        UniqueFd client = connect_to(dead_port);
        REQUIRE(client.valid());
        auto started = Clock::now();
        ReadResult result = read_until_closed(client.get(), 5s);
        auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
        INFO("ended by ", std::string(to_string(result.end)), " after ", elapsed.count(), " ms");
        CHECK(result.closed());
        CHECK(result.data.empty());
        CHECK(elapsed <= 3s);  // refusals are immediate; connect_timeout = 2s is the upper bound
    }

    CHECK(ringlb.running());
    CHECK(fetch_name(live_port) == "live");
    // The failure is logged with the address that refused.
    CHECK(ringlb.wait_for_log(dead1, 3s));
    CHECK_CLEAN_EXIT(ringlb);
}
