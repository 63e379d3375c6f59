// Rule queues (core::ServerQueue, rule keys queue / queue_timeout): first come first served over
// all workers, bounded, a freed server connection handed to the oldest waiter on whatever worker
// it is, passed on when that waiter is gone, and waiters closed when their time is up.
#include <doctest/doctest.h>

#include <deque>
#include <thread>

#include "forwarder_harness.hpp"
#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/server_queue.hpp"
#include "ringlb/core/session_limits.hpp"

using namespace ringlb;
using namespace ringlb::core;
using namespace std::chrono_literals;
using test::RecordingEngine;
using Kind = RecordingEngine::Kind;

namespace {

net::SocketAddress address(const char* text) { return *net::SocketAddress::parse(text); }

config::Config queued_rule(uint32_t queue, std::chrono::milliseconds queue_timeout) {
    config::Config config;
    config.source = "test";
    config::RuleConfig rule;
    rule.id = "queued";
    rule.listen.push_back(address("127.0.0.1:0"));
    config::ServerConfig server{address("127.0.0.1:1"), 1};
    server.max_connections = 1;
    rule.servers.push_back(server);
    rule.queue = queue;
    rule.queue_timeout = queue_timeout;
    config.rules.push_back(rule);
    return config;
}

struct Worker : test::SharedLimitsWorker {
    using SharedLimitsWorker::SharedLimitsWorker;
    void arrive(test::LoopbackAcceptor& acceptor, int count = 1) {
        for (int i = 0; i < count; ++i) {
            complete_accept(acceptor);
            turn();
        }
    }
    // The session of the connect in progress, established and then reset by its client: it ends
    // and gives its server connection back.
    void end_connected_session() {
        const auto connect = engine.try_take(Kind::Connect);
        REQUIRE(connect);
        engine.complete(*connect, 0);
        turn();
        while (auto recv = engine.try_take(Kind::Recv)) {
            engine.complete(*recv, -ECONNRESET);
            turn();
        }
        turn();
    }
    uint64_t first_session_id() const {
        const auto sessions = forwarder.list_sessions(std::nullopt, 10);
        REQUIRE(!sessions.empty());
        return sessions.front().id;
    }
};

// Grants are posted to the waiter's worker; here they wait until the test hands them over.
struct Postbox {
    std::deque<QueueGrant> grants;
    void deliver_all(std::vector<Worker*> workers) {
        while (!grants.empty()) {
            QueueGrant grant = grants.front();
            grants.pop_front();
            Worker& to = *workers.at(Forwarder::worker_of(grant.session_id));
            to.forwarder.on_queue_grant(grant);
            to.turn();
        }
    }
};

}  // namespace

TEST_CASE("server queue: first in first out, bounded, and a waiter can leave") {
    ServerQueue queue;
    queue.set_capacity(2);
    CHECK(queue.try_push({1, {}}));
    CHECK(queue.try_push({2, {}}));
    CHECK_FALSE(queue.try_push({3, {}}));
    CHECK(queue.waiting() == 2);
    CHECK(queue.remove(1));
    CHECK_FALSE(queue.remove(1));
    CHECK(queue.try_push({3, {}}));
    CHECK(queue.pop()->session_id == 2);
    CHECK(queue.pop()->session_id == 3);
    CHECK_FALSE(queue.pop());
    CHECK(queue.waiting() == 0);
}

TEST_CASE("server queues: one per rule id, gone with its last holder; offer hands a count to the oldest") {
    ServerQueues queues;
    auto a = queues.queue("web", 4);
    CHECK(queues.queue("web", 5) == a);
    CHECK(a->capacity() == 5);  // the latest configuration wins
    std::vector<QueueGrant> delivered;
    queues.set_deliver([&](QueueGrant grant) { delivered.push_back(std::move(grant)); });
    ServerConnections connections;
    auto count = connections.count("web", address("127.0.0.1:1"));
    count->store(1);
    CHECK_FALSE(queues.offer(a, address("127.0.0.1:1"), count));  // nobody waits: the caller keeps it
    REQUIRE(a->try_push({42, {}}));
    REQUIRE(a->try_push({43, {}}));
    queues.offer_or_give_back(a, address("127.0.0.1:1"), count);
    REQUIRE(delivered.size() == 1);
    CHECK(delivered[0].session_id == 42);
    CHECK(count->load() == 1);  // still taken: it is the waiter's now
    a->remove(43);
    queues.offer_or_give_back(a, address("127.0.0.1:1"), count);
    CHECK(count->load() == 0);  // nobody waited: given back
}

