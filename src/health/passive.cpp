#include "ringlb/health/passive.hpp"

#include <algorithm>
#include <optional>

namespace ringlb::health {

std::string format_duration(std::chrono::milliseconds duration) {
    const auto ms = duration.count();
    if (ms >= 60'000 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
    if (ms >= 1000 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

Passive::Passive(std::string rule_id, Settings settings, Logger* log)
    : rule_id_(std::move(rule_id)), settings_(settings), log_(log) {}

std::string Passive::name(const balance::Server& server) const {
    return rule_id_ + "/" + server.address.to_string();
}

std::chrono::milliseconds Passive::down_for(uint32_t failures) const {
    const auto cap = std::max(settings_.max_down_time, std::chrono::milliseconds(0));
    auto duration = std::min(settings_.down_time, cap);
    for (uint32_t i = 1; i < failures && duration < cap; ++i) duration = std::min(duration * 2, cap);
    return duration;
}

void Passive::refresh(std::span<balance::Server> servers, std::span<const uint16_t> tried, Clock::time_point now) {
    fit(servers.size());
    for (size_t i = 0; i < servers.size(); ++i) {
        ServerState& state = states_[i];
        balance::Server& server = servers[i];
        server.down = now < state.down_until;
        if (!state.ramping) continue;
        const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - state.up_since);
        if (settings_.slow_start.count() <= 0 || elapsed >= settings_.slow_start) {
            state.ramping = false;
            server.slow_start_weight = 0;
        } else {
            const auto ramped = uint64_t{server.weight} * static_cast<uint64_t>(std::max<int64_t>(elapsed.count(), 0)) /
                                static_cast<uint64_t>(settings_.slow_start.count());
            server.slow_start_weight = static_cast<unsigned>(std::max<uint64_t>(ramped, 1));
        }
    }
    if (!balance::Candidates(servers, tried).empty()) return;
    // Every server that could take this client is down: try the one whose down_until is earliest
    // (the first due back anyway), so a fully-down rule still recovers when a server returns.
    std::optional<size_t> earliest;
    for (size_t i = 0; i < servers.size(); ++i) {
        if (!servers[i].down) continue;
        servers[i].down = false;
        const bool could = balance::eligible(servers[i], i, tried);
        servers[i].down = true;
        if (could && (!earliest || states_[i].down_until < states_[*earliest].down_until)) earliest = i;
    }
    if (earliest) servers[*earliest].down = false;
}

void Passive::connect_failed(std::span<balance::Server> servers, size_t index, Clock::time_point started,
                             Clock::time_point now, std::string_view reason) {
    fit(servers.size());
    ServerState& state = states_[index];
    if (state.failures > 0 && started < state.down_since) return;  // already counted: it is down
    if (state.failures == 0) ++state.went_down;
    ++state.failures;
    const auto duration = down_for(state.failures);
    state.down_since = now;
    state.down_until = now + duration;
    state.ramping = false;
    servers[index].down = true;
    servers[index].slow_start_weight = 0;
    if (log_)
        log_->warn("server ", name(servers[index]), " DOWN for ", format_duration(duration), ": ", reason, " (",
                   state.failures, " consecutive failure", state.failures == 1 ? "" : "s", ")");
}

void Passive::start_slow_start(std::span<balance::Server> servers, size_t index, Clock::time_point now) {
    if (settings_.slow_start.count() <= 0 || index >= servers.size()) return;
    fit(servers.size());
    states_[index].ramping = true;
    states_[index].up_since = now;
    servers[index].slow_start_weight = 1;
}

void Passive::connect_succeeded(std::span<balance::Server> servers, size_t index, Clock::time_point now) {
    fit(servers.size());
    ServerState& state = states_[index];
    if (state.failures == 0) return;
    ++state.came_up;
    state.failures = 0;
    state.down_until = {};
    state.down_since = {};
    servers[index].down = false;
    if (settings_.slow_start.count() > 0) {
        state.ramping = true;
        state.up_since = now;
        servers[index].slow_start_weight = 1;
    }
    if (log_) {
        if (state.ramping)
            log_->warn("server ", name(servers[index]), " UP (slow start over ", format_duration(settings_.slow_start), ")");
        else
            log_->warn("server ", name(servers[index]), " UP");
    }
}

}  // namespace ringlb::health
