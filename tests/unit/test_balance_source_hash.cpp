// Source hash: a client IP always maps to the same server, the ring spreads clients evenly, and
// adding or removing one of N servers moves only about 1/N of the clients.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "ringlb/balance/source_hash.hpp"

using namespace ringlb;
using ringlb::balance::Server;

namespace {

Server server_at(int n, unsigned weight = 1) {
    Server server;
    server.address = *net::SocketAddress::parse("10.9.0." + std::to_string(n) + ":8080");
    server.weight = weight;
    return server;
}

std::vector<Server> make_servers(int count) {
    std::vector<Server> servers;
    for (int i = 1; i <= count; ++i) servers.push_back(server_at(i));
    return servers;
}

std::vector<net::SocketAddress> random_clients(size_t count, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<net::SocketAddress> clients;
    for (size_t i = 0; i < count; ++i) {
        const uint64_t ip = rng();
        const uint16_t port = static_cast<uint16_t>(1024 + rng() % 60000);
        if (i % 4 == 3) {  // some IPv6 clients as well
            char text[64];
            std::snprintf(text, sizeof text, "[2001:db8::%x:%x]:%u", static_cast<unsigned>(ip & 0xffff),
                          static_cast<unsigned>((ip >> 16) & 0xffff), port);
            clients.push_back(*net::SocketAddress::parse(text));
        } else {
            clients.push_back(*net::SocketAddress::parse(
                std::to_string((ip >> 24) & 255) + "." + std::to_string((ip >> 16) & 255) + "." +
                std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255) + ":" + std::to_string(port)));
        }
    }
    return clients;
}

// The address each client maps to (addresses, not indices: indices shift when a server goes).
std::vector<std::string> assignment(balance::SourceHash& hs, const std::vector<Server>& servers,
                                    const std::vector<net::SocketAddress>& clients) {
    std::vector<std::string> out;
    out.reserve(clients.size());
    for (const auto& client : clients) out.push_back(servers[*hs.pick(servers, client, {})].address.to_string());
    return out;
}

double moved_fraction(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    size_t moved = 0;
    for (size_t i = 0; i < a.size(); ++i) moved += a[i] != b[i];
    return static_cast<double>(moved) / static_cast<double>(a.size());
}

}  // namespace

TEST_CASE("hs: the same client IP always maps to the same server, whatever its port") {
    balance::SourceHash hs;
    const auto servers = make_servers(10);
    const auto clients = random_clients(1000, 1);
    const auto first = assignment(hs, servers, clients);
    CHECK(assignment(hs, servers, clients) == first);
    balance::SourceHash other;  // a fresh balancer (another worker) agrees
    CHECK(assignment(other, servers, clients) == first);
    const auto a = *net::SocketAddress::parse("198.51.100.7:1000");
    const auto b = *net::SocketAddress::parse("198.51.100.7:2000");
    const auto mapped = *net::SocketAddress::parse("[::ffff:198.51.100.7]:3000");
    CHECK(hs.pick(servers, a, {}) == hs.pick(servers, b, {}));
    CHECK(hs.pick(servers, a, {}) == hs.pick(servers, mapped, {}));
    CHECK(hs.ring_size() == 10 * balance::SourceHash::kPointsPerWeight);
}

TEST_CASE("hs: clients spread evenly, and by weight") {
    balance::SourceHash hs;
    auto servers = make_servers(10);
    const auto clients = random_clients(10000, 2);
    std::vector<int> counts(servers.size(), 0);
    for (const auto& client : clients) ++counts[*hs.pick(servers, client, {})];
    for (int count : counts) {
        CHECK(count > 500);
        CHECK(count < 1500);
    }
    servers[0].weight = 3;  // 3 of 12 shares
    servers[1].weight = 0;  // none
    hs.weights_changed();
    std::fill(counts.begin(), counts.end(), 0);
    for (const auto& client : clients) ++counts[*hs.pick(servers, client, {})];
    CHECK(counts[1] == 0);
    CHECK(counts[0] > 1800);
    CHECK(counts[0] < 3200);
}

TEST_CASE("hs: removing or adding one of 10 servers moves only about a tenth of the clients") {
    const auto clients = random_clients(10000, 3);
    const auto ten = make_servers(10);
    balance::SourceHash hs;
    const auto before = assignment(hs, ten, clients);

    // Remove the fourth server: the list is rebuilt (detected by the signature, no hook).
    auto nine = ten;
    nine.erase(nine.begin() + 3);
    const auto after_remove = assignment(hs, nine, clients);
    const double removed = moved_fraction(before, after_remove);
    CHECK(removed > 0.03);  // its clients did move
    CHECK(removed < 0.2);
    // Only the removed server's clients moved.
    for (size_t i = 0; i < clients.size(); ++i)
        if (before[i] != after_remove[i]) CHECK(before[i] == ten[3].address.to_string());

    // Add an eleventh: only clients that now go to it move.
    auto eleven = ten;
    eleven.push_back(server_at(11));
    const auto after_add = assignment(hs, eleven, clients);
    const double added = moved_fraction(before, after_add);
    CHECK(added > 0.03);
    CHECK(added < 0.2);
    for (size_t i = 0; i < clients.size(); ++i)
        if (before[i] != after_add[i]) CHECK(after_add[i] == eleven[10].address.to_string());

    // And back: the original assignment.
    CHECK(assignment(hs, ten, clients) == before);
}

TEST_CASE("hs: an ineligible server's clients walk on deterministically; the others stay") {
    balance::SourceHash hs;
    auto servers = make_servers(5);
    const auto clients = random_clients(2000, 4);
    std::vector<size_t> home;
    for (const auto& client : clients) home.push_back(*hs.pick(servers, client, {}));

    const std::vector<uint16_t> tried{2};
    std::vector<size_t> second;
    for (size_t i = 0; i < clients.size(); ++i) {
        const size_t pick = *hs.pick(servers, clients[i], tried);
        CHECK(pick != 2);
        if (home[i] != 2) CHECK(pick == home[i]);
        second.push_back(pick);
    }
    // The same answer again, and the same when the server is full instead of tried.
    servers[2].max_connections = 1;
    servers[2].connections = 1;
    for (size_t i = 0; i < clients.size(); ++i) CHECK(*hs.pick(servers, clients[i], {}) == second[i]);
    // Free again: everyone home.
    servers[2].connections = 0;
    for (size_t i = 0; i < clients.size(); ++i) CHECK(*hs.pick(servers, clients[i], {}) == home[i]);
}
