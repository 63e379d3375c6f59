#pragma once
// One log line per interval for an event that may come thousands of times a second: the first
// event is reported at once, later ones are counted and reported together by the first event
// after the interval has passed.
#include <chrono>
#include <cstdint>

namespace ringlb {

class LogThrottle {
public:
    using Clock = std::chrono::steady_clock;

    explicit LogThrottle(Clock::duration interval) : interval_(interval) {}

    // Notes one event at `now`. Returns how many events the line due now reports (this one
    // included), or 0 when no line is due.
    uint64_t note(Clock::time_point now) {
        ++unreported_;
        if (reported_once_ && now - last_report_ < interval_) return 0;
        reported_once_ = true;
        last_report_ = now;
        const uint64_t count = unreported_;
        unreported_ = 0;
        return count;
    }

private:
    Clock::duration interval_;
    Clock::time_point last_report_{};
    bool reported_once_ = false;
    uint64_t unreported_ = 0;
};

}  // namespace ringlb
