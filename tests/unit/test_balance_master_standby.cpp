// Master/standby: the first eligible server in list order, failover and return.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/balance/master_standby.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using ringlb::balance::Server;
using ringlb::test::make_servers;
using ringlb::test::client;

TEST_CASE("ms: the master takes every session, whatever the load or weights") {
    balance::MasterStandby ms;
    auto servers = make_servers(3);
    servers[1].weight = 100;
    servers[0].active_sessions = 1000;
    for (int i = 0; i < 20; ++i) CHECK(ms.pick(servers, client, {}) == 0u);
}

TEST_CASE("ms: failover goes down the list in order, then back to the master") {
    balance::MasterStandby ms;
    auto servers = make_servers(3);
    CHECK(ms.pick(servers, client, std::vector<uint16_t>{0}) == 1u);
    CHECK(ms.pick(servers, client, std::vector<uint16_t>{0, 1}) == 2u);
    CHECK(ms.pick(servers, client, std::vector<uint16_t>{1, 0}) == 2u);
    CHECK_FALSE(ms.pick(servers, client, std::vector<uint16_t>{0, 1, 2}));

    // Master drained (weight 0) then full: the standby; eligible again: the master.
    servers[0].weight = 0;
    CHECK(ms.pick(servers, client, {}) == 1u);
    servers[0].weight = 1;
    servers[0].max_connections = 1;
    servers[0].active_sessions = 1;
    CHECK(ms.pick(servers, client, {}) == 1u);
    servers[0].active_sessions = 0;
    CHECK(ms.pick(servers, client, {}) == 0u);
}

TEST_CASE("ms: a backup listed first still waits for every primary") {
    balance::MasterStandby ms;
    auto servers = make_servers(3);
    servers[0].backup = true;
    CHECK(ms.pick(servers, client, {}) == 1u);
    CHECK(ms.pick(servers, client, std::vector<uint16_t>{1}) == 2u);
    CHECK(ms.pick(servers, client, std::vector<uint16_t>{1, 2}) == 0u);
}
