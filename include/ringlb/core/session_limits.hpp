#pragma once
// Limits that hold over all worker threads: max_sessions and max_sessions_per_ip, per rule
// max_clients, max_sessions_per_ip and max_conn_rate_per_ip, and (through server_connections())
// the connections to each server for servers[].max_connections. Workers share one instance; it is
// touched once when a client is admitted and once when its session ends, never on the data path,
// so one small lock costs nothing measurable.
//
// Admission checks every limit first and counts only when all of them pass, under one lock, so a
// client refused by any limit leaves no count behind; release() undoes exactly what an admission
// counted.
//
// A connection that must finish a handshake before its client is known (a PROXY header names
// the client) is counted as a handshake first: in max_sessions, in max_handshakes, and in the
// per-IP limits for its TCP peer unless the peer is a trusted proxy. finish_handshake() then
// moves it to the client the handshake named in one step (under the same lock), or
// abandon_handshake() drops it: each undoes the handshake's counts exactly once.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "ringlb/config/config.hpp"
#include "ringlb/core/conn_rate_limiter.hpp"
#include "ringlb/core/ip_limiter.hpp"
#include "ringlb/core/server_connections.hpp"
#include "ringlb/core/server_queue.hpp"
#include "ringlb/net/address.hpp"

namespace ringlb::core {

// The limits of one [[rule]]; 0 = no limit.
struct RuleLimits {
    uint32_t max_clients = 0;           // concurrent sessions in the rule
    uint32_t max_sessions_per_ip = 0;   // concurrent sessions in the rule per client IP
    uint32_t max_conn_rate_per_ip = 0;  // new sessions per second per client IP (burst as many)
};

class SessionLimits {
public:
    using Clock = std::chrono::steady_clock;
    // In the order they are checked; the first that fails is the verdict.
    enum class Verdict {
        Admitted,
        OverRate,
        OverMaxSessions,
        OverMaxClients,
        OverPerIp,
        OverRulePerIp,
        OverMaxHandshakes,  // try_begin_handshake() only, checked right after max_sessions
    };

    // What one connection in its handshake holds: given to try_begin_handshake(), then to
    // exactly one of finish_handshake() and abandon_handshake().
    struct Handshake {
        net::IpKey peer;
        bool per_ip = false;           // the peer counts in the global per-IP limit (not a trusted proxy)
        std::optional<uint16_t> rule;  // and in this rule's per-IP limit (the only rule its listener has)
    };

    // `rules[i]` holds for rule index i; a rule index without an entry has no rule limits.
    // `max_handshakes` 0 = only max_sessions bounds connections in their handshake.
    SessionLimits(uint32_t max_sessions, uint32_t max_sessions_per_ip, const std::vector<RuleLimits>& rules = {},
                  uint32_t max_handshakes = 0)
        : max_sessions_(max_sessions),
          max_handshakes_(max_handshakes == 0 ? max_sessions : max_handshakes),
          per_ip_(max_sessions_per_ip) {
        rules_.reserve(rules.size());
        for (const RuleLimits& limits : rules) rules_.emplace_back(limits);
    }
    explicit SessionLimits(const config::Config& config)
        : SessionLimits(config.global.max_sessions, config.global.max_sessions_per_ip, rule_limits(config),
                        config::handshake_limit(config.global)) {}

    static std::vector<RuleLimits> rule_limits(const config::Config& config) {
        std::vector<RuleLimits> out;
        for (const config::RuleConfig& rule : config.rules)
            out.push_back({rule.max_clients, rule.max_sessions_per_ip, rule.max_conn_rate_per_ip});
        return out;
    }

    // Sets the limits of a rule slot added by a reload (a slot is never reused for another rule
    // while sessions of the old one may still count in it: see app/runtime).
    void set_rule_limits(uint16_t rule, const RuleLimits& limits) {
        std::lock_guard lock(mutex_);
        while (rules_.size() <= rule) rules_.emplace_back(RuleLimits{});
        if (rules_[rule].active != 0) return;  // still counting live sessions: keep their counts
        rules_[rule] = RuleState(limits);
    }

    // Global limits only (no rule).
    Verdict try_admit(const net::IpKey& ip) {
        std::lock_guard lock(mutex_);
        if (active_ >= max_sessions_) return Verdict::OverMaxSessions;
        if (!per_ip_.try_acquire(ip)) return Verdict::OverPerIp;
        count_one_more();
        return Verdict::Admitted;
    }

    // Global and rule limits; `now` feeds the rule's connection rate buckets.
    Verdict try_admit(const net::IpKey& ip, uint16_t rule, Clock::time_point now) {
        std::lock_guard lock(mutex_);
        return admit_locked(ip, rule, now);
    }

    // A connection starts its handshake: counted in max_sessions, max_handshakes and, as
    // `handshake` says, in the per-IP limits for its peer; nothing is counted when refused.
    Verdict try_begin_handshake(const Handshake& handshake) {
        std::lock_guard lock(mutex_);
        RuleState* state = handshake.per_ip && handshake.rule ? rule_state(*handshake.rule) : nullptr;
        if (active_ >= max_sessions_) return Verdict::OverMaxSessions;
        if (handshakes_ >= max_handshakes_) return Verdict::OverMaxHandshakes;
        if (handshake.per_ip && !per_ip_.has_room(handshake.peer)) return Verdict::OverPerIp;
        if (state && !state->per_ip.has_room(handshake.peer)) return Verdict::OverRulePerIp;
        if (handshake.per_ip) per_ip_.try_acquire(handshake.peer);
        if (state) state->per_ip.try_acquire(handshake.peer);
        count_one_more();
        ++handshakes_;
        return Verdict::Admitted;
    }

