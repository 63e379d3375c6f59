#include "ringlb/core/timer_queue.hpp"

namespace ringlb::core {

void TimerQueue::arm(TimerKey key, Clock::time_point deadline) {
    const uint32_t code = encode(key);
    if (const uint32_t slot = slot_of(code); slot != kNotArmed) {
        const size_t index = slot - 1;
        const bool earlier = deadline < heap_[index].deadline;
        heap_[index].deadline = deadline;
        if (earlier)
            sift_up(index);
        else
            sift_down(index);
        return;
    }
    if (code >= position_.size()) position_.resize(code + 1, kNotArmed);
    heap_.push_back({});
    place(heap_.size() - 1, {deadline, code});
    sift_up(heap_.size() - 1);
}

void TimerQueue::cancel(TimerKey key) {
    if (const uint32_t slot = slot_of(encode(key)); slot != kNotArmed) remove_at(slot - 1);
}

bool TimerQueue::armed(TimerKey key) const { return slot_of(encode(key)) != kNotArmed; }

std::optional<Clock::time_point> TimerQueue::deadline(TimerKey key) const {
    const uint32_t slot = slot_of(encode(key));
    if (slot == kNotArmed) return std::nullopt;
    return heap_[slot - 1].deadline;
}

std::optional<Clock::time_point> TimerQueue::next_deadline() const {
    if (heap_.empty()) return std::nullopt;
    return heap_.front().deadline;
}

std::optional<TimerKey> TimerQueue::pop_due(Clock::time_point now) {
    if (heap_.empty() || heap_.front().deadline > now) return std::nullopt;
    const uint32_t code = heap_.front().key;
    remove_at(0);
    return decode(code);
}

void TimerQueue::place(size_t index, const Entry& entry) {
    heap_[index] = entry;
    position_[entry.key] = static_cast<uint32_t>(index + 1);
}

void TimerQueue::sift_up(size_t index) {
    const Entry entry = heap_[index];
    while (index > 0) {
        const size_t parent = (index - 1) / 2;
        if (!(entry.deadline < heap_[parent].deadline)) break;
        place(index, heap_[parent]);
        index = parent;
    }
    place(index, entry);
}

void TimerQueue::sift_down(size_t index) {
    const Entry entry = heap_[index];
    const size_t count = heap_.size();
    for (;;) {
        size_t child = 2 * index + 1;
        if (child >= count) break;
        if (child + 1 < count && heap_[child + 1].deadline < heap_[child].deadline) ++child;
        if (!(heap_[child].deadline < entry.deadline)) break;
        place(index, heap_[child]);
        index = child;
    }
    place(index, entry);
}

// The last entry takes the removed one's place and moves up or down from there.
void TimerQueue::remove_at(size_t index) {
    position_[heap_[index].key] = kNotArmed;
    const Entry last = heap_.back();
    heap_.pop_back();
    if (index == heap_.size()) return;  // it was the last one
    const bool earlier = index > 0 && last.deadline < heap_[(index - 1) / 2].deadline;
    place(index, last);
    if (earlier)
        sift_up(index);
    else
        sift_down(index);
}

}  // namespace ringlb::core
