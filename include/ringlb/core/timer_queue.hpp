#pragma once
// Deadlines for connect and idle timeouts and accept retries, O(log n) per event. Entries are
// never removed early: when one fires, its owner checks whether it is still current (slot
// generation and a tag) and whether the real deadline has moved on, and re-arms if so. That keeps
// the per-byte cost of an idle timeout at one timestamp store.
#include <chrono>
#include <cstdint>
#include <optional>
#include <queue>
#include <vector>

namespace ringlb::core {

using Clock = std::chrono::steady_clock;

enum class TimerKind : uint8_t { Connect, Idle, AcceptRetry, Closing };

struct TimerEntry {
    Clock::time_point deadline;
    uint32_t slot = 0;
    uint32_t generation = 0;
    uint32_t tag = 0;  // e.g. the connect attempt number, so an old attempt's timer is ignored
    TimerKind kind = TimerKind::Idle;
};

class TimerQueue {
public:
    void add(const TimerEntry& entry) { heap_.push(entry); }
    bool empty() const { return heap_.empty(); }
    size_t size() const { return heap_.size(); }
    std::optional<Clock::time_point> next_deadline() const {
        if (heap_.empty()) return std::nullopt;
        return heap_.top().deadline;
    }
    // Removes and returns the earliest entry if it is due at `now`.
    std::optional<TimerEntry> pop_due(Clock::time_point now) {
        if (heap_.empty() || heap_.top().deadline > now) return std::nullopt;
        TimerEntry entry = heap_.top();
        heap_.pop();
        return entry;
    }

private:
    struct Later {
        bool operator()(const TimerEntry& a, const TimerEntry& b) const { return a.deadline > b.deadline; }
    };
    std::priority_queue<TimerEntry, std::vector<TimerEntry>, Later> heap_;
};

}  // namespace ringlb::core
