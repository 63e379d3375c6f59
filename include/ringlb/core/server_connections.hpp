#pragma once
// Connections to each server over all worker threads, for servers[].max_connections and for the
// modes that balance by load: a connection counts from the moment its connect is started until
// the session lets it go (a failed connect, or the session's end).
//
// One count per rule id and server address, shared by every worker's copy of the rule and by
// every version of it (after a reload, sessions of the rule's earlier version still hold their
// connections to the same server). A count is taken and given back with atomics, without a lock;
// the lock guards only the table, used when a rule is built. A count lives as long as some rule
// refers to it.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringlb/net/address.hpp"

namespace ringlb::core {

class ServerConnections {
public:
    using Count = std::atomic<uint32_t>;
    using Handle = std::shared_ptr<Count>;

    ServerConnections() = default;
    ServerConnections(const ServerConnections&) = delete;
    ServerConnections& operator=(const ServerConnections&) = delete;

    // The count of `server` in rule `rule_id`; the same one for every caller while any holds it.
    // The table must outlive every handle.
    Handle count(std::string_view rule_id, const net::SocketAddress& server);
    // The counts of every server of a rule, in their order, under one lock: a rule may have
    // a hundred thousand servers, and this is what building it costs per server.
    std::vector<Handle> counts(std::string_view rule_id, const std::vector<net::SocketAddress>& servers);
    // Counts in the table (each held by at least one rule).
    size_t tracked() const;

    // Takes one connection unless `limit` (0 = none) are taken already.
    static bool try_take(Count& count, uint32_t limit) {
        uint32_t now = count.load(std::memory_order_relaxed);
        do {
            if (limit != 0 && now >= limit) return false;
        } while (!count.compare_exchange_weak(now, now + 1, std::memory_order_relaxed));
        return true;
    }
    static void give_back(Count& count) { count.fetch_sub(1, std::memory_order_relaxed); }

private:
    // A rule's counts, by server address (hashed as bytes: no text is formatted per server).
    using RuleCounts = std::unordered_map<net::SocketAddress, std::weak_ptr<Count>, net::SocketAddressHash>;
    struct Entry;

    Handle count_locked(const std::shared_ptr<const std::string>& rule_id, RuleCounts& rule,
                        const net::SocketAddress& server);
    void forget(const std::string& rule_id, const net::SocketAddress& server);

    mutable std::mutex mutex_;
    std::unordered_map<std::string, RuleCounts> table_;  // by rule id
};

}  // namespace ringlb::core
