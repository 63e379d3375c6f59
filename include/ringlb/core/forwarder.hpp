#pragma once
// The session core: accepts clients, matches rules, applies limits, picks servers, pairs each
// client with a server connection and moves bytes both ways. It asks the engine for operations
// and reacts to their completions; it never calls an event API itself.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringlb/balance/balancer.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/core/session_limits.hpp"
#include "ringlb/core/session.hpp"
#include "ringlb/core/slab.hpp"
#include "ringlb/core/timer_queue.hpp"
#include "ringlb/core/user_data.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/health/passive.hpp"
#include "ringlb/net/socket.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::core {

struct ForwarderStats {
    uint64_t accepted = 0;
    uint64_t accept_errors = 0;
    uint64_t rejected_no_rule = 0;
    uint64_t rejected_max_sessions = 0;
    uint64_t rejected_per_ip = 0;
    uint64_t rejected_denied = 0;       // denied by every rule that would otherwise have taken it
    uint64_t rejected_max_clients = 0;  // rule max_clients
    uint64_t rejected_rule_per_ip = 0;  // rule max_sessions_per_ip
    uint64_t rejected_rate = 0;         // rule max_conn_rate_per_ip
    uint64_t connect_failures = 0;
    uint64_t no_server_left = 0;
    uint64_t idle_timeouts = 0;
    uint64_t sessions_ended = 0;
};

// A listen address could not be bound; what() names it ("bind 127.0.0.1:80: Permission denied").
class ListenError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Forwarder final : public engine::CompletionHandler {
public:
    // Binds every listen address of the config (throws ListenError); accepting starts with
    // start_accepting(). `limits` may be shared with other workers; with `reuse_port` each
    // worker binds its own listeners on the same addresses.
    Forwarder(const config::Config& config, engine::Engine& engine, Logger& log, SessionLimits& limits,
              bool reuse_port = false);
    ~Forwarder();
    Forwarder(const Forwarder&) = delete;
    Forwarder& operator=(const Forwarder&) = delete;

    void start_accepting();
    // Serves until `stop` turns true (checked at least every 250 ms).
    void run(const std::atomic<bool>& stop);
    // One round: wait up to max_wait for completions, handle them, fire due timers.
    void run_once(std::chrono::milliseconds max_wait);

    void on_batch_start() override { now_ = Clock::now(); }
    void on_completion(const engine::Completion& completion) override;

    const ForwarderStats& stats() const { return stats_; }
    uint32_t active_sessions() const { return sessions_.in_use(); }
    std::vector<std::string> listen_addresses() const;

private:
    struct Rule {
        config::RuleConfig config;
        std::vector<balance::Server> servers;
        std::unique_ptr<balance::Balancer> balancer;
        health::Passive health;  // connect outcomes -> servers[i].down / slow_start_weight
        uint32_t active_sessions = 0;
    };
    struct Listener {
        net::UniqueFd fd;
        net::SocketAddress address;
        std::vector<uint16_t> rules;  // in file order
    };

    void build_rules(const config::Config& config);
    void bind_listeners(bool reuse_port);
    void arm_accept(uint16_t listener);

    void on_accept(uint16_t listener, const engine::Completion& completion);
    void admit(uint16_t listener, net::UniqueFd client);
    // The first rule of the listener that does not deny the client and whose clients match it;
    // *denied tells whether some rule's deny list matched the client.
    std::optional<uint16_t> match_rule(const Listener& listener, const net::SocketAddress& client,
                                       bool* denied = nullptr) const;

    void connect_next_server(uint32_t slot, Session& session);
    void on_connect(uint32_t slot, Session& session, int result);
    void on_recv(uint32_t slot, Session& session, Side source, const engine::Completion& completion);
    void on_send(uint32_t slot, Session& session, Side destination, int result);
    void on_shutdown(uint32_t slot, Session& session, Side destination);
    void pump(uint32_t slot, Session& session, Side source);

    void close_session(uint32_t slot, Session& session, bool abortive);
    void release_if_quiet(uint32_t slot, Session& session);
    void release(uint32_t slot, Session& session);

    void fire_due_timers();
    void on_timer(const TimerEntry& entry);
    void arm_idle_timer(uint32_t slot, const Session& session);

    uint64_t token(uint32_t slot, Op op) const { return Token{slot, sessions_.generation(slot), op}.pack(); }
    std::string describe(const Session& session) const;

    engine::Engine& engine_;
    Logger& log_;
    config::GlobalConfig global_;
    std::vector<Rule> rules_;
    std::vector<Listener> listeners_;
    Slab<Session> sessions_;
    SessionLimits& limits_;
    TimerQueue timers_;
    ForwarderStats stats_;
    Clock::time_point now_ = Clock::now();  // taken once per batch of completions
};

}  // namespace ringlb::core
