#include "ringlb/engine/dispatch.hpp"

#include <algorithm>
#include <stdexcept>

namespace ringlb::engine {

uint8_t Dispatcher::add(Component& component) {
    if (count_ == kMaxComponents) throw std::logic_error("dispatcher: too many components");
    components_[++count_] = &component;
    return static_cast<uint8_t>(count_);
}

void Dispatcher::on_completion(const Completion& completion) {
    Component* component = components_[channel_of(completion.user_data)];
    if (component != nullptr) {
        component->on_completion(completion);
    } else if (completion.has_buffer) {
        engine_.release_buffer(completion.buffer_id);  // nobody to hand it to: never leak it
    }
}

void Dispatcher::run_once(std::chrono::milliseconds max_wait) {
    auto wait = max_wait;
    if (next_tick_) {
        const auto until = std::chrono::ceil<std::chrono::milliseconds>(*next_tick_ - Clock::now());
        wait = std::clamp(until, std::chrono::milliseconds(0), max_wait);
    }
    engine_.poll(wait, *this);
    const auto now = Clock::now();
    next_tick_.reset();
    for (unsigned i = 1; i <= count_; ++i) {
        if (components_[i] == nullptr) continue;
        if (auto due = components_[i]->on_tick(now); due && (!next_tick_ || *due < *next_tick_)) next_tick_ = due;
    }
}

void Dispatcher::run(const std::atomic<bool>& stop, std::chrono::milliseconds max_wait) {
    while (!stop.load(std::memory_order_relaxed)) run_once(max_wait);
}

}  // namespace ringlb::engine
