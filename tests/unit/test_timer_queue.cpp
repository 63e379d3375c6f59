// The timer queue: armed, moved and cancelled by key, due in deadline order, holding only armed
// timers; and the session core's use of it: a session holds at most a connect and an idle timer
// and gives both back when its slot is released, so armed timers follow live sessions.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>

#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/timer_queue.hpp"

using namespace ringlb;
using namespace ringlb::core;
using namespace std::chrono_literals;

namespace {

const Clock::time_point t0 = Clock::time_point{} + 1000h;

TimerKey idle(uint32_t owner) { return {owner, TimerKind::Idle}; }
TimerKey connect(uint32_t owner) { return {owner, TimerKind::Connect}; }

}  // namespace

TEST_CASE("timer queue: due timers come out in deadline order, and only once due") {
    TimerQueue timers;
    timers.arm(idle(3), t0 + 3s);
    timers.arm(connect(1), t0 + 1s);
    timers.arm(idle(2), t0 + 2s);
    CHECK(timers.size() == 3);
    CHECK(timers.next_deadline() == t0 + 1s);
    CHECK_FALSE(timers.pop_due(t0));
    CHECK(timers.pop_due(t0 + 2s) == connect(1));
    CHECK(timers.pop_due(t0 + 2s) == idle(2));
    CHECK_FALSE(timers.pop_due(t0 + 2s));
    CHECK(timers.size() == 1);
    CHECK(timers.armed(idle(3)));
    CHECK_FALSE(timers.armed(idle(2)));
}

TEST_CASE("timer queue: arming an armed timer moves it instead of adding a second entry") {
    TimerQueue timers;
    timers.arm(idle(7), t0 + 10s);
    timers.arm(idle(8), t0 + 5s);
    timers.arm(idle(7), t0 + 1s);  // earlier
    CHECK(timers.size() == 2);
    CHECK(timers.next_deadline() == t0 + 1s);
    timers.arm(idle(7), t0 + 20s);  // later
    CHECK(timers.size() == 2);
    CHECK(timers.pop_due(t0 + 30s) == idle(8));
    CHECK(timers.pop_due(t0 + 30s) == idle(7));
    CHECK(timers.empty());
}

TEST_CASE("timer queue: the same owner's connect, idle and accept-retry timers are distinct") {
    TimerQueue timers;
    timers.arm(connect(4), t0 + 1s);
    timers.arm(idle(4), t0 + 2s);
    timers.arm({4, TimerKind::AcceptRetry}, t0 + 3s);
    CHECK(timers.size() == 3);
    timers.cancel(idle(4));
    CHECK(timers.armed(connect(4)));
    CHECK(timers.armed({4, TimerKind::AcceptRetry}));
    CHECK(timers.pop_due(t0 + 5s) == connect(4));
    CHECK(timers.pop_due(t0 + 5s) == TimerKey{4, TimerKind::AcceptRetry});
}

TEST_CASE("timer queue: cancelling removes a timer wherever it sits; cancelling an unarmed one does nothing") {
    TimerQueue timers;
    for (uint32_t owner = 0; owner < 10; ++owner) timers.arm(idle(owner), t0 + std::chrono::seconds(10 - owner));
    timers.cancel(idle(9));  // the earliest, at the top
    timers.cancel(idle(0));  // the latest
    timers.cancel(idle(5));  // somewhere inside
    timers.cancel(idle(5));  // again
    timers.cancel(idle(1234));  // never armed, beyond every key seen
    CHECK(timers.size() == 7);
    std::vector<uint32_t> order;
    while (auto key = timers.pop_due(t0 + 1h)) order.push_back(key->owner);
    CHECK(order == std::vector<uint32_t>{8, 7, 6, 4, 3, 2, 1});
}

TEST_CASE("timer queue: random arms, moves, cancels and pops agree with a plain ordered map") {
    std::mt19937 random(0x71AE5);
    TimerQueue timers;
    std::map<uint32_t, Clock::time_point> expected;  // armed idle timers by owner
    Clock::time_point now = t0;
    for (int step = 0; step < 20000; ++step) {
        const uint32_t owner = random() % 300;
        switch (random() % 4) {
            case 0:
            case 1: {
                const auto deadline = now + std::chrono::milliseconds(random() % 5000);
                timers.arm(idle(owner), deadline);
                expected[owner] = deadline;
                break;
            }
            case 2:
                timers.cancel(idle(owner));
                expected.erase(owner);
                break;
            default: {
                now += std::chrono::milliseconds(random() % 200);
                while (auto key = timers.pop_due(now)) {
                    REQUIRE(expected.count(key->owner) == 1);
                    CHECK(expected[key->owner] <= now);
                    // Nothing still armed is due earlier than what came out.
                    for (const auto& [other, deadline] : expected)
                        if (other != key->owner) CHECK_FALSE(deadline < expected[key->owner]);
                    expected.erase(key->owner);
                }
                for (const auto& [other, deadline] : expected) CHECK(deadline > now);
            }
        }
        REQUIRE(timers.size() == expected.size());
    }
}

TEST_CASE("timer queue: a million arm-and-cancel cycles leave nothing behind") {
    TimerQueue timers;
    for (uint32_t i = 0; i < 1000000; ++i) {
        timers.arm(idle(i % 64), t0 + std::chrono::seconds(3600 + i));
        if (i % 2 == 1) {
            timers.cancel(idle((i - 1) % 64));
            timers.cancel(idle(i % 64));
        }
    }
    CHECK(timers.empty());
    CHECK_FALSE(timers.next_deadline());
}

// ---- the session core's timers --------------------------------------------------------------

namespace {

config::Config one_rule(std::chrono::milliseconds timeout) {
    config::Config config;
    config.source = "test";
    config::RuleConfig rule;
    rule.id = "web";
    rule.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
    rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:1"), 1});
    rule.timeout = timeout;
    config.rules.push_back(rule);
    return config;
}

using test::RecordingEngine;
using Kind = RecordingEngine::Kind;

}  // namespace

TEST_CASE("forwarder: a session holds one timer while connecting, one while established, none once released") {
    const config::Config config = one_rule(1h);
    RecordingEngine engine;
    Logger log{LogLevel::Error};
    SessionLimits limits(config);
    Forwarder forwarder(config, engine, log, limits);
    forwarder.start_accepting();
    test::LoopbackAcceptor acceptor;
    const auto turn = [&] { forwarder.run_once(0ms); };

    for (int round = 0; round < 200; ++round) {
        CAPTURE(round);
        // Five clients: their connects pending, one connect timer each.
        for (int i = 0; i < 5; ++i) {
            const auto accept = engine.try_take(Kind::Accept);
            REQUIRE(accept);
            engine.complete(*accept, acceptor.accepted(), true);
            engine.requests.push_front(*accept);  // multishot: it stays armed
        }
        turn();
        REQUIRE(forwarder.active_sessions() == 5);
        CHECK(forwarder.armed_timers() == 5);
        // Established: the connect timer gives way to the idle timer.
        while (auto connect = engine.try_take(Kind::Connect)) engine.complete(*connect, 0);
        turn();
        CHECK(forwarder.armed_timers() == 5);
        // Every client resets: the sessions end well before their hour is up.
        while (engine.count(Kind::Recv) > 0) {
            const auto recv = engine.try_take(Kind::Recv);
            engine.complete(*recv, -ECONNRESET);
            turn();
        }
        turn();
        REQUIRE(forwarder.active_sessions() == 0);
        CHECK(forwarder.armed_timers() == 0);
    }
    CHECK(forwarder.stats().sessions_ended == 1000);
}
