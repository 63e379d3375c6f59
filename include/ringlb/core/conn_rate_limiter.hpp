#pragma once
// New connections per second per client IP: one token bucket per IP with a burst of `rate`
// tokens, refilled at `rate` tokens per second. Each bucket is kept as the time at which it will
// be full again (a bucket that is full needs no entry), so refilling is one subtraction and an
// idle IP's entry can be dropped as soon as that time has passed. Dropping happens in sweep(),
// which the owner calls now and then; between sweeps the table holds at most the IPs that
// connected during the last second or so.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <unordered_map>

#include "ringlb/net/address.hpp"

namespace ringlb::core {

class ConnRateLimiter {
public:
    using Clock = std::chrono::steady_clock;

    // rate 0 = off: every connection is allowed and nothing is tracked.
    explicit ConnRateLimiter(uint32_t rate_per_second)
        : rate_(rate_per_second),
          interval_(rate_per_second == 0 ? Clock::duration::zero()
                                          : std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(1)) /
                                                rate_per_second),
          burst_window_(interval_ * rate_per_second) {}

    bool enabled() const { return rate_ != 0; }

    // True when the IP has a token now. Takes nothing.
    bool allows(const net::IpKey& ip, Clock::time_point now) const {
        if (!enabled()) return true;
        auto it = full_at_.find(ip);
        if (it == full_at_.end()) return true;
        return std::max(it->second, now) + interval_ - now <= burst_window_;
    }
    // Takes one token; call only after allows() said yes (under the same lock).
    void take(const net::IpKey& ip, Clock::time_point now) {
        if (!enabled()) return;
        auto [it, inserted] = full_at_.try_emplace(ip, now);
        it->second = std::max(it->second, now) + interval_;
    }
    // Drops the entries of IPs whose bucket is full again.
    void sweep(Clock::time_point now) {
        std::erase_if(full_at_, [now](const auto& entry) { return entry.second <= now; });
    }
    size_t tracked_ips() const { return full_at_.size(); }

private:
    uint32_t rate_;
    Clock::duration interval_;      // one token's worth of time
    Clock::duration burst_window_;  // `rate` tokens' worth: a bucket full_at this far ahead is empty
    std::unordered_map<net::IpKey, Clock::time_point, net::IpKeyHash> full_at_;
};

}  // namespace ringlb::core
