// Connections per server over all workers (core::ServerConnections): servers[].max_connections
// holds for bursts and across workers, a connect in progress counts, least connections sees the
// connections of every worker, and every count comes back.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "forwarder_harness.hpp"
#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/server_connections.hpp"
#include "ringlb/core/session_limits.hpp"

using namespace ringlb;
using namespace ringlb::core;
using namespace std::chrono_literals;
using test::RecordingEngine;
using Kind = RecordingEngine::Kind;

namespace {

net::SocketAddress address(const char* text) { return *net::SocketAddress::parse(text); }

}  // namespace

TEST_CASE("server connections: one count per rule id and address, gone with its last holder") {
    ServerConnections table;
    auto a = table.count("web", address("127.0.0.1:9001"));
    auto same = table.count("web", address("127.0.0.1:9001"));
    auto other_rule = table.count("api", address("127.0.0.1:9001"));
    auto other_server = table.count("web", address("127.0.0.1:9002"));
    CHECK(a == same);
    CHECK(a != other_rule);
    CHECK(a != other_server);
    CHECK(table.tracked() == 3);
    a->store(2);
    CHECK(same->load() == 2);
    a.reset();
    CHECK(table.tracked() == 3);  // `same` still holds it
    same.reset();
    other_rule.reset();
    CHECK(table.tracked() == 1);
    auto again = table.count("web", address("127.0.0.1:9001"));
    CHECK(again->load() == 0);  // a fresh count
}

TEST_CASE("server connections: a rule's counts taken together are the ones taken one by one") {
    ServerConnections table;
    const std::vector<net::SocketAddress> servers{address("127.0.0.1:9001"), address("[::1]:9001"),
                                                  address("127.0.0.1:9002"), address("127.0.0.1:9001")};
    auto held = table.count("web", servers[1]);
    held->store(5);
    std::vector<ServerConnections::Handle> counts = table.counts("web", servers);
    REQUIRE(counts.size() == 4);
    CHECK(counts[1] == held);  // a count already held is shared, with its connections
    CHECK(counts[1]->load() == 5);
    CHECK(counts[0] == counts[3]);  // a server listed twice has one count
    CHECK(counts[0] != counts[2]);
    CHECK(counts[0] != table.count("api", servers[0]));
    CHECK(table.tracked() == 3);
    // A second version of the rule (a reload) gets the same counts while the first holds them.
    const std::vector<ServerConnections::Handle> reloaded = table.counts("web", {servers[2], servers[0]});
    CHECK(reloaded[0] == counts[2]);
    CHECK(reloaded[1] == counts[0]);
    held.reset();
    CHECK(table.tracked() == 3);
    counts.clear();
    CHECK(table.tracked() == 2);  // the reloaded version's two
}

TEST_CASE("server connections: try_take stops at the limit, 0 means none, give_back frees one") {
    ServerConnections::Count count{0};
    CHECK(ServerConnections::try_take(count, 2));
    CHECK(ServerConnections::try_take(count, 2));
    CHECK_FALSE(ServerConnections::try_take(count, 2));
    ServerConnections::give_back(count);
    CHECK(ServerConnections::try_take(count, 2));
    CHECK(count.load() == 2);
    for (int i = 0; i < 100; ++i) CHECK(ServerConnections::try_take(count, 0));
    CHECK(count.load() == 102);
}

TEST_CASE("server connections: eight threads racing for three connections get exactly three") {
    for (int round = 0; round < 200; ++round) {
        ServerConnections::Count count{0};
        std::atomic<int> taken{0};
        std::atomic<bool> go{false};
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t)
            threads.emplace_back([&] {
                while (!go.load()) {
                }
                for (int i = 0; i < 10; ++i)
                    if (ServerConnections::try_take(count, 3)) ++taken;
            });
        go = true;
        for (auto& thread : threads) thread.join();
        REQUIRE(taken.load() == 3);
        REQUIRE(count.load() == 3);
    }
}

// ---- through the session core: two workers sharing one SessionLimits -------------------------

