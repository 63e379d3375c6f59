// The management port's back-off after wrong tokens, per client IP.
#include <doctest/doctest.h>

#include <chrono>

#include "ringlb/admin/auth_throttle.hpp"

using namespace std::chrono_literals;
using ringlb::admin::AuthBackoff;
using ringlb::admin::AuthThrottle;
using ringlb::net::IpKey;
using ringlb::net::SocketAddress;

namespace {

IpKey ip(const char* text) { return IpKey::of(*SocketAddress::parse(std::string(text) + ":1")); }

}  // namespace

TEST_CASE("auth throttle: no wait before a failure, then doubling up to the cap") {
    AuthThrottle throttle(AuthBackoff{50ms, 500ms, 10s, 4096});
    const AuthThrottle::Clock::time_point t0{};
    CHECK(throttle.delay_for(ip("127.0.0.1"), t0) == 0ms);
    const std::chrono::milliseconds expected[] = {50ms, 100ms, 200ms, 400ms, 500ms, 500ms};
    for (const auto delay : expected) {
        throttle.note_failure(ip("127.0.0.1"), t0);
        CHECK(throttle.delay_for(ip("127.0.0.1"), t0) == delay);
    }
    // Per IP: another address is not slowed; the IPv4-mapped form is the same client.
    CHECK(throttle.delay_for(ip("127.0.0.2"), t0) == 0ms);
    CHECK(throttle.delay_for(ip("[::ffff:127.0.0.1]"), t0) == 500ms);
}

TEST_CASE("auth throttle: failures are forgotten once the guessing stops") {
    AuthThrottle throttle(AuthBackoff{50ms, 500ms, 10s, 4096});
    const AuthThrottle::Clock::time_point t0{};
    for (int i = 0; i < 5; ++i) throttle.note_failure(ip("10.0.0.1"), t0);
    CHECK(throttle.delay_for(ip("10.0.0.1"), t0 + 9s) == 500ms);
    CHECK(throttle.delay_for(ip("10.0.0.1"), t0 + 10s) == 0ms);
    // A failure after the quiet period starts again from the first delay.
    throttle.note_failure(ip("10.0.0.1"), t0 + 11s);
    CHECK(throttle.delay_for(ip("10.0.0.1"), t0 + 11s) == 50ms);
    throttle.forget_expired(t0 + 30s);
    CHECK(throttle.tracked_ips() == 0);
}

TEST_CASE("auth throttle: the table of IPs stays bounded") {
    AuthThrottle throttle(AuthBackoff{50ms, 500ms, 10s, 3});
    const AuthThrottle::Clock::time_point t0{};
    throttle.note_failure(ip("10.0.0.1"), t0);
    throttle.note_failure(ip("10.0.0.2"), t0 + 1ms);
    throttle.note_failure(ip("10.0.0.3"), t0 + 2ms);
    throttle.note_failure(ip("10.0.0.4"), t0 + 3ms);
    CHECK(throttle.tracked_ips() == 3);
    CHECK(throttle.delay_for(ip("10.0.0.1"), t0 + 3ms) == 0ms);  // the oldest went
    CHECK(throttle.delay_for(ip("10.0.0.4"), t0 + 3ms) == 50ms);
}

TEST_CASE("auth throttle: the defaults wait 50 ms after a failure, doubling to 250 ms, for 10 s") {
    AuthThrottle throttle;
    const AuthThrottle::Clock::time_point t0{};
    const std::chrono::milliseconds expected[] = {50ms, 100ms, 200ms, 250ms, 250ms};
    for (const auto delay : expected) {
        throttle.note_failure(ip("192.0.2.1"), t0);
        CHECK(throttle.delay_for(ip("192.0.2.1"), t0) == delay);
    }
    CHECK(throttle.delay_for(ip("192.0.2.1"), t0 + 10s) == 0ms);
}
