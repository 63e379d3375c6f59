// Limits shared by all workers (core::SessionLimits): per-rule max_clients and per-IP sessions,
// the per-IP connection rate buckets, and exact release: nothing counted for a refused client,
// everything released once when a session ends, also when every connect failed. Connections
// awaiting a PROXY header count as handshakes (for their peer) and move to their client once.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <thread>
#include <optional>
#include <vector>

#include "recording_engine.hpp"
#include "ringlb/core/conn_rate_limiter.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/session_limits.hpp"

using namespace ringlb;
using core::SessionLimits;
using Verdict = core::SessionLimits::Verdict;
using namespace std::chrono_literals;
using Kind = test::RecordingEngine::Kind;

namespace {

net::IpKey ip(const char* text) { return net::IpKey::of(*net::SocketAddress::parse(std::string(text) + ":1")); }

const SessionLimits::Clock::time_point t0 = SessionLimits::Clock::time_point{} + 1000h;

}  // namespace

TEST_CASE("rule max_sessions_per_ip holds per rule and per IP, next to the global limit") {
    SessionLimits limits(100, 0, {{0, 1, 0}, {}});
    const auto a = ip("10.0.0.1"), b = ip("10.0.0.2");
    CHECK(limits.try_admit(a, 0, t0) == Verdict::Admitted);
    CHECK(limits.try_admit(a, 0, t0) == Verdict::OverRulePerIp);
    CHECK(limits.try_admit(b, 0, t0) == Verdict::Admitted);  // another IP has its own count
    CHECK(limits.try_admit(a, 1, t0) == Verdict::Admitted);  // rule 1 has no per-IP limit
    CHECK(limits.try_admit(a, 1, t0) == Verdict::Admitted);
    CHECK(limits.rule_count(a, 0) == 1);
    CHECK(limits.count(a) == 0);  // no global per-IP limit: not tracked
    CHECK(limits.active() == 4);
    limits.release(a, 0);
    CHECK(limits.rule_count(a, 0) == 0);
    CHECK(limits.try_admit(a, 0, t0) == Verdict::Admitted);

    SUBCASE("both the global and the rule limit must hold") {
        SessionLimits both(100, 2, {{0, 5, 0}});
        CHECK(both.try_admit(a, 0, t0) == Verdict::Admitted);
        CHECK(both.try_admit(a, 0, t0) == Verdict::Admitted);
        CHECK(both.try_admit(a, 0, t0) == Verdict::OverPerIp);
        CHECK(both.rule_count(a, 0) == 2);
    }
}

TEST_CASE("rule max_clients counts all IPs of the rule; 0 is unlimited") {
    SessionLimits limits(100, 0, {{2, 0, 0}, {0, 0, 0}});
    CHECK(limits.try_admit(ip("10.0.0.1"), 0, t0) == Verdict::Admitted);
    CHECK(limits.try_admit(ip("10.0.0.2"), 0, t0) == Verdict::Admitted);
    CHECK(limits.try_admit(ip("10.0.0.3"), 0, t0) == Verdict::OverMaxClients);
    CHECK(limits.rule_active(0) == 2);
    for (int i = 0; i < 50; ++i) CHECK(limits.try_admit(ip("10.0.0.3"), 1, t0) == Verdict::Admitted);
    limits.release(ip("10.0.0.1"), 0);
    CHECK(limits.try_admit(ip("10.0.0.3"), 0, t0) == Verdict::Admitted);
    CHECK(limits.rule_active(0) == 2);
    CHECK(limits.active() == 52);
}

TEST_CASE("connection rate: a burst of N, then one token per 1/N s, full buckets expire") {
    core::ConnRateLimiter rate(5);
    const auto a = ip("10.0.0.1"), b = ip("10.0.0.2");
    for (int i = 0; i < 5; ++i) {
        REQUIRE(rate.allows(a, t0));
        rate.take(a, t0);
    }
    CHECK_FALSE(rate.allows(a, t0));                 // burst used up
    CHECK(rate.allows(b, t0));                       // other IPs are not affected
    CHECK_FALSE(rate.allows(a, t0 + 199ms));         // refill: one token per 200 ms
    CHECK(rate.allows(a, t0 + 200ms));
    rate.take(a, t0 + 200ms);
    CHECK_FALSE(rate.allows(a, t0 + 200ms));
    // Long idle: the bucket refills to the burst, not beyond.
    const auto later = t0 + 10s;
    int allowed = 0;
    for (int i = 0; i < 20; ++i)
        if (rate.allows(a, later)) {
            rate.take(a, later);
            ++allowed;
        }
    CHECK(allowed == 5);

    rate.take(b, later);
    CHECK(rate.tracked_ips() == 2);
    rate.sweep(later + 100ms);  // neither bucket is full yet
    CHECK(rate.tracked_ips() == 2);
    rate.sweep(later + 200ms);  // b (one token taken) is full again, a (five taken) not yet
    CHECK(rate.tracked_ips() == 1);
    rate.sweep(later + 1s);     // both are full again: dropped
    CHECK(rate.tracked_ips() == 0);

    core::ConnRateLimiter off(0);
    for (int i = 0; i < 1000; ++i) off.take(a, t0);
    CHECK(off.allows(a, t0));
    CHECK(off.tracked_ips() == 0);
}