namespace {

config::Config capped_rule(config::BalanceMode mode, std::vector<uint32_t> caps) {
    config::Config config;
    config.source = "test";
    config::RuleConfig rule;
    rule.id = "capped";
    rule.mode = mode;
    rule.listen.push_back(address("127.0.0.1:0"));
    uint16_t port = 1;
    for (uint32_t cap : caps) {
        config::ServerConfig server{address(("127.0.0.1:" + std::to_string(port++)).c_str()), 1};
        server.max_connections = cap;
        rule.servers.push_back(server);
    }
    config.rules.push_back(rule);
    return config;
}

struct Worker : test::SharedLimitsWorker {
    using SharedLimitsWorker::SharedLimitsWorker;
    // `count` clients arrive at once; their connects are left pending.
    void burst(test::LoopbackAcceptor& acceptor, int count) {
        for (int i = 0; i < count; ++i) complete_accept(acceptor);
        turn();
    }
    // Servers (by port) of the connects in progress.
    std::vector<int> connecting() const {
        std::vector<int> ports;
        for (const auto& request : engine.requests)
            if (request.kind == Kind::Connect) ports.push_back(request.to.port());
        return ports;
    }
};

}  // namespace

TEST_CASE("forwarder: max_connections counts connects in progress and holds across workers") {
    const config::Config config = capped_rule(config::BalanceMode::RoundRobin, {2});
    SessionLimits limits(config);
    Worker first(config, limits, 0);
    Worker second(config, limits, 1);
    test::LoopbackAcceptor acceptor;

    // Ten clients on each worker at once: two connects start in all, the rest find no server.
    first.burst(acceptor, 10);
    second.burst(acceptor, 10);
    CHECK(first.engine.count(Kind::Connect) + second.engine.count(Kind::Connect) == 2);
    CHECK(first.forwarder.stats().no_server_left + second.forwarder.stats().no_server_left == 18);

    // A failed connect gives its connection back: the next client gets it.
    Worker& holder = first.engine.count(Kind::Connect) > 0 ? first : second;
    const auto failed = holder.engine.try_take(Kind::Connect);
    REQUIRE(failed);
    holder.engine.complete(*failed, -ECONNREFUSED);
    holder.turn();
    second.burst(acceptor, 1);
    CHECK(first.engine.count(Kind::Connect) + second.engine.count(Kind::Connect) == 2);

    // Established sessions keep theirs; once they end, the count is back at zero.
    for (Worker* worker : {&first, &second}) {
        while (auto connect = worker->engine.try_take(Kind::Connect)) worker->engine.complete(*connect, 0);
        worker->turn();
    }
    second.burst(acceptor, 3);
    CHECK(second.engine.count(Kind::Connect) == 0);
    for (Worker* worker : {&first, &second}) {
        while (auto recv = worker->engine.try_take(Kind::Recv)) {
            worker->engine.complete(*recv, -ECONNRESET);
            worker->turn();
        }
        worker->turn();
        CHECK(worker->forwarder.active_sessions() == 0);
    }
    first.burst(acceptor, 2);
    CHECK(first.engine.count(Kind::Connect) == 2);
}

TEST_CASE("forwarder: least connections counts connects in progress, also those of other workers") {
    const config::Config config = capped_rule(config::BalanceMode::LeastConn, {0, 0});
    SessionLimits limits(config);
    Worker first(config, limits, 0);
    Worker second(config, limits, 1);
    test::LoopbackAcceptor acceptor;

    // The first worker's two clients are still connecting, one to each server; one of them then
    // completes. The second worker's next client goes to the server that has fewer connections.
    first.burst(acceptor, 2);
    REQUIRE(first.engine.count(Kind::Connect) == 2);
    const auto connect = first.engine.try_take(Kind::Connect);
    const int established_port = connect->to.port();
    first.engine.complete(*connect, 0);
    first.turn();
    first.burst(acceptor, 1);  // a third connection, to the server that had the fewest (a tie: either)
    const std::vector<int> in_progress = first.connecting();
    REQUIRE(in_progress.size() == 2);
    // Whatever the tie went to, the counts are now 2 and 1: the second worker must pick the 1.
    const int busier = in_progress[0] == in_progress[1] ? in_progress[0] : established_port;
    second.burst(acceptor, 1);
    const std::vector<int> picked = second.connecting();
    REQUIRE(picked.size() == 1);
    CHECK(picked[0] != busier);
}
