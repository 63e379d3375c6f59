// The eligibility rule every mode shares: weight 0, tried and full servers take no session, and
// backup servers only when no non-backup server can.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "ringlb/balance/balancer.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using ringlb::balance::Server;
using ringlb::test::make_servers;
using ringlb::config::BalanceMode;

namespace {


const BalanceMode kAllModes[] = {BalanceMode::RoundRobin, BalanceMode::MasterStandby, BalanceMode::LeastConn,
                                 BalanceMode::Random,     BalanceMode::PowerOfTwo,    BalanceMode::SourceHash,
                                 BalanceMode::ResponseTime};

net::SocketAddress client_number(int i) {
    return *net::SocketAddress::parse("10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":4000");
}

// The set of servers `balancer` picks over `rounds` picks from varied clients.
std::vector<int> picks(balance::Balancer& balancer, const std::vector<Server>& servers,
                       const std::vector<uint16_t>& tried, int rounds = 200) {
    std::vector<int> counts(servers.size() + 1, 0);  // last slot: nullopt
    for (int i = 0; i < rounds; ++i) {
        const auto pick = balancer.pick(servers, client_number(i), tried);
        ++counts[pick ? *pick : servers.size()];
    }
    return counts;
}

}  // namespace

TEST_CASE("eligible and Candidates apply weight, tried, max_connections and backup") {
    auto servers = make_servers(3);
    servers[2].backup = true;
    const std::vector<uint16_t> none;
    CHECK(balance::eligible(servers[0], 0, none));
    servers[0].max_connections = 2;
    servers[0].connections = 1;
    CHECK(balance::eligible(servers[0], 0, none));
    servers[0].connections = 2;
    CHECK_FALSE(balance::eligible(servers[0], 0, none));
    servers[0].max_connections = 0;  // unlimited
    CHECK(balance::eligible(servers[0], 0, none));
    const std::vector<uint16_t> tried{0};
    CHECK_FALSE(balance::eligible(servers[0], 0, tried));
    servers[1].weight = 0;
    CHECK_FALSE(balance::eligible(servers[1], 1, none));

    const balance::Candidates primaries(servers, none);
    CHECK_FALSE(primaries.backup_tier());
    CHECK(primaries.contains(0));
    CHECK_FALSE(primaries.contains(1));
    CHECK_FALSE(primaries.contains(2));  // backup while a primary is eligible

    const balance::Candidates backups(servers, tried);
    CHECK(backups.backup_tier());
    CHECK_FALSE(backups.empty());
    CHECK(backups.contains(2));
    CHECK_FALSE(backups.contains(0));

    const std::vector<uint16_t> all{0, 2};
    CHECK(balance::Candidates(servers, all).empty());
}

TEST_CASE("every mode: backup only when all primaries are ineligible") {
    for (const BalanceMode mode : kAllModes) {
        CAPTURE(config::to_string(mode));
        auto balancer = balance::make_balancer(mode);
        auto servers = make_servers(3);
        servers[2].backup = true;

        auto counts = picks(*balancer, servers, {});
        CHECK(counts[2] == 0);
        CHECK(counts[3] == 0);
        CHECK(counts[0] + counts[1] == 200);

        // Primaries tried: the backup.
        counts = picks(*balancer, servers, {0, 1});
        CHECK(counts[2] == 200);

        // One primary tried, the other still eligible: never the backup.
        counts = picks(*balancer, servers, {0});
        CHECK(counts[1] == 200);

        // Primaries at weight 0: the backup.
        servers[0].weight = 0;
        servers[1].weight = 0;
        balancer->weights_changed();
        counts = picks(*balancer, servers, {});
        CHECK(counts[2] == 200);

        // Primaries full: the backup.
        servers[0].weight = 1;
        servers[1].weight = 1;
        balancer->weights_changed();
        servers[0].max_connections = 5;
        servers[0].connections = 5;
        servers[1].max_connections = 1;
        servers[1].connections = 3;
        counts = picks(*balancer, servers, {});
        CHECK(counts[2] == 200);

        // One primary below its limit again: back to it.
        servers[1].connections = 0;
        counts = picks(*balancer, servers, {});
        CHECK(counts[1] == 200);

        // Backup tried as well: nothing left.
        servers[1].connections = 1;
        counts = picks(*balancer, servers, {2});
        CHECK(counts[3] == 200);
    }
}

TEST_CASE("every mode: max_connections is respected as sessions come and go") {
    for (const BalanceMode mode : kAllModes) {
        CAPTURE(config::to_string(mode));
        auto balancer = balance::make_balancer(mode);
        auto servers = make_servers(3);
        servers[0].max_connections = 2;
        servers[1].max_connections = 3;
        servers[2].max_connections = 1;
        // Six sessions fill every server exactly; a seventh finds none.
        for (int i = 0; i < 6; ++i) {
            const auto pick = balancer->pick(servers, client_number(i), {});
            REQUIRE(pick);
            ++servers[*pick].connections;
            balancer->session_taken(*pick);
            balancer->connect_time(*pick, std::chrono::microseconds(100 + i));
        }
        CHECK(servers[0].connections == 2);
        CHECK(servers[1].connections == 3);
        CHECK(servers[2].connections == 1);
        CHECK_FALSE(balancer->pick(servers, client_number(7), {}));
        // One ends on server 1: the next session goes there and nowhere else.
        --servers[1].connections;
        balancer->session_dropped(1);
        for (int i = 0; i < 50; ++i) CHECK(balancer->pick(servers, client_number(i), {}) == 1u);
    }
}

TEST_CASE("every mode: weight 0 and tried servers are never picked, empty lists give nullopt") {
    for (const BalanceMode mode : kAllModes) {
        CAPTURE(config::to_string(mode));
        auto balancer = balance::make_balancer(mode);
        auto servers = make_servers(4);
        servers[1].weight = 0;
        balancer->weights_changed();
        const auto counts = picks(*balancer, servers, {3});
        CHECK(counts[1] == 0);
        CHECK(counts[3] == 0);
        CHECK(counts[4] == 0);
        CHECK(counts[0] + counts[2] == 200);
        CHECK_FALSE(balancer->pick(std::vector<Server>{}, client_number(0), {}));
    }
}
