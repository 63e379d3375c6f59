// Response time: unsampled servers first (in order), then the lowest moving average, which ages
// so that slow servers are measured again now and then.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/balance/response_time.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using namespace std::chrono_literals;
using ringlb::balance::Server;
using ringlb::test::make_servers;
using ringlb::test::client;

TEST_CASE("rt: servers without a sample are tried first, in order") {
    balance::ResponseTime rt;
    const auto servers = make_servers(3);
    CHECK(rt.pick(servers, client, {}) == 0u);
    CHECK(rt.pick(servers, client, {}) == 0u);  // still unmeasured
    rt.connect_time(0, 500us);
    CHECK(rt.pick(servers, client, {}) == 1u);
    rt.connect_time(1, 100us);
    CHECK(rt.pick(servers, client, {}) == 2u);
    rt.connect_time(2, 300us);
    CHECK(rt.pick(servers, client, {}) == 1u);  // all measured: the fastest
}

TEST_CASE("rt: the moving average uses alpha 0.3 and follows a server that slows down") {
    balance::ResponseTime rt;
    const auto servers = make_servers(2);
    rt.connect_time(0, 100us);
    rt.connect_time(1, 200us);
    CHECK(rt.average(0) == doctest::Approx(100));
    CHECK(rt.pick(servers, client, {}) == 0u);
    rt.connect_time(0, 400us);  // 0.3 * 400 + 0.7 * 100 = 190
    CHECK(rt.average(0) == doctest::Approx(190));
    CHECK(rt.pick(servers, client, {}) == 0u);
    rt.connect_time(0, 400us);  // 0.3 * 400 + 0.7 * 190 = 253
    CHECK(rt.average(0) == doctest::Approx(253));
    CHECK(rt.pick(servers, client, {}) == 1u);
    CHECK(rt.average(5) < 0);
}

TEST_CASE("rt: the fastest is skipped when tried, and an unsampled backup waits for the primaries") {
    balance::ResponseTime rt;
    auto servers = make_servers(3);
    servers[2].backup = true;
    rt.connect_time(0, 50us);
    rt.connect_time(1, 80us);
    CHECK(rt.pick(servers, client, {}) == 0u);
    CHECK(rt.pick(servers, client, std::vector<uint16_t>{0}) == 1u);
    CHECK(rt.pick(servers, client, std::vector<uint16_t>{0, 1}) == 2u);
}

namespace {

// Picks `count` times; each chosen server's connect takes connect_us[server]. Returns how many
// picks each server got.
std::vector<size_t> run_picks(balance::ResponseTime& rt, const std::vector<Server>& servers,
                              const std::vector<long>& connect_us, size_t count) {
    std::vector<size_t> chosen(servers.size(), 0);
    for (size_t i = 0; i < count; ++i) {
        const auto pick = rt.pick(servers, client, {});
        REQUIRE(pick.has_value());
        ++chosen[*pick];
        rt.connect_time(*pick, std::chrono::microseconds(connect_us[*pick]));
    }
    return chosen;
}

}  // namespace

TEST_CASE("rt: a server measured slow is measured again now and then, not never") {
    balance::ResponseTime rt;
    const auto servers = make_servers(2);
    rt.connect_time(0, 100us);
    rt.connect_time(1, 1000us);  // slow once: ten times the other
    size_t picks_until_retry = 0;
    while (picks_until_retry < 10'000 && rt.pick(servers, client, {}) == 0u) {
        rt.connect_time(0, 100us);
        ++picks_until_retry;
    }
    CHECK(picks_until_retry < 10'000);
    CHECK(picks_until_retry > 50);  // a trial now and then, not every other session
    MESSAGE("a server 10x slower is tried again after ", picks_until_retry, " picks");

    // Still slow: it keeps getting occasional trials, a small share of the sessions.
    const auto shares = run_picks(rt, servers, {100, 1000}, 10'000);
    CHECK(shares[1] >= 10);
    CHECK(shares[1] <= 300);
}

TEST_CASE("rt: a server that recovers wins again") {
    balance::ResponseTime rt;
    const auto servers = make_servers(2);
    rt.connect_time(0, 100us);
    rt.connect_time(1, 5000us);  // slow at first (a cold cache, a restart)
    CHECK(run_picks(rt, servers, {100, 5000}, 1000)[0] > 950);
    // Server 1 is now twice as fast as server 0: once a trial has measured that, it takes most
    // sessions.
    run_picks(rt, servers, {100, 50}, 1000);
    const auto shares = run_picks(rt, servers, {100, 50}, 1000);
    CHECK(shares[1] > 900);
}

TEST_CASE("rt: a server under trial does not take a burst of picks before its sample comes") {
    balance::ResponseTime rt;
    const auto servers = make_servers(2);
    rt.connect_time(0, 100us);
    rt.connect_time(1, 1000us);
    size_t picks = 0;
    while (picks < 10'000 && rt.pick(servers, client, {}) == 0u) {
        rt.connect_time(0, 100us);
        ++picks;
    }
    REQUIRE(picks < 10'000);  // server 1 was just picked for a trial
    // Its connect is still in progress: the next picks go to server 0 again.
    for (int i = 0; i < 20; ++i) CHECK(rt.pick(servers, client, {}) == 0u);
}
