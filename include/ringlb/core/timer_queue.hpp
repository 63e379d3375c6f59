#pragma once
// Deadlines for connect and idle timeouts and accept retries: a binary min-heap of armed timers,
// each known by a fixed key (its owner and kind) whose heap position is kept beside it, so a
// timer is armed, moved or cancelled in O(log n) and the heap holds only armed timers. A session
// has at most one connect, one idle and one closing timer and cancels them when its slot is released: the
// memory follows the live sessions, never the connection rate times the timeout.
//
// An idle timer is not moved on every byte: it fires at the deadline it was armed with, and its
// owner arms it again if activity has moved the real deadline on. That keeps the per-byte cost of
// an idle timeout at one timestamp store.
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

namespace ringlb::core {

using Clock = std::chrono::steady_clock;

// Throttle: a session with a byte rate waits for tokens before its next receive.
enum class TimerKind : uint8_t { Connect, Idle, AcceptRetry, Closing, Throttle };

// Which timer: a session slot's Connect, Idle, Closing or Throttle timer, a listener's AcceptRetry.
struct TimerKey {
    uint32_t owner = 0;
    TimerKind kind = TimerKind::Idle;
    bool operator==(const TimerKey&) const = default;
};

class TimerQueue {
public:
    // Arms the timer, or moves it to `deadline` when it is armed already.
    void arm(TimerKey key, Clock::time_point deadline);
    // Disarms the timer; nothing happens when it is not armed.
    void cancel(TimerKey key);
    bool armed(TimerKey key) const;
    // When the timer fires; nullopt when it is not armed.
    std::optional<Clock::time_point> deadline(TimerKey key) const;

    bool empty() const { return heap_.empty(); }
    size_t size() const { return heap_.size(); }  // armed timers
    std::optional<Clock::time_point> next_deadline() const;
    // Disarms and returns the earliest timer if it is due at `now`.
    std::optional<TimerKey> pop_due(Clock::time_point now);

private:
    struct Entry {
        Clock::time_point deadline;
        uint32_t key = 0;
    };
    static constexpr uint32_t kKinds = 5;
    static constexpr uint32_t kNotArmed = 0;

    static uint32_t encode(TimerKey key) { return key.owner * kKinds + static_cast<uint32_t>(key.kind); }
    static TimerKey decode(uint32_t key) { return {key / kKinds, static_cast<TimerKind>(key % kKinds)}; }
    // The key's heap index + 1, or kNotArmed.
    uint32_t slot_of(uint32_t key) const { return key < position_.size() ? position_[key] : kNotArmed; }
    void place(size_t index, const Entry& entry);
    void sift_up(size_t index);
    void sift_down(size_t index);
    void remove_at(size_t index);

    std::vector<Entry> heap_;
    std::vector<uint32_t> position_;  // by encoded key; grows with the highest owner ever armed
};

}  // namespace ringlb::core