TEST_CASE("rate buckets of idle IPs are swept lazily by SessionLimits, so the table stays bounded") {
    SessionLimits limits(1'000'000, 0, {{0, 0, 3}});
    for (uint32_t i = 0; i < 5000; ++i) {
        net::IpKey key{0, 0x0A000000ull + i};
        REQUIRE(limits.try_admit(key, 0, t0) == Verdict::Admitted);
        limits.release(key, 0);
    }
    CHECK(limits.rate_tracked_ips(0) == 5000);
    // Two seconds later one new client arrives: every old bucket is full again and goes.
    CHECK(limits.try_admit(ip("10.9.9.9"), 0, t0 + 2s) == Verdict::Admitted);
    CHECK(limits.rate_tracked_ips(0) == 1);
    // Over the rate: refused and counted per IP.
    CHECK(limits.try_admit(ip("10.9.9.9"), 0, t0 + 2s) == Verdict::Admitted);
    CHECK(limits.try_admit(ip("10.9.9.9"), 0, t0 + 2s) == Verdict::Admitted);
    CHECK(limits.try_admit(ip("10.9.9.9"), 0, t0 + 2s) == Verdict::OverRate);
}

TEST_CASE("a client refused by a later check leaves nothing counted") {
    const auto a = ip("10.0.0.1");
    SUBCASE("rule per-IP refuses after global per-IP, max_clients and the rate passed") {
        SessionLimits limits(100, 5, {{10, 1, 2}});
        REQUIRE(limits.try_admit(a, 0, t0) == Verdict::Admitted);
        CHECK(limits.try_admit(a, 0, t0) == Verdict::OverRulePerIp);
        CHECK(limits.count(a) == 1);
        CHECK(limits.active() == 1);
        CHECK(limits.rule_active(0) == 1);
        CHECK(limits.rule_count(a, 0) == 1);
        limits.release(a, 0);
        // The refused attempt took no rate token: the burst of 2 still has one left.
        CHECK(limits.try_admit(a, 0, t0) == Verdict::Admitted);
        CHECK(limits.try_admit(ip("10.0.0.2"), 0, t0) == Verdict::Admitted);
        limits.release(a, 0);
        CHECK(limits.try_admit(a, 0, t0) == Verdict::OverRate);
    }
    SUBCASE("global max_sessions and max_clients refusals") {
        SessionLimits limits(1, 0, {{1, 0, 0}, {0, 0, 0}});
        REQUIRE(limits.try_admit(a, 1, t0) == Verdict::Admitted);
        CHECK(limits.try_admit(a, 0, t0) == Verdict::OverMaxSessions);
        CHECK(limits.rule_active(0) == 0);
        limits.release(a, 1);
        REQUIRE(limits.try_admit(a, 0, t0) == Verdict::Admitted);
        limits.release(a, 0);
        CHECK(limits.active() == 0);
        CHECK(limits.rule_active(0) == 0);
        CHECK(limits.count(a) == 0);
    }
    SUBCASE("many admit/refuse/release rounds return every count to 0") {
        SessionLimits limits(3, 2, {{2, 1, 0}});
        const net::IpKey ips[] = {ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")};
        std::deque<net::IpKey> held;
        for (int round = 0; round < 3000; ++round) {
            const auto key = ips[static_cast<unsigned>(round * 7) % 3];
            if (limits.try_admit(key, 0, t0) == Verdict::Admitted) held.push_back(key);
            if (held.size() > 1 || round % 5 == 0) {
                if (!held.empty()) {
                    limits.release(held.front(), 0);
                    held.pop_front();
                }
            }
        }
        for (const auto& key : held) limits.release(key, 0);
        CHECK(limits.active() == 0);
        CHECK(limits.rule_active(0) == 0);
        for (const auto& key : ips) {
            CHECK(limits.count(key) == 0);
            CHECK(limits.rule_count(key, 0) == 0);
        }
    }
}

// ---- handshakes ------------------------------------------------------------------------------

TEST_CASE("handshakes: counted for the peer, moved to the client in one step, capped by max_handshakes") {
    SessionLimits limits(10, 2, {{0, 1, 0}}, 3);
    const auto peer = ip("10.0.0.1"), client = ip("203.0.113.9");
    const SessionLimits::Handshake in_rule{peer, true, uint16_t{0}};
    const SessionLimits::Handshake global_only{peer, true, std::nullopt};
    const SessionLimits::Handshake trusted{peer, false, uint16_t{0}};  // a proxy in proxy_from

    REQUIRE(limits.try_begin_handshake(in_rule) == Verdict::Admitted);
    CHECK(limits.count(peer) == 1);
    CHECK(limits.rule_count(peer, 0) == 1);
    CHECK(limits.rule_active(0) == 0);  // no session in the rule yet
    CHECK(limits.handshakes() == 1);
    CHECK(limits.active() == 1);
    CHECK(limits.try_begin_handshake(in_rule) == Verdict::OverRulePerIp);
    REQUIRE(limits.try_begin_handshake(global_only) == Verdict::Admitted);
    CHECK(limits.try_begin_handshake(global_only) == Verdict::OverPerIp);
    CHECK(limits.count(peer) == 2);
    REQUIRE(limits.try_begin_handshake(trusted) == Verdict::Admitted);  // no per-IP count for a trusted proxy
    CHECK(limits.count(peer) == 2);
    CHECK(limits.try_begin_handshake(trusted) == Verdict::OverMaxHandshakes);
    CHECK(limits.handshakes() == 3);
    CHECK(limits.active() == 3);

    // The header names the client: the peer's counts go, the client's come, in one step.
    CHECK(limits.finish_handshake(in_rule, client, 0, t0) == Verdict::Admitted);
    CHECK(limits.count(peer) == 1);
    CHECK(limits.rule_count(peer, 0) == 0);
    CHECK(limits.count(client) == 1);
    CHECK(limits.rule_count(client, 0) == 1);
    CHECK(limits.rule_active(0) == 1);
    CHECK(limits.handshakes() == 2);
    CHECK(limits.active() == 3);
    // Refused after the header (the client's rule per-IP limit): the handshake is gone all the same.
    CHECK(limits.finish_handshake(trusted, client, 0, t0) == Verdict::OverRulePerIp);
    CHECK(limits.handshakes() == 1);
    CHECK(limits.active() == 2);
    limits.abandon_handshake(global_only);
    CHECK(limits.count(peer) == 0);
    CHECK(limits.handshakes() == 0);
    limits.release(client, 0);
    CHECK(limits.active() == 0);
    CHECK(limits.tracked_ips() == 0);
    CHECK(limits.rule_count(client, 0) == 0);
    CHECK(limits.rule_active(0) == 0);

    SUBCASE("handshakes count in max_sessions, so they and sessions never exceed it together") {
        SessionLimits small(2, 0, {}, 0);  // 0: only max_sessions bounds handshakes
        REQUIRE(small.try_begin_handshake(global_only) == Verdict::Admitted);
        REQUIRE(small.try_admit(client, 0, t0) == Verdict::Admitted);
        CHECK(small.try_begin_handshake(global_only) == Verdict::OverMaxSessions);
        CHECK(small.try_admit(client, 0, t0) == Verdict::OverMaxSessions);
        // Moving a handshake to its client never needs a free slot: it frees its own first.
        CHECK(small.finish_handshake(global_only, ip("198.51.100.1"), 0, t0) == Verdict::Admitted);
        CHECK(small.active() == 2);
        CHECK(small.handshakes() == 0);
    }
}

// ---- configuration of the rule-level keys -------------------------------------------------------

TEST_CASE("config: deny, max_clients, max_sessions_per_ip and max_conn_rate_per_ip in [[rule]]") {
    const config::Config config = config::parse_config(R"([[rule]]
id = "web"
listen = "127.0.0.1:8080"
deny = ["10.0.0.0/8", "192.168.1.*"]
max_clients = 100
max_sessions_per_ip = 4
max_conn_rate_per_ip = 20
servers = ["127.0.0.1:9001"]

[[rule]]
id = "plain"
listen = "127.0.0.1:8081"
servers = ["127.0.0.1:9001"]
)", "test.toml");
    REQUIRE(config.rules.size() == 2);
    const config::RuleConfig& web = config.rules[0];
    REQUIRE(web.deny.size() == 2);
    CHECK(web.deny[0].matches(*net::SocketAddress::parse("10.1.2.3:5")));
    CHECK(web.deny[1].matches(*net::SocketAddress::parse("192.168.1.9:5")));
    CHECK_FALSE(web.deny[0].matches(*net::SocketAddress::parse("127.0.0.1:5")));
    CHECK(web.max_clients == 100);
    CHECK(web.max_sessions_per_ip == 4);
    CHECK(web.max_conn_rate_per_ip == 20);
    const config::RuleConfig& plain = config.rules[1];
    CHECK(plain.deny.empty());
    CHECK(plain.max_clients == 0);
    CHECK(plain.max_sessions_per_ip == 0);
    CHECK(plain.max_conn_rate_per_ip == 0);
    const auto limits = SessionLimits::rule_limits(config);
    REQUIRE(limits.size() == 2);
    CHECK(limits[0].max_clients == 100);
    CHECK(limits[0].max_sessions_per_ip == 4);
    CHECK(limits[0].max_conn_rate_per_ip == 20);
}

TEST_CASE("config: bad rule-level limits are reported with line, column and key") {
    std::vector<config::ConfigIssue> issues;
    try {
        config::parse_config(R"([[rule]]
id = "web"
listen = "127.0.0.1:8080"
deny = ["10.0.0.0/33", 7]
max_clients = -1
max_sessions_per_ip = "4"
max_conn_rate_per_ip = 2000000
servers = ["127.0.0.1:9001"]
)", "test.toml");
        FAIL("accepted");
    } catch (const config::ConfigError& error) {
        issues = error.issues();
    }
    const auto has = [&](const std::string& key, unsigned line, unsigned column, const std::string& part) {
        for (const auto& issue : issues)
            if (issue.key == key && issue.line == line && issue.column == column &&
                issue.message.find(part) != std::string::npos)
                return true;
        return false;
    };
    INFO(config::ConfigError(issues).what());
    CHECK(issues.size() == 5);
    CHECK(has("rule[0].deny[0]", 4, 9, ""));
    CHECK(has("rule[0].deny[1]", 4, 24, "expected a string"));
    CHECK(has("rule[0].max_clients", 5, 15, "between 0 and"));
    CHECK(has("rule[0].max_sessions_per_ip", 6, 23, "expected an integer"));
    CHECK(has("rule[0].max_conn_rate_per_ip", 7, 24, "between 0 and 1000000"));
}

// ---- the forwarder releases what it acquired --------------------------------------------------

namespace {

// Returns the accepted end of a fresh loopback connection (the client end is closed at once:
// the core only reads the peer address, which stays readable).
int accepted_loopback_socket(int listener, const net::SocketAddress& address, const char* source = "127.0.0.1") {
    net::UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in from{};
    from.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, source, &from.sin_addr) == 1);
    REQUIRE(::bind(client.get(), reinterpret_cast<const sockaddr*>(&from), sizeof from) == 0);
    REQUIRE(::connect(client.get(), address.sockaddr_ptr(), address.length()) == 0);
    const int accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(accepted >= 0);
    return accepted;
}

}  // namespace