    // The handshake named `client`: the handshake's counts go and the client is admitted to
    // `rule` as try_admit() would, in one step. Whatever the verdict, the handshake is over (its
    // counts are gone); when Admitted, release(client, rule) ends the session.
    Verdict finish_handshake(const Handshake& handshake, const net::IpKey& client, uint16_t rule, Clock::time_point now) {
        std::lock_guard lock(mutex_);
        drop_handshake_locked(handshake);
        return admit_locked(client, rule, now);
    }

    // The handshake failed or timed out, or the connection closed before it ended.
    void abandon_handshake(const Handshake& handshake) {
        std::lock_guard lock(mutex_);
        drop_handshake_locked(handshake);
    }

    void release(const net::IpKey& ip) {
        std::lock_guard lock(mutex_);
        per_ip_.release(ip);
        --active_;
    }
    // Undoes one admission by try_admit(ip, rule, now).
    void release(const net::IpKey& ip, uint16_t rule) {
        std::lock_guard lock(mutex_);
        per_ip_.release(ip);
        --active_;
        if (rule < rules_.size()) {
            rules_[rule].per_ip.release(ip);
            --rules_[rule].active;
        }
    }

    // Sessions and connections in their handshake.
    uint32_t active() const {
        std::lock_guard lock(mutex_);
        return active_;
    }
    uint32_t handshakes() const {
        std::lock_guard lock(mutex_);
        return handshakes_;
    }
    // The most sessions (handshakes included) open at once since start, over all workers.
    uint32_t peak() const {
        std::lock_guard lock(mutex_);
        return peak_;
    }
    // Client IPs holding at least one session (global count): 0 once every session ended.
    size_t tracked_ips() const {
        std::lock_guard lock(mutex_);
        return per_ip_.tracked_ips();
    }
    uint32_t count(const net::IpKey& ip) const {
        std::lock_guard lock(mutex_);
        return per_ip_.count(ip);
    }
    // Sessions in a rule, all IPs / one IP; 0 for a rule without limits.
    uint32_t rule_active(uint16_t rule) const {
        std::lock_guard lock(mutex_);
        return rule < rules_.size() ? rules_[rule].active : 0;
    }
    uint32_t rule_count(const net::IpKey& ip, uint16_t rule) const {
        std::lock_guard lock(mutex_);
        return rule < rules_.size() ? rules_[rule].per_ip.count(ip) : 0;
    }
    // IPs with a rate bucket entry in the rule (entries of idle IPs are dropped lazily).
    size_t rate_tracked_ips(uint16_t rule) const {
        std::lock_guard lock(mutex_);
        return rule < rules_.size() ? rules_[rule].rate.tracked_ips() : 0;
    }

    // Connections per server over all workers (counted without this object's lock).
    ServerConnections& server_connections() { return server_connections_; }
    // Clients waiting for a server connection, per rule over all workers.
    ServerQueues& server_queues() { return server_queues_; }

    // A full bucket is dropped by the first admission at least this long after the last sweep.
    static constexpr Clock::duration kSweepInterval = std::chrono::seconds(1);

private:
    struct RuleState {
        explicit RuleState(const RuleLimits& limits)
            : max_clients(limits.max_clients), per_ip(limits.max_sessions_per_ip), rate(limits.max_conn_rate_per_ip) {}
        uint32_t max_clients;
        uint32_t active = 0;  // counted for every rule, used when max_clients != 0
        IpLimiter per_ip;
        ConnRateLimiter rate;
    };

    RuleState* rule_state(uint16_t rule) { return rule < rules_.size() ? &rules_[rule] : nullptr; }

    Verdict admit_locked(const net::IpKey& ip, uint16_t rule, Clock::time_point now) {
        RuleState* state = rule_state(rule);
        if (state && state->rate.enabled()) {
            if (now - last_sweep_ >= kSweepInterval) sweep(now);
            if (!state->rate.allows(ip, now)) return Verdict::OverRate;
        }
        if (active_ >= max_sessions_) return Verdict::OverMaxSessions;
        if (state && state->max_clients != 0 && state->active >= state->max_clients) return Verdict::OverMaxClients;
        if (!per_ip_.has_room(ip)) return Verdict::OverPerIp;
        if (state && !state->per_ip.has_room(ip)) return Verdict::OverRulePerIp;
        // Everything passed: count it all.
        per_ip_.try_acquire(ip);
        count_one_more();
        if (state) {
            state->rate.take(ip, now);
            state->per_ip.try_acquire(ip);
            ++state->active;
        }
        return Verdict::Admitted;
    }

    void count_one_more() { peak_ = std::max(peak_, ++active_); }

    void drop_handshake_locked(const Handshake& handshake) {
        if (handshake.per_ip) per_ip_.release(handshake.peer);
        if (RuleState* state = handshake.per_ip && handshake.rule ? rule_state(*handshake.rule) : nullptr)
            state->per_ip.release(handshake.peer);
        --active_;
        --handshakes_;
    }

    void sweep(Clock::time_point now) {
        for (RuleState& state : rules_) state.rate.sweep(now);
        last_sweep_ = now;
    }

    const uint32_t max_sessions_;
    const uint32_t max_handshakes_;
    mutable std::mutex mutex_;
    uint32_t active_ = 0;      // sessions and connections in their handshake
    uint32_t peak_ = 0;        // the highest active_ so far
    uint32_t handshakes_ = 0;  // connections in their handshake
    IpLimiter per_ip_;
    std::vector<RuleState> rules_;
    Clock::time_point last_sweep_{};
    ServerConnections server_connections_;
    ServerQueues server_queues_;
};

}  // namespace ringlb::core
