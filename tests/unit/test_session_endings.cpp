// A worker's way out, on both real engines: a Forwarder that aborts its sessions (a fatal error)
// or is destroyed with sessions open (the process stopping) must reset every peer still
// mid-stream and close quiescent sessions with FINs, with requests still pending in the engine.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ringlb/core/forwarder.hpp"
#include "ringlb/engine/epoll/epoll_engine.hpp"
#include "ringlb/engine/uring/uring_engine.hpp"

using namespace ringlb;
using namespace std::chrono_literals;

namespace {

struct EngineVariant {
    const char* name;
    std::function<std::unique_ptr<engine::Engine>(engine::EngineOptions)> make;
};

std::vector<EngineVariant> engine_variants() {
    return {
        {"uring", [](engine::EngineOptions o) { return std::make_unique<engine::UringEngine>(o); }},
        {"epoll", [](engine::EngineOptions o) { return std::make_unique<engine::EpollEngine>(o); }},
    };
}

// An address on 127.0.0.1 whose port was free a moment ago.
net::SocketAddress free_loopback_address() {
    const net::UniqueFd probe = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"));
    return net::local_address(probe.get());
}

// A Forwarder on a real engine, driven from the test's thread, in front of a server socket the
// test accepts and drives by hand.
struct LiveForwarder {
    net::UniqueFd server_listener = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"));
    config::Config config;
    std::unique_ptr<engine::Engine> engine;
    Logger log{LogLevel::Error};
    std::unique_ptr<core::SessionLimits> limits;
    std::unique_ptr<core::Forwarder> forwarder;
    net::SocketAddress listen_address;

    explicit LiveForwarder(std::unique_ptr<engine::Engine> chosen) : engine(std::move(chosen)) {
        config.source = "test";
        config::RuleConfig rule;
        rule.id = "live";
        rule.listen.push_back(free_loopback_address());
        rule.servers.push_back({net::local_address(server_listener.get()), 1});
        config.rules.push_back(rule);
        limits = std::make_unique<core::SessionLimits>(config);
        forwarder = std::make_unique<core::Forwarder>(config, *engine, log, *limits);
        forwarder->start_accepting();
        listen_address = rule.listen[0];
    }

    // Turns the forwarder until `done` holds (or about 5 s pass).
    template <typename Done>
    bool turn_until(Done done) {
        for (int i = 0; i < 500; ++i) {
            if (done()) return true;
            forwarder->run_once(10ms);
        }
        return done();
    }
};

net::UniqueFd connect_blocking(const net::SocketAddress& address) {
    net::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(fd.get(), address.sockaddr_ptr(), address.length()) == 0);
    return fd;
}

// Appends what is readable now; true once the peer's FIN was read.
bool read_available(int fd, std::string& into) {
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (n > 0) {
            into.append(buffer, static_cast<size_t>(n));
            continue;
        }
        return n == 0;
    }
}

// "eof", "reset" or "nothing": how the stream towards `fd` ended, within about a second. After
// a FIN was read already, a reset shows only as the socket's error (EPIPE in that state).
std::string ending_seen(int fd, bool read_side_ended) {
    pollfd p{fd, static_cast<short>(read_side_ended ? 0 : POLLIN), 0};
    if (::poll(&p, 1, 1000) != 1) return "nothing";
    if (read_side_ended) {
        int error = 0;
        socklen_t length = sizeof error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        return error == EPIPE || error == ECONNRESET ? "reset" : "error " + std::to_string(error);
    }
    char byte;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT);
    if (n == 0) return "eof";
    if (n < 0 && errno == ECONNRESET) return "reset";
    return n > 0 ? "data" : "error " + std::to_string(errno);
}

enum class WayOut { Abort, Destroy };

void check_way_out(const EngineVariant& variant, WayOut way_out) {
    engine::EngineOptions options;
    options.initial_buffers = 64;
    std::unique_ptr<engine::Engine> chosen;
    try {
        chosen = variant.make(options);
    } catch (const engine::EngineUnavailable& e) {
        MESSAGE(variant.name, " skipped: ", e.what());
        return;
    }
    LiveForwarder live(std::move(chosen));

    // One client half-closed after its request, waiting for the reply; one after an exchange.
    net::UniqueFd waiting = connect_blocking(live.listen_address);
    net::UniqueFd waiting_server;
    REQUIRE(live.turn_until([&] {
        waiting_server.reset(::accept4(live.server_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        return static_cast<bool>(waiting_server);
    }));
    REQUIRE(::send(waiting.get(), "request", 7, 0) == 7);
    REQUIRE(::shutdown(waiting.get(), SHUT_WR) == 0);
    std::string request;
    REQUIRE(live.turn_until([&] { return read_available(waiting_server.get(), request); }));
    CHECK(request == "request");

    net::UniqueFd quiet = connect_blocking(live.listen_address);
    net::UniqueFd quiet_server;
    REQUIRE(live.turn_until([&] {
        quiet_server.reset(::accept4(live.server_listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        return static_cast<bool>(quiet_server);
    }));
    REQUIRE(::send(quiet_server.get(), "hello", 5, 0) == 5);
    std::string hello;
    REQUIRE(live.turn_until([&] {
        read_available(quiet.get(), hello);
        return hello.size() == 5;
    }));
    // A few more rounds: the completion of that send reaches the forwarder after the bytes
    // reached the client, and until then the session has a send in flight (not quiescent).
    for (int i = 0; i < 5; ++i) live.forwarder->run_once(10ms);
    REQUIRE(live.forwarder->active_sessions() == 2);

    if (way_out == WayOut::Abort) {
        live.forwarder->abort_all_sessions(core::EndCause::Error);
        CHECK(live.forwarder->active_sessions() == 0);
        CHECK(live.limits->active() == 0);
    }
    live.forwarder.reset();
    live.engine.reset();  // whatever requests were pending end with it

    CHECK(ending_seen(waiting.get(), false) == "reset");
    CHECK(ending_seen(waiting_server.get(), true) == "reset");
    CHECK(ending_seen(quiet.get(), false) == "eof");
    CHECK(ending_seen(quiet_server.get(), false) == "eof");
}

}  // namespace

TEST_CASE("a worker's fatal exit: abort_all_sessions resets sessions mid-stream, FINs quiescent ones (both engines)") {
    for (const EngineVariant& variant : engine_variants()) {
        const std::string name = variant.name;
        CAPTURE(name);
        check_way_out(variant, WayOut::Abort);
    }
}

TEST_CASE("a forwarder destroyed with sessions open resets those mid-stream, FINs quiescent ones (both engines)") {
    for (const EngineVariant& variant : engine_variants()) {
        const std::string name = variant.name;
        CAPTURE(name);
        check_way_out(variant, WayOut::Destroy);
    }
}
