#pragma once
// Limits that hold over all worker threads: max_sessions and max_sessions_per_ip. Workers share
// one instance; it is touched once when a client is admitted and once when its session ends,
// never on the data path, so one small lock costs nothing measurable.
#include <cstdint>
#include <mutex>

#include "ringlb/core/ip_limiter.hpp"
#include "ringlb/net/address.hpp"

namespace ringlb::core {

class SessionLimits {
public:
    enum class Verdict { Admitted, OverMaxSessions, OverPerIp };

    SessionLimits(uint32_t max_sessions, uint32_t max_sessions_per_ip)
        : max_sessions_(max_sessions), per_ip_(max_sessions_per_ip) {}

    Verdict try_admit(const net::IpKey& ip) {
        std::lock_guard lock(mutex_);
        if (active_ >= max_sessions_) return Verdict::OverMaxSessions;
        if (!per_ip_.try_acquire(ip)) return Verdict::OverPerIp;
        ++active_;
        return Verdict::Admitted;
    }
    void release(const net::IpKey& ip) {
        std::lock_guard lock(mutex_);
        per_ip_.release(ip);
        --active_;
    }
    uint32_t active() const {
        std::lock_guard lock(mutex_);
        return active_;
    }
    uint32_t count(const net::IpKey& ip) const {
        std::lock_guard lock(mutex_);
        return per_ip_.count(ip);
    }

private:
    const uint32_t max_sessions_;
    mutable std::mutex mutex_;
    uint32_t active_ = 0;
    IpLimiter per_ip_;
};

}  // namespace ringlb::core
