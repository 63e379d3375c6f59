// servers[].max_connections against the real binary with two worker threads: a burst of clients
// never puts more than the cap on a server at once (counted at the backend), the clients beyond
// it are closed at once and counted as finding no server, as when every server is full, and the
// counts come back when the sessions end.
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "client_burst.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

GlobalSpec two_threads_with_admin(std::uint16_t admin_port) {
    GlobalSpec global;
    global.threads = 2;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    return global;
}

// Polls `show stats` until active_sessions is `expected`.
bool active_sessions_reach(std::uint16_t admin_port, long long expected, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (reply_value(admin_command(admin_port, "show stats"), "active_sessions") == expected) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(50ms);
    }
}

}  // namespace

TEST_CASE("max_connections: bursts of 50 against a cap of 2 with two threads: 2 served at a time, 48 closed") {
    constexpr unsigned kCap = 2, kBurst = 50;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint(), 0, false, kCap}}, two_threads_with_admin(admin_port)));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    for (unsigned round = 1; round <= 3; ++round) {
        CAPTURE(round);
        std::vector<UniqueFd> held;
        const BurstOutcome outcome = echo_burst(port, kBurst, held);
        INFO("served ", outcome.served, ", closed ", outcome.closed, ", unanswered ", outcome.unanswered,
             "; most connections the backend saw at once: ", backend.peak_open_connections());
        CHECK(outcome.served == kCap);
        CHECK(outcome.closed == kBurst - kCap);
        CHECK(outcome.unanswered == 0);
        CHECK(backend.peak_open_connections() <= kCap);
        const AdminReply stats = admin_command(admin_port, "show stats");
        CHECK(reply_value(stats, "rejected_no_server") == static_cast<long long>(round * (kBurst - kCap)));
        held.clear();  // the sessions end: the next round finds both connections free again
        REQUIRE(active_sessions_reach(admin_port, 0, 5s));
        REQUIRE(backend.wait_finished(round * kCap, 5s));
    }
    CHECK(backend.accepted() == 3 * kCap);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("max_connections: a burst of 50 against two servers capped at 3 with two threads: 6 served, 3 each") {
    constexpr unsigned kCap = 3, kBurst = 50;
    EchoBackend first, second;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{first.endpoint(), 0, false, kCap}, {second.endpoint(), 0, false, kCap}},
                                       two_threads_with_admin(admin_port)));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<UniqueFd> held;
    const BurstOutcome outcome = echo_burst(port, kBurst, held);
    INFO("served ", outcome.served, ", closed ", outcome.closed, ", unanswered ", outcome.unanswered,
         "; most connections at once: first ", first.peak_open_connections(), ", second ",
         second.peak_open_connections());
    CHECK(outcome.served == 2 * kCap);
    CHECK(outcome.closed == kBurst - 2 * kCap);
    CHECK(outcome.unanswered == 0);
    CHECK(first.peak_open_connections() <= kCap);
    CHECK(second.peak_open_connections() <= kCap);
    CHECK(first.open_connections() == kCap);
    CHECK(second.open_connections() == kCap);
    CHECK(reply_value(admin_command(admin_port, "show stats"), "rejected_no_server") == kBurst - 2 * kCap);
    held.clear();
    CHECK(active_sessions_reach(admin_port, 0, 5s));
    CHECK_CLEAN_EXIT(ringlb);
}