TEST_CASE("forwarder queue: every server full, clients wait across workers and are served in arrival order") {
    const config::Config config = queued_rule(3, 60s);
    SessionLimits limits(config);
    Postbox postbox;
    limits.server_queues().set_deliver([&](QueueGrant grant) { postbox.grants.push_back(std::move(grant)); });
    Worker first(config, limits, 0), second(config, limits, 1);
    test::LoopbackAcceptor acceptor;

    first.arrive(acceptor);  // takes the one connection
    CHECK(first.engine.count(Kind::Connect) == 1);
    second.arrive(acceptor);  // waits first
    first.arrive(acceptor);   // waits second
    second.arrive(acceptor);  // waits third
    CHECK(limits.server_queues().queue("queued", 3)->waiting() == 3);
    second.arrive(acceptor);  // the queue is full: closed as before
    CHECK(second.forwarder.stats().no_server_left == 1);
    CHECK(first.engine.count(Kind::Connect) + second.engine.count(Kind::Connect) == 1);
    // Waiting clients are not read from: no receive was asked for them.
    CHECK(second.engine.count(Kind::Recv) == 0);

    // The connection comes free on the first worker: the oldest waiter, on the second, gets it.
    first.end_connected_session();
    REQUIRE(postbox.grants.size() == 1);
    CHECK(Forwarder::worker_of(postbox.grants.front().session_id) == 1);
    postbox.deliver_all({&first, &second});
    CHECK(second.engine.count(Kind::Connect) == 1);
    CHECK(first.engine.count(Kind::Connect) == 0);
    CHECK(limits.server_connections().count("queued", address("127.0.0.1:1"))->load() == 1);

    // Next: the waiter on the first worker, then the last one on the second.
    second.end_connected_session();
    postbox.deliver_all({&first, &second});
    CHECK(first.engine.count(Kind::Connect) == 1);
    first.end_connected_session();
    postbox.deliver_all({&first, &second});
    CHECK(second.engine.count(Kind::Connect) == 1);
    second.end_connected_session();
    postbox.deliver_all({&first, &second});
    CHECK(limits.server_connections().count("queued", address("127.0.0.1:1"))->load() == 0);
    CHECK(first.forwarder.active_sessions() + second.forwarder.active_sessions() == 0);
}

TEST_CASE("forwarder queue: a grant for a client that left goes on to the next waiter; timeouts close waiters") {
    const config::Config config = queued_rule(4, 50ms);
    SessionLimits limits(config);
    Postbox postbox;
    limits.server_queues().set_deliver([&](QueueGrant grant) { postbox.grants.push_back(std::move(grant)); });
    Worker first(config, limits, 0), second(config, limits, 1);
    test::LoopbackAcceptor acceptor;

    first.arrive(acceptor);   // connected
    second.arrive(acceptor);  // oldest waiter
    first.arrive(acceptor);   // next waiter (the first worker's second session)
    first.end_connected_session();
    REQUIRE(postbox.grants.size() == 1);
    // The oldest waiter is killed while the grant is on its way: the grant passes on.
    REQUIRE(second.forwarder.kill_session(second.first_session_id()));
    second.turn();
    postbox.deliver_all({&first, &second});
    CHECK(first.engine.count(Kind::Connect) == 1);
    CHECK(limits.server_connections().count("queued", address("127.0.0.1:1"))->load() == 1);

    // A new waiter that nobody serves is closed after queue_timeout, and counted.
    second.arrive(acceptor);
    CHECK(second.forwarder.active_sessions() == 1);
    std::this_thread::sleep_for(80ms);
    second.turn();
    CHECK(second.forwarder.active_sessions() == 0);
    admin::Snapshot snapshot;
    snapshot.rules.resize(1);
    second.forwarder.collect(snapshot, {0});
    CHECK(snapshot.rules[0].queue_timeouts == 1);
    // The timed-out one; the killed one had been handed a connection already (it went on).
    CHECK(snapshot.rules[0].queue_time.count == 1);
    CHECK(snapshot.rules[0].queue_length == 0);
}

TEST_CASE("forwarder queue: a connection freed on a drained server is not handed to a waiter") {
    const config::Config config = queued_rule(4, 60s);
    SessionLimits limits(config);
    Postbox postbox;
    limits.server_queues().set_deliver([&](QueueGrant grant) { postbox.grants.push_back(std::move(grant)); });
    Worker first(config, limits, 0), second(config, limits, 1);
    test::LoopbackAcceptor acceptor;

    first.arrive(acceptor);   // connected
    second.arrive(acceptor);  // waits
    for (Worker* worker : {&first, &second})
        worker->forwarder.set_server_admin(0, 0, admin::ServerAdminState::Draining, std::nullopt);
    first.end_connected_session();
    CHECK(postbox.grants.empty());
    CHECK(limits.server_connections().count("queued", address("127.0.0.1:1"))->load() == 0);
    CHECK(second.forwarder.active_sessions() == 1);  // still waiting: the drained server takes nobody new
    CHECK(second.engine.count(Kind::Connect) == 0);
}
