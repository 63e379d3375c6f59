#pragma once
// One small interface for every balancing algorithm. Algorithms share the server list (address,
// weight, counters) owned by the rule and add only their choice rule; the session core reports
// outcomes through the hooks and never decides by itself which server to use.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "ringlb/config/config.hpp"
#include "ringlb/net/address.hpp"

namespace ringlb::balance {

struct Server {
    net::SocketAddress address;
    unsigned weight = 1;  // 0 = no new sessions
    uint32_t active_sessions = 0;
    uint64_t total_sessions = 0;
    uint64_t connect_failures = 0;
};

class Balancer {
public:
    virtual ~Balancer() = default;

    // The server for a new session from `client`, skipping every index listed in `tried`
    // (servers that already failed for this client); nullopt when none is left.
    virtual std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                                       std::span<const uint16_t> tried) = 0;

    // Hooks: a session was bound to / released from a server; a weight changed.
    virtual void session_taken(size_t /*server*/) {}
    virtual void session_dropped(size_t /*server*/) {}
    virtual void weights_changed() {}
};

std::unique_ptr<Balancer> make_balancer(config::BalanceMode mode);

inline bool was_tried(std::span<const uint16_t> tried, size_t server) {
    for (uint16_t index : tried)
        if (index == server) return true;
    return false;
}

}  // namespace ringlb::balance
