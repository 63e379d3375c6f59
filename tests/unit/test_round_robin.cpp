// Smooth weighted round robin: shares follow weights, picks interleave, failed servers skipped.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "ringlb/balance/round_robin.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using ringlb::balance::Server;
using ringlb::test::make_servers;

using ringlb::test::client;

TEST_CASE("equal weights alternate") {
    balance::RoundRobin rr;
    auto servers = make_servers({1, 1});
    std::string order;
    for (int i = 0; i < 6; ++i) order += std::to_string(*rr.pick(servers, client, {}));
    CHECK(order == "010101");
}

TEST_CASE("weights 3:1 give 3 to 1 and spread the heavy server's turns") {
    balance::RoundRobin rr;
    auto servers = make_servers({3, 1});
    std::map<size_t, int> counts;
    std::string order;
    for (int i = 0; i < 12; ++i) {
        const size_t pick = *rr.pick(servers, client, {});
        ++counts[pick];
        order += std::to_string(pick);
    }
    CHECK(counts[0] == 9);
    CHECK(counts[1] == 3);
    CHECK(order.find("1111") == std::string::npos);
    CHECK(order.find("0000") == std::string::npos);
}

TEST_CASE("weight 0 takes no sessions") {
    balance::RoundRobin rr;
    auto servers = make_servers({0, 1, 1});
    for (int i = 0; i < 10; ++i) CHECK(*rr.pick(servers, client, {}) != 0);
}

TEST_CASE("tried servers are skipped and none left gives nullopt") {
    balance::RoundRobin rr;
    auto servers = make_servers({1, 1, 1});
    const std::vector<uint16_t> tried{0, 2};
    for (int i = 0; i < 5; ++i) CHECK(*rr.pick(servers, client, tried) == 1);
    const std::vector<uint16_t> all{0, 1, 2};
    CHECK_FALSE(rr.pick(servers, client, all));
}

TEST_CASE("make_balancer builds round robin for rr") {
    auto balancer = balance::make_balancer(config::BalanceMode::RoundRobin);
    auto servers = make_servers({1, 1});
    CHECK(*balancer->pick(servers, client, {}) == 0);
    CHECK(*balancer->pick(servers, client, {}) == 1);
}
