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
    servers[0].connections = 1000;
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
    servers[0].connections = 1;
    CHECK(ms.pick(servers, client, {}) == 1u);
    servers[0].connections = 0;
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

TEST_CASE("ms: without failback the standby keeps the sessions after the master is back") {
    balance::MasterStandby ms(/*failback=*/false);
    auto servers = make_servers(3);
    CHECK(ms.pick(servers, client, {}) == 0u);
    servers[0].down = true;
    CHECK(ms.pick(servers, client, {}) == 1u);
    servers[0].down = false;  // the master is back, but the standby stays in use
    for (int i = 0; i < 5; ++i) CHECK(ms.pick(servers, client, {}) == 1u);
    // Until the standby fails in turn: then the first eligible in order, the master.
    servers[1].check_down = true;
    CHECK(ms.pick(servers, client, {}) == 0u);
    servers[1].check_down = false;
    CHECK(ms.pick(servers, client, {}) == 0u);
    // A client that already failed on the current server tries the others in order.
    CHECK(ms.pick(servers, client, std::vector<uint16_t>{0}) == 1u);
}

TEST_CASE("ms: with failback (the default) the master is used again as soon as it is back") {
    balance::MasterStandby ms;
    auto servers = make_servers(2);
    servers[0].disabled = true;
    CHECK(ms.pick(servers, client, {}) == 1u);
    servers[0].disabled = false;
    CHECK(ms.pick(servers, client, {}) == 0u);
}