TEST_CASE("forwarder: sessions whose every connect fails, and clients over a limit, release everything") {
    config::Config config;
    config.source = "test";
    config::RuleConfig rule;
    rule.id = "dead";
    rule.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
    rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:1"), 1});
    rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:2"), 1});
    rule.max_clients = 3;
    rule.max_sessions_per_ip = 2;
    config.rules.push_back(rule);
    config.global.max_sessions_per_ip = 0;

    test::RecordingEngine engine;
    engine.cancel_completes = false;
    Logger log{LogLevel::Error};
    SessionLimits limits(config);
    core::Forwarder forwarder(config, engine, log, limits);
    forwarder.start_accepting();
    const auto turn = [&] { forwarder.run_once(0ms); };

    net::UniqueFd listener = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"));
    net::set_nonblocking(listener.get(), false);
    const net::SocketAddress address = net::local_address(listener.get());
    const net::IpKey local = net::IpKey::of(address);

    for (int round = 0; round < 50; ++round) {
        CAPTURE(round);
        // Three clients at once: two admitted (rule per-IP = 2), the third refused at once.
        for (int i = 0; i < 3; ++i) {
            const auto accept = engine.try_take(Kind::Accept);
            REQUIRE(accept);
            engine.ready.push_back({accept->user_data, accepted_loopback_socket(listener.get(), address), true, false, 0});
            engine.requests.push_front(*accept);  // multishot: the accept stays armed
        }
        turn();
        CHECK(limits.rule_count(local, 0) == 2);
        CHECK(limits.rule_active(0) == 2);
        // Fail every connect until no session is left.
        for (int guard = 0; guard < 100; ++guard) {
            const auto connect = engine.try_take(Kind::Connect);
            if (!connect) break;
            engine.ready.push_back({connect->user_data, -ECONNREFUSED, false, false, 0});
            turn();
        }
        REQUIRE(forwarder.active_sessions() == 0);
        CHECK(limits.active() == 0);
        CHECK(limits.count(local) == 0);
        CHECK(limits.rule_active(0) == 0);
        CHECK(limits.rule_count(local, 0) == 0);
    }
    CHECK(forwarder.stats().rejected_rule_per_ip == 50);
    CHECK(forwarder.stats().sessions_ended == 100);
}

