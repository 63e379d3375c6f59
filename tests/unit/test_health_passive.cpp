// Passive health: backoff doubling and its cap, reset on success, down servers never picked by
// any mode, all-down picks the earliest down_until, and the slow-start effective weight.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "ringlb/balance/balancer.hpp"
#include "ringlb/health/passive.hpp"
#include "balance_fixtures.hpp"

using namespace ringlb;
using namespace std::chrono_literals;
using ringlb::balance::Server;
using ringlb::config::BalanceMode;
using ringlb::health::Clock;
using ringlb::test::make_servers;

namespace {

const BalanceMode kAllModes[] = {BalanceMode::RoundRobin, BalanceMode::MasterStandby, BalanceMode::LeastConn,
                                 BalanceMode::Random,     BalanceMode::PowerOfTwo,    BalanceMode::SourceHash,
                                 BalanceMode::ResponseTime};

net::SocketAddress client_number(int i) {
    return *net::SocketAddress::parse("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":4000");
}

health::Passive make_health(std::chrono::milliseconds down = 10s, std::chrono::milliseconds max_down = 5min,
                            std::chrono::milliseconds slow_start = 0ms) {
    return health::Passive("r", {down, max_down, slow_start}, nullptr);
}

// Captures log lines in a temporary file.
struct CapturedLog {
    std::FILE* file = std::tmpfile();
    Logger log{LogLevel::Info, file};
    ~CapturedLog() { std::fclose(file); }
    std::string text() {
        std::fflush(file);
        std::rewind(file);
        std::string out;
        char chunk[512];
        size_t n;
        while ((n = std::fread(chunk, 1, sizeof chunk, file)) > 0) out.append(chunk, n);
        return out;
    }
};

}  // namespace

TEST_CASE("passive health: down_for doubles per consecutive failure up to max_down_time") {
    const auto health = make_health(10s, 5min);
    CHECK(health.down_for(1) == 10s);
    CHECK(health.down_for(2) == 20s);
    CHECK(health.down_for(3) == 40s);
    CHECK(health.down_for(5) == 160s);
    CHECK(health.down_for(6) == 5min);  // 320 s capped
    CHECK(health.down_for(100) == 5min);
    const auto tight = make_health(300ms, 1s);
    CHECK(tight.down_for(2) == 600ms);
    CHECK(tight.down_for(3) == 1s);
    CHECK(health::format_duration(10s) == "10s");
    CHECK(health::format_duration(300ms) == "300ms");
    CHECK(health::format_duration(5min) == "5m");
}

TEST_CASE("passive health: a failure marks the server down, doubling on each consecutive failure") {
    auto servers = make_servers(2);
    auto health = make_health(10s, 30s);
    const auto t0 = Clock::now();
    health.connect_failed(servers, 0, t0, t0, "connect refused");
    CHECK(servers[0].down);
    CHECK(health.state(0).failures == 1);
    CHECK(health.state(0).down_until == t0 + 10s);

    // A connect that began before it was marked down does not count again.
    health.connect_failed(servers, 0, t0 - 1ms, t0 + 1ms, "connect refused");
    CHECK(health.state(0).failures == 1);

    const std::vector<uint16_t> none;
    health.refresh(servers, none, t0 + 9s);
    CHECK(servers[0].down);
    health.refresh(servers, none, t0 + 10s);
    CHECK_FALSE(servers[0].down);

    // Chosen again after down_time and failing again: 20 s, then 30 s (the cap), then still 30 s.
    const auto t1 = t0 + 11s;
    health.connect_failed(servers, 0, t1, t1, "connect timed out");
    CHECK(health.state(0).failures == 2);
    CHECK(health.state(0).down_until == t1 + 20s);
    const auto t2 = t1 + 21s;
    health.connect_failed(servers, 0, t2, t2, "connect refused");
    CHECK(health.state(0).down_until == t2 + 30s);
    const auto t3 = t2 + 31s;
    health.connect_failed(servers, 0, t3, t3, "connect refused");
    CHECK(health.state(0).failures == 4);
    CHECK(health.state(0).down_until == t3 + 30s);
    CHECK_FALSE(servers[1].down);
}

TEST_CASE("passive health: a successful connect resets failures and brings the server UP") {
    CapturedLog captured;
    auto servers = make_servers(2);
    health::Passive health("web", {10s, 5min, 0ms}, &captured.log);
    const auto t0 = Clock::now();
    health.connect_failed(servers, 1, t0, t0, "connect refused");
    health.connect_failed(servers, 1, t0 + 11s, t0 + 11s, "connect refused");
    CHECK(health.state(1).failures == 2);
    health.connect_succeeded(servers, 1, t0 + 40s);
    CHECK(health.state(1).failures == 0);
    CHECK_FALSE(servers[1].down);
    // The next failure starts from down_time again.
    health.connect_failed(servers, 1, t0 + 50s, t0 + 50s, "connect refused");
    CHECK(health.state(1).down_until == t0 + 50s + 10s);
    // A success on a server that was never down logs nothing.
    health.connect_succeeded(servers, 0, t0 + 51s);

    const std::string text = captured.text();
    const std::string addr = servers[1].address.to_string();
    CHECK(text.find("server web/" + addr + " DOWN for 10s: connect refused (1 consecutive failure)") != std::string::npos);
    CHECK(text.find("server web/" + addr + " DOWN for 20s: connect refused (2 consecutive failures)") != std::string::npos);
    CHECK(text.find("server web/" + addr + " UP") != std::string::npos);
    CHECK(text.find(servers[0].address.to_string()) == std::string::npos);
}

TEST_CASE("passive health: every mode never picks a down server") {
    for (BalanceMode mode : kAllModes) {
        CAPTURE(config::to_string(mode));
        auto servers = make_servers(3);
        auto health = make_health();
        auto balancer = balance::make_balancer(mode);
        const auto t0 = Clock::now();
        health.connect_failed(servers, 0, t0, t0, "connect refused");
        health.connect_failed(servers, 2, t0, t0, "connect refused");
        const std::vector<uint16_t> none;
        for (int i = 0; i < 200; ++i) {
            health.refresh(servers, none, t0 + 1s);
            const auto pick = balancer->pick(servers, client_number(i), none);
            REQUIRE(pick);
            CHECK(*pick == 1);
        }
        // Back after down_time: eligible again.
        bool saw_other = false;
        for (int i = 0; i < 200; ++i) {
            health.refresh(servers, none, t0 + 11s);
            const auto pick = balancer->pick(servers, client_number(i), none);
            REQUIRE(pick);
            if (*pick != 1) saw_other = true;
        }
        CHECK(saw_other);
    }
}

TEST_CASE("passive health: a down primary makes every mode use the backup") {
    for (BalanceMode mode : kAllModes) {
        CAPTURE(config::to_string(mode));
        auto servers = make_servers(3);
        servers[2].backup = true;
        auto health = make_health();
        auto balancer = balance::make_balancer(mode);
        const auto t0 = Clock::now();
        health.connect_failed(servers, 0, t0, t0, "connect refused");
        health.connect_failed(servers, 1, t0, t0, "connect refused");
        const std::vector<uint16_t> none;
        for (int i = 0; i < 50; ++i) {
            health.refresh(servers, none, t0 + 1s);
            const auto pick = balancer->pick(servers, client_number(i), none);
            REQUIRE(pick);
            CHECK(*pick == 2);
        }
    }
}

TEST_CASE("passive health: when every server is down the earliest down_until is tried") {
    for (BalanceMode mode : kAllModes) {
        CAPTURE(config::to_string(mode));
        auto servers = make_servers(3);
        auto health = make_health();
        auto balancer = balance::make_balancer(mode);
        const auto t0 = Clock::now();
        health.connect_failed(servers, 0, t0 + 2s, t0 + 2s, "connect refused");
        health.connect_failed(servers, 1, t0, t0, "connect refused");  // earliest: t0 + 10s
        health.connect_failed(servers, 2, t0 + 1s, t0 + 1s, "connect refused");
        std::vector<uint16_t> tried;
        health.refresh(servers, tried, t0 + 3s);
        auto pick = balancer->pick(servers, client_number(1), tried);
        REQUIRE(pick);
        CHECK(*pick == 1);
        // That one failed for this client too: the next earliest is tried, then none is left.
        tried.push_back(1);
        health.refresh(servers, tried, t0 + 3s);
        pick = balancer->pick(servers, client_number(1), tried);
        REQUIRE(pick);
        CHECK(*pick == 2);
        tried.push_back(2);
        tried.push_back(0);
        health.refresh(servers, tried, t0 + 3s);
        CHECK_FALSE(balancer->pick(servers, client_number(1), tried));
    }
}

TEST_CASE("passive health: slow start ramps the effective weight linearly after coming back UP") {
    auto servers = make_servers({10, 10});
    auto health = make_health(10s, 5min, 30s);
    const auto t0 = Clock::now();
    health.connect_failed(servers, 0, t0, t0, "connect refused");
    const auto up = t0 + 12s;
    health.connect_succeeded(servers, 0, up);
    CHECK(balance::effective_weight(servers[0]) == 1);
    const std::vector<uint16_t> none;
    health.refresh(servers, none, up + 15s);
    CHECK(balance::effective_weight(servers[0]) == 5);
    health.refresh(servers, none, up + 27s);
    CHECK(balance::effective_weight(servers[0]) == 9);
    health.refresh(servers, none, up + 30s);
    CHECK(balance::effective_weight(servers[0]) == 10);
    CHECK(servers[0].slow_start_weight == 0);
    CHECK(balance::effective_weight(servers[1]) == 10);

    // Round robin follows the effective weights: 1:10 while just back up.
    auto rr = balance::make_balancer(BalanceMode::RoundRobin);
    auto more = make_servers({10, 10});
    auto ramping = make_health(10s, 5min, 30s);
    ramping.connect_failed(more, 0, t0, t0, "connect refused");
    ramping.connect_succeeded(more, 0, up);
    ramping.refresh(more, none, up);
    int first = 0;
    for (int i = 0; i < 110; ++i) first += *rr->pick(more, client_number(i), none) == 0;
    CHECK(first == 10);
}

TEST_CASE("passive: a server that joins a rule ramps up over slow_start") {
    auto servers = ringlb::test::make_servers({10, 10});
    health::Passive passive("web", {std::chrono::seconds(10), std::chrono::minutes(5), std::chrono::seconds(10)}, nullptr);
    const auto start = health::Clock::now();
    passive.start_slow_start(servers, 1, start);
    passive.refresh(servers, {}, start + std::chrono::seconds(5));
    CHECK(servers[1].slow_start_weight == 5);
    CHECK(balance::effective_weight(servers[1]) == 5);
    CHECK(balance::effective_weight(servers[0]) == 10);
    passive.refresh(servers, {}, start + std::chrono::seconds(11));
    CHECK(balance::effective_weight(servers[1]) == 10);

    health::Passive no_ramp("web", {std::chrono::seconds(10), std::chrono::minutes(5), std::chrono::seconds(0)}, nullptr);
    auto others = ringlb::test::make_servers({10});
    no_ramp.start_slow_start(others, 0, start);
    CHECK(others[0].slow_start_weight == 0);
}
