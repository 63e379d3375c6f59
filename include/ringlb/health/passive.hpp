#pragma once
// Passive health: servers are judged by the connects the forwarder makes for real clients, with
// no probes of their own. A failed connect (refused, timed out or otherwise failed) marks the
// server down for `down_time`, doubled for each further consecutive failure up to
// `max_down_time`; a successful connect brings it back (logged once as UP) and, with
// `slow_start`, ramps its effective weight from about 0 to its weight over that time.
//
// The split of duties: the forwarder reports connect outcomes here, this class sets the state
// the balancers read (balance::Server::down and slow_start_weight), and the balancers only apply
// the shared eligibility rule. One Passive belongs to one rule of one worker.
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/balance/balancer.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::health {

using Clock = std::chrono::steady_clock;

struct Settings {
    std::chrono::milliseconds down_time{std::chrono::seconds(10)};
    std::chrono::milliseconds max_down_time{std::chrono::minutes(5)};
    std::chrono::milliseconds slow_start{0};  // 0 = off
};

// What passive health knows about one server.
struct ServerState {
    Clock::time_point down_until{};  // not chosen before this (unless every server is down)
    Clock::time_point down_since{};  // when the current down period began
    Clock::time_point up_since{};    // when it came back UP: slow start ramps from here
    uint32_t failures = 0;           // consecutive failed connects; 0 = up
    bool ramping = false;            // within slow_start after coming back UP
    uint64_t went_down = 0;          // times marked down from up (not the re-marks of a down server)
    uint64_t came_up = 0;            // times a successful connect brought it back
};

// "10s", "300ms", "5m": how down times appear in log lines.
std::string format_duration(std::chrono::milliseconds duration);

class Passive {
public:
    Passive() = default;
    // `log` may be null (no log lines); `rule_id` names the rule in them.
    Passive(std::string rule_id, Settings settings, Logger* log);

    // Before each pick: sets Server::down (and slow_start_weight) for `now`. When no server
    // could take this client because all of them are down, the one whose down_until is
    // earliest is made choosable again for this pick, so a fully-down rule still recovers
    // (its first successful connect brings it back) instead of refusing every client until a
    // down_time has passed.
    void refresh(std::span<balance::Server> servers, std::span<const uint16_t> tried, Clock::time_point now);

    // A connect to servers[index] that began at `started` failed at `now`; `reason` is e.g.
    // "connect refused". Connects that began before the server was marked down are not counted
    // again (many clients failing on the same dead server is one failure, not many).
    void connect_failed(std::span<balance::Server> servers, size_t index, Clock::time_point started,
                        Clock::time_point now, std::string_view reason);
    // A connect to servers[index] succeeded: resets its failures; logs UP if it was down.
    void connect_succeeded(std::span<balance::Server> servers, size_t index, Clock::time_point now);

    // A server that joined the rule (a DNS answer named it, a reload added it) ramps up as one
    // coming back UP does, when slow_start is set.
    void start_slow_start(std::span<balance::Server> servers, size_t index, Clock::time_point now);

    // How long `failures` consecutive failures keep a server down: down_time doubled per
    // failure after the first, at most max_down_time.
    std::chrono::milliseconds down_for(uint32_t failures) const;

    const ServerState& state(size_t index) const { return states_.at(index); }
    // nullptr for a server never seen failing or ramping (its state is made on first need).
    const ServerState* find_state(size_t index) const { return index < states_.size() ? &states_[index] : nullptr; }
    // Whether servers[index] is held down at `now` (false for a server never seen failing).
    bool is_down(size_t index, Clock::time_point now) const {
        return index < states_.size() && states_[index].failures > 0 && states_[index].down_until > now;
    }
    const Settings& settings() const { return settings_; }

private:
    void fit(size_t count) {
        if (states_.size() < count) states_.resize(count);
    }
    std::string name(const balance::Server& server) const;

    std::string rule_id_;
    Settings settings_;
    Logger* log_ = nullptr;
    std::vector<ServerState> states_;
};

}  // namespace ringlb::health
