#pragma once
// One small interface for every balancing algorithm. Algorithms share the server list (address,
// weight, counters) owned by the rule and add only their choice rule; the session core reports
// outcomes through the hooks and never decides by itself which server to use.
//
// Every mode applies the same eligibility rule first (see Candidates below): a server with weight
// 0, one marked down by passive health, one already tried for this client, or one at its
// max_connections takes no new session, and backup servers are considered only when no
// non-backup server is eligible. Balancers never decide health: they only read `down` and the
// slow-start weight that health::Passive sets before each pick.
#include <chrono>
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
    // Connects in progress and established sessions over all workers, as read before each pick:
    // what max_connections caps and what the modes that balance by load (lc, p2c) compare.
    uint32_t connections = 0;
    uint32_t active_sessions = 0;  // established sessions of this worker (for the statistics)
    uint64_t total_sessions = 0;
    uint64_t connect_failures = 0;
    bool backup = false;           // used only when every non-backup server is ineligible
    uint32_t max_connections = 0;  // 0 = unlimited
    bool down = false;             // set by passive health before each pick: not eligible
    bool check_down = false;       // active health checks say DOWN (or have not passed yet)
    bool disabled = false;         // by the operator (admin `disable server`, `drain server`)
    unsigned slow_start_weight = 0;  // nonzero while ramping up after coming back UP (see effective_weight)
};

// The weight the weighted modes (rr, rd, p2c, lc) use: the configured weight, or less of it while
// the server is in slow start.
inline unsigned effective_weight(const Server& server) {
    return server.slow_start_weight != 0 && server.slow_start_weight < server.weight ? server.slow_start_weight
                                                                                       : server.weight;
}

class Balancer {
public:
    virtual ~Balancer() = default;

    // The server for a new session from `client`, skipping every index listed in `tried`
    // (servers that already failed for this client); nullopt when none is left.
    virtual std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                                       std::span<const uint16_t> tried) = 0;

    // Hooks: a session was bound to / released from a server; a weight changed; a connect to a
    // server succeeded after `elapsed`.
    virtual void session_taken(size_t /*server*/) {}
    virtual void session_dropped(size_t /*server*/) {}
    virtual void weights_changed() {}
    virtual void connect_time(size_t /*server*/, std::chrono::microseconds /*elapsed*/) {}
};

// `failback` concerns master/standby only (see master_standby.hpp).
std::unique_ptr<Balancer> make_balancer(config::BalanceMode mode, bool failback = true);

inline bool was_tried(std::span<const uint16_t> tried, size_t server) {
    for (uint16_t index : tried)
        if (index == server) return true;
    return false;
}

// Whether `server` (at `index`) may take a new session at all: weight above 0, not down, not tried
// yet for this client, below its connection limit. Says nothing about backup: see Candidates.
inline bool eligible(const Server& server, size_t index, std::span<const uint16_t> tried) {
    if (server.weight == 0 || server.down || server.check_down || server.disabled) return false;
    if (server.max_connections > 0 && server.connections >= server.max_connections) return false;
    return !was_tried(tried, index);
}

// The servers one pick may choose from: the eligible non-backup servers, or, when there is none,
// the eligible backup servers. Every mode asks contains(i) instead of testing servers itself.
class Candidates {
public:
    Candidates(std::span<const Server> servers, std::span<const uint16_t> tried);

    bool contains(size_t index) const {
        return servers_[index].backup == backup_tier_ && eligible(servers_[index], index, tried_);
    }
    bool empty() const { return empty_; }
    bool backup_tier() const { return backup_tier_; }

private:
    std::span<const Server> servers_;
    std::span<const uint16_t> tried_;
    bool backup_tier_ = false;
    bool empty_ = true;
};

// a.connections / a.weight < b.connections / b.weight without division (weights of candidates
// are > 0), with the effective (slow-start) weights.
inline bool less_loaded(const Server& a, const Server& b) {
    return uint64_t{a.connections} * effective_weight(b) < uint64_t{b.connections} * effective_weight(a);
}

}  // namespace ringlb::balance