namespace {

// One accept_proxy rule with two dead servers, driven by hand: accepts, headers, connects.
struct ProxyHarness {
    config::Config config;
    test::RecordingEngine engine;
    Logger log{LogLevel::Error};
    std::unique_ptr<SessionLimits> limits;
    std::unique_ptr<core::Forwarder> forwarder;
    net::UniqueFd listener;
    net::SocketAddress address;

    explicit ProxyHarness(std::vector<std::string> proxy_from = {}, std::chrono::milliseconds connect_timeout = 5s) {
        config.source = "test";
        config::RuleConfig rule;
        rule.id = "lb";
        rule.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
        rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:1"), 1});
        rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:2"), 1});
        rule.accept_proxy = true;
        for (const std::string& text : proxy_from) rule.proxy_from.push_back(*net::ClientPattern::parse(text));
        rule.max_sessions_per_ip = 1;
        rule.connect_timeout = connect_timeout;
        config.rules.push_back(rule);
        config.global.max_sessions = 16;
        config.global.max_sessions_per_ip = 2;
        engine.cancel_completes = false;  // the tests complete cancelled receives themselves
        limits = std::make_unique<SessionLimits>(config);
        forwarder = std::make_unique<core::Forwarder>(config, engine, log, *limits);
        forwarder->start_accepting();
        listener = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"));
        net::set_nonblocking(listener.get(), false);
        address = net::local_address(listener.get());
    }
    void turn() { forwarder->run_once(0ms); }
    // A connection from `source` reaches the forwarder.
    void accept_from(const char* source) {
        const auto accept = engine.try_take(Kind::Accept);
        REQUIRE(accept);
        engine.ready.push_back({accept->user_data, accepted_loopback_socket(listener.get(), address, source), true, false, 0});
        engine.requests.push_front(*accept);  // multishot: the accept stays armed
        turn();
    }
    void fail_every_connect() {
        for (int guard = 0; guard < 100; ++guard) {
            const auto connect = engine.try_take(Kind::Connect);
            if (!connect) return;
            engine.ready.push_back({connect->user_data, -ECONNREFUSED, false, false, 0});
            turn();
        }
    }
    void check_all_released(const net::IpKey& peer) const {
        CHECK(forwarder->active_sessions() == 0);
        CHECK(limits->active() == 0);
        CHECK(limits->handshakes() == 0);
        CHECK(limits->count(peer) == 0);
        CHECK(limits->rule_count(peer, 0) == 0);
        CHECK(limits->tracked_ips() == 0);
        CHECK(limits->rule_active(0) == 0);
    }
};

}  // namespace

