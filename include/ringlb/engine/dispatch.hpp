#pragma once
// Shares one engine among independent components (the control thread's admin port, metrics
// endpoint and health checker): each component gets a channel number, puts it in the top byte
// of the user_data of every request it makes, and receives exactly the completions carrying it.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "ringlb/engine/engine.hpp"

namespace ringlb::engine {

class Component {
public:
    using Clock = std::chrono::steady_clock;
    virtual ~Component() = default;
    // A completion of one of this component's requests; value_of(completion.user_data) is what
    // the component put in with Dispatcher::tag().
    virtual void on_completion(const Completion& completion) = 0;
    // Called after every round of completions; returns when it next wants to be called (nullopt:
    // only after completions). Timeouts and periodic work go here.
    virtual std::optional<Clock::time_point> on_tick(Clock::time_point /*now*/) { return std::nullopt; }
};

class Dispatcher final : public CompletionHandler {
public:
    using Clock = Component::Clock;
    static constexpr unsigned kMaxComponents = 255;

    explicit Dispatcher(Engine& engine) : engine_(engine) {}

    Engine& engine() { return engine_; }
    // Registers `component` (which must outlive the dispatcher's use) and returns its channel.
    uint8_t add(Component& component);
    // Unregisters a component (from its destructor): later completions on its channel are
    // dropped (their buffers released) and it is ticked no more.
    void remove(uint8_t channel) { components_[channel] = nullptr; }

    static UserData tag(uint8_t channel, uint64_t value) {
        return (uint64_t{channel} << 56) | (value & kValueMask);
    }
    static uint64_t value_of(UserData user_data) { return user_data & kValueMask; }
    static uint8_t channel_of(UserData user_data) { return static_cast<uint8_t>(user_data >> 56); }

    // One round: waits for completions up to `max_wait` (less when a component's tick is due),
    // routes them, then ticks every component.
    void run_once(std::chrono::milliseconds max_wait);
    void run(const std::atomic<bool>& stop, std::chrono::milliseconds max_wait = std::chrono::milliseconds(250));

    void on_completion(const Completion& completion) override;

private:
    static constexpr uint64_t kValueMask = (uint64_t{1} << 56) - 1;

    Engine& engine_;
    std::array<Component*, kMaxComponents + 1> components_{};  // [0] unused: 0 is no channel
    unsigned count_ = 0;
    std::optional<Clock::time_point> next_tick_;
};

}  // namespace ringlb::engine
