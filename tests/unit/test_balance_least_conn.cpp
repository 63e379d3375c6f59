// Least connections: fewest active sessions relative to weight; ties rotate.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/balance/least_conn.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using ringlb::balance::Server;
using ringlb::test::make_servers;
using ringlb::test::client;

TEST_CASE("lc: picks the least loaded server") {
    balance::LeastConn lc;
    auto servers = make_servers({1, 1, 1});
    servers[0].connections = 5;
    servers[1].connections = 2;
    servers[2].connections = 7;
    for (int i = 0; i < 5; ++i) CHECK(lc.pick(servers, client, {}) == 1u);
    // Skips a tried least-loaded server for the next one.
    CHECK(lc.pick(servers, client, std::vector<uint16_t>{1}) == 0u);
}

TEST_CASE("lc: load is relative to weight") {
    balance::LeastConn lc;
    auto servers = make_servers({1, 4});
    servers[0].connections = 2;  // 2 per weight
    servers[1].connections = 6;  // 1.5 per weight
    CHECK(lc.pick(servers, client, {}) == 1u);
    servers[1].connections = 9;  // 2.25 per weight
    CHECK(lc.pick(servers, client, {}) == 0u);
}

TEST_CASE("lc: ties rotate instead of piling on the first server") {
    balance::LeastConn lc;
    auto servers = make_servers({1, 1, 1});
    std::string order;
    for (int i = 0; i < 6; ++i) order += std::to_string(*lc.pick(servers, client, {}));
    CHECK(order == "012012");
}

TEST_CASE("lc: with sessions taken and kept, load follows the weights") {
    balance::LeastConn lc;
    auto servers = make_servers({1, 2, 3});
    for (int i = 0; i < 600; ++i) {
        const size_t pick = *lc.pick(servers, client, {});
        ++servers[pick].connections;
    }
    CHECK(servers[0].connections == 100);
    CHECK(servers[1].connections == 200);
    CHECK(servers[2].connections == 300);
}