TEST_CASE("forwarder: a handshake's counts move from the peer to the client once, and go on every path") {
    ProxyHarness h;
    const net::IpKey peer = ip("127.0.0.1");
    const net::IpKey client = ip("203.0.113.9");
    for (int round = 0; round < 20; ++round) {
        CAPTURE(round);
        // Waiting for its header: counted for the peer (global and its only rule).
        h.accept_from("127.0.0.1");
        CHECK(h.limits->handshakes() == 1);
        CHECK(h.limits->count(peer) == 1);
        CHECK(h.limits->rule_count(peer, 0) == 1);
        // The header names the client: the counts move to it.
        h.engine.complete_next_recv("PROXY TCP4 203.0.113.9 192.0.2.1 5555 80\r\nhello");
        h.turn();
        CHECK(h.limits->handshakes() == 0);
        CHECK(h.limits->count(peer) == 0);
        CHECK(h.limits->count(client) == 1);
        CHECK(h.limits->rule_count(client, 0) == 1);
        CHECK(h.limits->active() == 1);
        // The same client again: over its rule per-IP limit after the header; nothing left counted.
        h.accept_from("127.0.0.1");
        h.engine.complete_next_recv("PROXY TCP4 203.0.113.9 192.0.2.1 5556 80\r\n");
        h.turn();
        CHECK(h.limits->active() == 1);
        CHECK(h.limits->count(peer) == 0);
        // A malformed header, a peer that closes, a reset: the handshake's counts go with them.
        for (const auto& [bytes, error] : std::vector<std::pair<std::string, int>>{
                 {"GET / HTTP/1.0\r\n\r\n", 0}, {"", 0}, {"", -ECONNRESET}}) {
            h.accept_from("127.0.0.1");
            CHECK(h.limits->handshakes() == 1);
            h.engine.complete_next_recv(bytes, error);
            h.turn();
            CHECK(h.limits->handshakes() == 0);
            CHECK(h.limits->count(peer) == 0);
        }
        // The admitted session ends when every connect fails: nothing is left counted.
        h.fail_every_connect();
        h.check_all_released(peer);
        CHECK(h.limits->count(client) == 0);
    }
    CHECK(h.forwarder->stats().rejected_rule_per_ip == 20);
    CHECK(h.forwarder->stats().rejected_proxy_header == 60);
    CHECK(h.forwarder->stats().sessions_ended == 100);
}

