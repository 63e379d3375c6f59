#pragma once
// Concurrent sessions per client IP. Entries exist only while an IP has live sessions, so the
// table stays as small as the set of connected clients.
#include <cstdint>
#include <unordered_map>

#include "ringlb/net/address.hpp"

namespace ringlb::core {

class IpLimiter {
public:
    explicit IpLimiter(uint32_t limit_per_ip) : limit_(limit_per_ip) {}

    // False (and nothing counted) when the IP already has `limit` sessions; limit 0 = unlimited.
    bool try_acquire(const net::IpKey& ip) {
        if (limit_ == 0) return true;
        uint32_t& count = counts_[ip];
        if (count >= limit_) return false;
        ++count;
        return true;
    }
    // True when try_acquire would succeed now. Counts nothing.
    bool has_room(const net::IpKey& ip) const { return limit_ == 0 || count(ip) < limit_; }
    void release(const net::IpKey& ip) {
        if (limit_ == 0) return;
        auto it = counts_.find(ip);
        if (it == counts_.end()) return;
        if (--it->second == 0) counts_.erase(it);
    }
    uint32_t count(const net::IpKey& ip) const {
        auto it = counts_.find(ip);
        return it == counts_.end() ? 0 : it->second;
    }
    size_t tracked_ips() const { return counts_.size(); }

private:
    uint32_t limit_;
    std::unordered_map<net::IpKey, uint32_t, net::IpKeyHash> counts_;
};

}  // namespace ringlb::core
