#pragma once
// Clients waiting for a server connection when every server of their rule is at its
// max_connections (rule keys `queue` and `queue_timeout`), first come first served over all
// worker threads.
//
// One queue per rule id, shared by every worker's copy of the rule and every version of it (as
// ServerConnections' counts are). A waiter holds no server connection. When a session ends and
// gives its server connection back, the worker checks the queue first: if a client waits, the
// connection is not given back but handed to the oldest waiter, on whatever worker it is, as a
// Grant posted to that worker. So a newcomer can never take a freed connection from under a
// waiter, and the shared per-server counts stay exact.
//
// The lock is taken only while clients wait (waiting() is one atomic load), so rules without a
// queue, or whose servers have room, pay nothing on the data path.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ringlb/core/server_connections.hpp"
#include "ringlb/net/address.hpp"

namespace ringlb::core {

class ServerQueue {
public:
    using Clock = std::chrono::steady_clock;

    struct Waiter {
        uint64_t session_id = 0;  // Forwarder::session_id: names the worker and the slot
        Clock::time_point since{};
    };

    // Clients waiting now (a relaxed read: a hint for the fast path, exact under the lock).
    uint32_t waiting() const { return waiting_.load(std::memory_order_relaxed); }
    uint32_t capacity() const { return capacity_.load(std::memory_order_relaxed); }
    void set_capacity(uint32_t capacity) { capacity_.store(capacity, std::memory_order_relaxed); }

    // Adds a waiter at the back; false when `capacity` clients wait already.
    bool try_push(const Waiter& waiter);
    // Takes the oldest waiter, if any.
    std::optional<Waiter> pop();
    // Takes `session_id` out of the queue; false when it is not there (a grant is on its way to it).
    bool remove(uint64_t session_id);

private:
    mutable std::mutex mutex_;
    std::deque<Waiter> waiters_;
    std::atomic<uint32_t> waiting_{0};
    std::atomic<uint32_t> capacity_{0};
};

// A server connection handed to a waiting client: the count is taken already, for `server`.
struct QueueGrant {
    uint64_t session_id = 0;
    net::SocketAddress server;
    ServerConnections::Handle count;     // taken: the receiver uses it or passes it on
    std::shared_ptr<ServerQueue> queue;  // where to pass it on when the waiter is gone
    ServerQueue::Clock::time_point waited_since{};
};

class ServerQueues {
public:
    // Runs on the granting worker: must post `grant` to the worker that `grant.session_id` names.
    using Deliver = std::function<void(QueueGrant grant)>;

    ServerQueues() = default;
    ServerQueues(const ServerQueues&) = delete;
    ServerQueues& operator=(const ServerQueues&) = delete;

    // The queue of rule `rule_id` (made on first use), its capacity set to `capacity`.
    std::shared_ptr<ServerQueue> queue(std::string_view rule_id, uint32_t capacity);

    // Set once before the workers serve.
    void set_deliver(Deliver deliver) { deliver_ = std::move(deliver); }
    bool can_deliver() const { return static_cast<bool>(deliver_); }

    // Hands the connection counted in `count` for `server` to the oldest waiter of `queue`: true
    // when a waiter got it (the count is now the waiter's), false when nobody waits (the caller
    // still holds it).
    bool offer(const std::shared_ptr<ServerQueue>& queue, const net::SocketAddress& server,
               const ServerConnections::Handle& count);
    // The same, giving the connection back when nobody waits.
    void offer_or_give_back(const std::shared_ptr<ServerQueue>& queue, const net::SocketAddress& server,
                            const ServerConnections::Handle& count) {
        if (!offer(queue, server, count)) ServerConnections::give_back(*count);
    }

private:
    void forget(const std::string& rule_id);

    Deliver deliver_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::weak_ptr<ServerQueue>> table_;
};

}  // namespace ringlb::core