TEST_CASE("forwarder: per-IP limits hold for a peer awaiting its header; a handshake that times out or is closed releases") {
    ProxyHarness h({}, 1ms);
    const net::IpKey peer = ip("127.0.0.1");
    h.accept_from("127.0.0.1");
    h.accept_from("127.0.0.1");  // the rule's per-IP limit (1) holds for the peer: refused
    CHECK(h.limits->handshakes() == 1);
    CHECK(h.forwarder->stats().rejected_rule_per_ip == 1);
    CHECK(h.engine.count(Kind::Recv) == 1);
    h.accept_from("127.0.0.2");
    CHECK(h.limits->handshakes() == 2);
    // Both time out: closed (their receives cancelled), then released.
    std::this_thread::sleep_for(10ms);
    h.turn();
    CHECK(h.forwarder->stats().rejected_proxy_header == 2);
    CHECK(h.limits->handshakes() == 2);  // the receives have not completed yet
    h.engine.complete_next_recv("", -ECANCELED);
    h.engine.complete_next_recv("", -ECANCELED);
    h.turn();
    h.check_all_released(peer);

    // Closed by the operator or a stop while waiting.
    h.accept_from("127.0.0.3");
    CHECK(h.limits->handshakes() == 1);
    h.forwarder->close_all_sessions(core::EndCause::Shutdown);
    h.engine.complete_next_recv("", -ECANCELED);
    h.turn();
    h.check_all_released(ip("127.0.0.3"));
}

TEST_CASE("forwarder: with proxy_from, other peers are refused before their header and the proxy is not held per IP") {
    ProxyHarness h({"127.0.0.9"});
    h.accept_from("127.0.0.2");
    CHECK(h.forwarder->stats().rejected_untrusted_proxy == 1);
    CHECK(h.engine.count(Kind::Recv) == 0);  // its header is never read
    CHECK(h.limits->active() == 0);
    CHECK(h.forwarder->active_sessions() == 0);
    // Three handshakes from the proxy at once, over the global per-IP limit (2): all wait.
    for (int i = 0; i < 3; ++i) h.accept_from("127.0.0.9");
    CHECK(h.limits->handshakes() == 3);
    CHECK(h.limits->count(ip("127.0.0.9")) == 0);
    for (int i = 0; i < 3; ++i) {  // one at a time: the engine here has a single buffer
        h.engine.complete_next_recv("PROXY TCP4 203.0.113." + std::to_string(i + 1) + " 192.0.2.1 5555 80\r\n");
        h.turn();
    }
    CHECK(h.limits->handshakes() == 0);
    CHECK(h.limits->active() == 3);
    CHECK(h.limits->count(ip("203.0.113.2")) == 1);
    h.fail_every_connect();
    h.check_all_released(ip("127.0.0.9"));
    CHECK(h.forwarder->stats().rejected_total() == 1);
}
