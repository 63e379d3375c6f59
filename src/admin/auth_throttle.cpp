#include "ringlb/admin/auth_throttle.hpp"

#include <algorithm>

namespace ringlb::admin {

std::chrono::milliseconds AuthThrottle::delay_for(const net::IpKey& ip, Clock::time_point now) const {
    const auto it = failures_.find(ip);
    if (it == failures_.end() || it->second.failures == 0 || expired(it->second, now))
        return std::chrono::milliseconds(0);
    // Doubling per failure; the shift is bounded so that it cannot overflow.
    const unsigned doublings = std::min(it->second.failures - 1, 20U);
    return std::min(settings_.first_delay * (int64_t{1} << doublings), settings_.max_delay);
}

void AuthThrottle::note_failure(const net::IpKey& ip, Clock::time_point now) {
    auto it = failures_.find(ip);
    if (it == failures_.end()) {
        make_room(now);
        it = failures_.emplace(ip, Record{}).first;
    } else if (expired(it->second, now)) {
        it->second.failures = 0;  // a new episode starts from the first delay
    }
    ++it->second.failures;
    it->second.last_failure = now;
}

void AuthThrottle::forget_expired(Clock::time_point now) {
    std::erase_if(failures_, [&](const auto& entry) { return expired(entry.second, now); });
}

void AuthThrottle::make_room(Clock::time_point now) {
    if (failures_.size() < settings_.max_tracked_ips) return;
    forget_expired(now);
    if (failures_.size() < settings_.max_tracked_ips) return;
    const auto oldest = std::min_element(failures_.begin(), failures_.end(), [](const auto& a, const auto& b) {
        return a.second.last_failure < b.second.last_failure;
    });
    failures_.erase(oldest);
}

}  // namespace ringlb::admin
