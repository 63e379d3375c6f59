// The runtime and the service manager: the STATUS= line and the watchdog (see service_notifier.hpp).
#include <algorithm>

#include "ringlb/app/runtime.hpp"

namespace ringlb::app {

namespace {

using Clock = std::chrono::steady_clock;

// How often the status line is refreshed (sent only when it changed).
constexpr auto kStatusInterval = std::chrono::seconds(5);

}  // namespace

std::string Runtime::service_status() const {
    uint64_t sessions = 0;
    for (const auto& worker : workers_) sessions += worker->active_sessions();
    return std::to_string(sessions) + " active session" + (sessions == 1 ? "" : "s") + ", " +
           std::to_string(config_.rules.size()) + " rule" + (config_.rules.size() == 1 ? "" : "s");
}

// With a watchdog, loops turn at least four times per interval: a worker is judged by whether its
// counter moved within one interval, and the control thread must look often enough to tell.
std::chrono::milliseconds Runtime::loop_round(std::chrono::milliseconds normal) const {
    const auto interval = notifier_.watchdog_interval();
    if (!interval) return normal;
    return std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(*interval / 4),
                      std::chrono::milliseconds(1), normal);
}

void Runtime::service_tick() {
    if (!notifier_.enabled()) return;
    const auto now = Clock::now();
    if (now >= next_status_) {
        notifier_.status(service_status());
        next_status_ = now + kStatusInterval;
    }
    feed_watchdog(now);
}

// WATCHDOG=1 every half interval, but only while every worker's loop turns: a stuck worker stops
// the pings, and the service manager restarts ringlb once the interval passes without one.
void Runtime::feed_watchdog(Clock::time_point now) {
    if (!turn_watch_) return;
    std::vector<uint64_t> turns;
    turns.reserve(workers_.size());
    for (const auto& worker : workers_) turns.push_back(worker->turns());
    const std::optional<size_t> stuck = turn_watch_->stuck(turns, now);
    if (stuck != stuck_worker_) {
        if (stuck) {
            const auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(turn_watch_->idle_for(*stuck, now));
            log_.error("watchdog: worker ", *stuck, " has not turned its loop for ", idle.count(),
                       " ms: no more pings to the service manager while it is stuck");
        } else {
            log_.info("watchdog: worker ", *stuck_worker_, " turns again: pings resume");
        }
        stuck_worker_ = stuck;
    }
    if (stuck || now < next_ping_) return;
    notifier_.watchdog();
    next_ping_ = now + std::chrono::duration_cast<Clock::duration>(*notifier_.watchdog_interval() / 2);
}

}  // namespace ringlb::app
