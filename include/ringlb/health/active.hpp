#pragma once
// Active health checks: the control thread probes every server of every rule with a [rule.health]
// table on its own, whether or not clients arrive. A check connects, optionally sends a request
// and optionally compares the start of the reply, all within `timeout`; `rise` consecutive passed
// checks bring a DOWN server UP and `fall` consecutive failed ones take an UP server DOWN. Each
// change is logged once and handed to the owner through a callback, which applies it to the
// workers' balancers.
//
// The checker is an engine::Component: it shares the control thread's engine through the
// Dispatcher and never blocks. Only a check in flight holds a socket.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ringlb/config/config.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::health {

// One rule's servers to check.
struct CheckTarget {
    uint32_t rule_key = 0;  // stable identity of the rule (the caller's rule slot)
    std::string rule_id;    // for log lines
    std::vector<net::SocketAddress> servers;
    config::HealthCheckConfig check;  // targets with check.enabled false are ignored
    // Per server, the address its checks come from: the server's `source`, else the rule's
    // (not enabled: the kernel picks), so a server that admits only that address is checked
    // as it is used. Empty: none for any server.
    std::vector<config::SourceConfig> sources;
};

class ActiveChecker final : public engine::Component {
public:
    // Called once per state change, never twice in a row with the same state for one server.
    // `reason` says why: the failure that took it DOWN, or "2 checks passed" for UP. Runs inside
    // on_completion(), on_tick() or set_targets(): it must not call set_targets() itself.
    using Report = std::function<void(uint32_t rule_key, size_t server_index, bool up, const std::string& reason)>;

    // Registers itself with `dispatcher`. Call every member on the dispatcher's thread.
    ActiveChecker(engine::Dispatcher& dispatcher, Logger& log, Report report);
    // Cancels every check in flight and waits (briefly, polling the engine) for their completions,
    // so that no completion for this checker is left behind, then closes the sockets. Destroy it
    // while the engine and the dispatcher's other components are still alive, and do not run the
    // dispatcher afterwards: the dispatcher cannot unregister a component.
    ~ActiveChecker() override;

    ActiveChecker(const ActiveChecker&) = delete;
    ActiveChecker& operator=(const ActiveChecker&) = delete;

    // Replaces the set of targets (on start and on each reload). Servers of a target whose
    // rule_key and address were already checked keep their state and counters (and a check in
    // flight continues); new ones start DOWN, unreported (the caller starts them down), and are
    // checked at once, their first checks spread over a few milliseconds. Checks in flight for
    // servers no longer listed are cancelled; their completions are ignored.
    void set_targets(std::vector<CheckTarget> targets);

    // Current state, for `show rules` and tests. Unknown servers are reported down.
    bool is_up(uint32_t rule_key, size_t server_index) const;
    // Why the server's most recent failed check failed ("" if it never failed).
    std::string last_failure(uint32_t rule_key, size_t server_index) const;
    // Check results and state changes of a server so far (zeros for an unknown one).
    struct Counts {
        uint64_t passed = 0;
        uint64_t failed = 0;
        uint64_t went_up = 0;
        uint64_t went_down = 0;
    };
    Counts counts(uint32_t rule_key, size_t server_index) const;

    void on_completion(const engine::Completion& completion) override;
    std::optional<Clock::time_point> on_tick(Clock::time_point now) override;

private:
    struct ServerState;
    struct Target;
    struct CheckSlot;
    enum class Phase : uint8_t { Connecting, Sending, Receiving, Closing };

    const ServerState* find(uint32_t rule_key, size_t server_index) const;

    // ---- one check ----
    void start_due_checks(Clock::time_point now);
    void start_check(ServerState& server, Clock::time_point now);
    void on_connected(CheckSlot& slot, int32_t result);
    void on_sent(CheckSlot& slot, int32_t result);
    void on_received(CheckSlot& slot, const engine::Completion& completion);
    void send_rest(CheckSlot& slot);
    void receive_more(CheckSlot& slot);
    void judge_reply(CheckSlot& slot);
    void expire_checks(Clock::time_point now);
    // The check's outcome is known: apply it to its server, then free the slot once nothing is
    // pending on its socket (at once, or when the cancelled request comes back).
    void finish(CheckSlot& slot, bool passed, const std::string& reason, bool request_pending);
    void abandon(CheckSlot& slot);
    void release(CheckSlot& slot);
    uint32_t acquire_slot();
    engine::UserData user_data_of(const CheckSlot& slot) const;
    CheckSlot* slot_of(engine::UserData user_data);

    // ---- counting passes and failures ----
    void record(ServerState& server, bool passed, const std::string& reason);

    engine::Dispatcher& dispatcher_;
    engine::Engine& engine_;
    Logger& log_;
    Report report_;
    uint8_t channel_ = 0;
    std::vector<Target> targets_;
    std::vector<CheckSlot> slots_;  // grows to the peak number of checks in flight
    uint32_t source_port_cursor_ = 0;  // a port range is walked from here, one further per check
    std::vector<uint32_t> free_slots_;
};

}  // namespace ringlb::health
