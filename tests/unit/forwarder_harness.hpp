#pragma once
// A Forwarder on a RecordingEngine, for tests of the session core: the test plays the kernel,
// completing the requests the core makes, with real loopback sockets where the core needs a
// descriptor.
#include <doctest/doctest.h>
#include <sys/socket.h>

#include <chrono>

#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/session_limits.hpp"

namespace ringlb::test {

// A connected loopback TCP pair: `client` stays with the test, the other end goes to the core
// as if accepted.
struct LoopbackPair {
    net::UniqueFd client;
    int accepted = -1;
    LoopbackPair() {
        net::UniqueFd listener = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"));
        net::set_nonblocking(listener.get(), false);
        const net::SocketAddress address = net::local_address(listener.get());
        client.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::connect(client.get(), address.sockaddr_ptr(), address.length()) == 0);
        accepted = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        REQUIRE(accepted >= 0);
    }
};

// One worker with limits of its own.
struct ForwarderHarness {
    RecordingEngine engine;
    Logger log{LogLevel::Error};
    core::SessionLimits limits;
    core::Forwarder forwarder;
    explicit ForwarderHarness(const config::Config& config)
        : limits(config.global.max_sessions, config.global.max_sessions_per_ip), forwarder(config, engine, log, limits) {
        engine.cancel_completes = false;  // these tests complete cancellations themselves
        forwarder.start_accepting();
    }
    void turn() { forwarder.run_once(std::chrono::milliseconds(0)); }
    // The listener's accept completes with the pair's connection, and the core handles it.
    void accept_client(const LoopbackPair& pair) {
        engine.complete(engine.take(RecordingEngine::Kind::Accept), pair.accepted, true);
        turn();
    }
};

// One of several workers sharing `limits` (as the worker threads do), numbered `index`.
struct SharedLimitsWorker {
    RecordingEngine engine;
    Logger log{LogLevel::Error};
    core::Forwarder forwarder;
    SharedLimitsWorker(const config::Config& config, core::SessionLimits& limits, unsigned index)
        : forwarder(config.global, core::Forwarder::initial_plan(config), engine, log, limits, false, index) {
        forwarder.start_accepting();
    }
    void turn() { forwarder.run_once(std::chrono::milliseconds(0)); }
    // A client arrives on the (multishot) accept, which stays armed; the core sees it next turn.
    void complete_accept(LoopbackAcceptor& acceptor) {
        const auto accept = engine.try_take(RecordingEngine::Kind::Accept);
        REQUIRE(accept);
        engine.complete(*accept, acceptor.accepted(), true);
        engine.requests.push_front(*accept);
    }
};

}  // namespace ringlb::test
