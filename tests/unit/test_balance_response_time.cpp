// Response time: unsampled servers first (in order), then the lowest moving average.
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
