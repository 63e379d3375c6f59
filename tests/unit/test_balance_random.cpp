// Weighted random and power of two choices: shares follow the weights (chi-square bound on a
// fixed seed and iteration count), p2c avoids the busier of its two draws.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/balance/power_of_two.hpp"
#include "ringlb/balance/random.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using ringlb::balance::Server;
using ringlb::test::make_servers;
using ringlb::test::client;

namespace {



// Pearson's chi-square of `counts` against shares proportional to the weights.
double chi_square(const std::vector<int>& counts, const std::vector<Server>& servers) {
    double total_weight = 0;
    int total = 0;
    for (size_t i = 0; i < servers.size(); ++i) {
        total_weight += servers[i].weight;
        total += counts[i];
    }
    double chi = 0;
    for (size_t i = 0; i < servers.size(); ++i) {
        const double expected = total * servers[i].weight / total_weight;
        if (expected == 0) {
            if (counts[i] != 0) return 1e9;
            continue;
        }
        const double diff = counts[i] - expected;
        chi += diff * diff / expected;
    }
    return chi;
}

// The chi-square critical value for 3 degrees of freedom at p = 0.001.
constexpr double kChi3 = 16.27;
constexpr int kPicks = 100000;

std::vector<int> count_picks(balance::Balancer& balancer, const std::vector<Server>& servers) {
    std::vector<int> counts(servers.size(), 0);
    for (int i = 0; i < kPicks; ++i) ++counts[*balancer.pick(servers, client, {})];
    return counts;
}

}  // namespace

TEST_CASE("rd: shares follow weights 1:2:3:4") {
    auto servers = make_servers({1, 2, 3, 4});
    for (uint64_t seed : {1u, 2u, 3u}) {
        balance::Random rd(seed);
        const auto counts = count_picks(rd, servers);
        CAPTURE(seed);
        CHECK(chi_square(counts, servers) < kChi3);
    }
    // A grossly wrong distribution would fail the same bound.
    CHECK(chi_square({25000, 25000, 25000, 25000}, servers) > kChi3);
}

TEST_CASE("rd: weight 0 and tried servers never come up, the default seed works") {
    balance::Random rd;
    auto servers = make_servers({1, 0, 1, 1});
    for (int i = 0; i < 1000; ++i) {
        const size_t pick = *rd.pick(servers, client, std::vector<uint16_t>{2});
        CHECK((pick == 0 || pick == 3));
    }
}

TEST_CASE("p2c: with equal load, shares follow weights 1:2:3:4") {
    auto servers = make_servers({1, 2, 3, 4});
    for (uint64_t seed : {7u, 8u, 9u}) {
        balance::PowerOfTwo p2c(seed);
        const auto counts = count_picks(p2c, servers);
        CAPTURE(seed);
        CHECK(chi_square(counts, servers) < kChi3);
    }
}

TEST_CASE("p2c: of two servers, always the less loaded one relative to weight") {
    balance::PowerOfTwo p2c(11);
    auto servers = make_servers({1, 1});
    servers[0].connections = 10;
    servers[1].connections = 3;
    for (int i = 0; i < 200; ++i) CHECK(p2c.pick(servers, client, {}) == 1u);
    servers[1].weight = 1;
    servers[0].weight = 5;  // 10 / 5 = 2 < 3
    for (int i = 0; i < 200; ++i) CHECK(p2c.pick(servers, client, {}) == 0u);
}

TEST_CASE("p2c: the busiest of many servers is never picked, the idlest most often") {
    balance::PowerOfTwo p2c(12);
    auto servers = make_servers({1, 1, 1, 1, 1});
    for (size_t i = 0; i < servers.size(); ++i) servers[i].connections = static_cast<uint32_t>(10 * i);
    std::vector<int> counts(servers.size(), 0);
    for (int i = 0; i < 10000; ++i) ++counts[*p2c.pick(servers, client, {})];
    CHECK(counts[4] == 0);
    for (size_t i = 1; i < servers.size(); ++i) CHECK(counts[i - 1] > counts[i]);
    // Two distinct draws: the idlest wins whenever it is drawn, i.e. 2 of 5 draws = 40%.
    CHECK(counts[0] > 3600);
    CHECK(counts[0] < 4400);
}

TEST_CASE("p2c: balances load as sessions are taken") {
    balance::PowerOfTwo p2c(13);
    auto servers = make_servers({1, 1, 1, 1});
    for (int i = 0; i < 4000; ++i) ++servers[*p2c.pick(servers, client, {})].connections;
    for (const Server& server : servers) {
        CHECK(server.connections > 950);
        CHECK(server.connections < 1050);
    }
}
