#pragma once
// Slows token guessing on the management port. Every failed `auth` from an IP makes the next
// attempts from that IP wait before they are checked: first_delay after the first failure,
// doubling with each further one up to max_delay. An IP whose last failure is forget_after old is
// forgotten. Connections are never refused for it, so an operator who shares the address with a
// guesser (loopback, a NAT) is only slowed, and only while the guessing lasts.
#include <chrono>
#include <cstddef>
#include <unordered_map>

#include "ringlb/net/address.hpp"

namespace ringlb::admin {

// The default maximum keeps an operator who shares a guesser's address answered within a
// quarter of a second more than usual, while a guesser gets at most (unauthenticated connections
// / max_delay: 16 / 250 ms = 64) tries a second instead of thousands.
struct AuthBackoff {
    std::chrono::milliseconds first_delay{50};
    std::chrono::milliseconds max_delay{250};
    std::chrono::milliseconds forget_after{10'000};
    size_t max_tracked_ips = 4096;  // beyond it the IP whose last failure is oldest is forgotten
};

class AuthThrottle {
public:
    using Clock = std::chrono::steady_clock;

    explicit AuthThrottle(AuthBackoff settings = {}) : settings_(settings) {}

    // How long an attempt from `ip` arriving now waits before it is checked (0: no wait).
    std::chrono::milliseconds delay_for(const net::IpKey& ip, Clock::time_point now) const;
    void note_failure(const net::IpKey& ip, Clock::time_point now);
    // Drops the IPs whose last failure is older than forget_after (called from a timer).
    void forget_expired(Clock::time_point now);
    size_t tracked_ips() const { return failures_.size(); }

private:
    struct Record {
        unsigned failures = 0;
        Clock::time_point last_failure{};
    };
    bool expired(const Record& record, Clock::time_point now) const {
        return now - record.last_failure >= settings_.forget_after;
    }
    void make_room(Clock::time_point now);

    AuthBackoff settings_;
    std::unordered_map<net::IpKey, Record, net::IpKeyHash> failures_;
};

}  // namespace ringlb::admin
