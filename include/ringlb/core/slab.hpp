#pragma once
// Session slots: a growable pool with a free list. Acquire and release are O(1); slots never
// move, so an index stays valid for as long as the slot is held. Storage grows in blocks up to
// a fixed capacity, so a forwarder sized for 100,000 sessions does not pay for them up front.
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "ringlb/core/user_data.hpp"

namespace ringlb::core {

template <typename T>
class Slab {
public:
    static constexpr uint32_t kBlockSize = 1024;

    explicit Slab(uint32_t capacity) : capacity_(capacity) {}

    uint32_t capacity() const { return capacity_; }
    uint32_t in_use() const { return in_use_; }

    // A fresh default-constructed T in a free slot, or nullopt when all `capacity` are taken.
    std::optional<uint32_t> acquire() {
        if (free_.empty() && !grow()) return std::nullopt;
        const uint32_t index = free_.back();
        free_.pop_back();
        slot(index) = T{};
        ++in_use_;
        return index;
    }

    void release(uint32_t index) {
        generations_[index] = (generations_[index] + 1) & Token::kGenerationMask;
        slot(index) = T{};  // drops whatever the slot owned now, not at its next use
        free_.push_back(index);
        --in_use_;
    }

    T& operator[](uint32_t index) { return slot(index); }
    uint32_t generation(uint32_t index) const { return generations_[index]; }
    bool is_current(uint32_t index, uint32_t generation) const {
        return index < generations_.size() && generations_[index] == generation;
    }

    // Calls f(index, T&) for every slot in use. Not for hot paths: it walks every allocated slot.
    template <typename F>
    void for_each_in_use(F&& f) {
        for (uint32_t index : in_use_indices()) f(index, slot(index));
    }
    template <typename F>
    void for_each_in_use(F&& f) const {
        for (uint32_t index : in_use_indices()) f(index, slot(index));
    }

private:
    T& slot(uint32_t index) { return blocks_[index / kBlockSize][index % kBlockSize]; }
    const T& slot(uint32_t index) const { return blocks_[index / kBlockSize][index % kBlockSize]; }

    std::vector<uint32_t> in_use_indices() const {
        std::vector<bool> is_free(generations_.size());
        for (uint32_t index : free_) is_free[index] = true;
        std::vector<uint32_t> used;
        for (uint32_t index = 0; index < generations_.size(); ++index)
            if (!is_free[index]) used.push_back(index);
        return used;
    }

    bool grow() {
        const uint32_t allocated = static_cast<uint32_t>(generations_.size());
        if (allocated >= capacity_) return false;
        const uint32_t count = std::min(kBlockSize, capacity_ - allocated);
        blocks_.push_back(std::make_unique<T[]>(kBlockSize));
        generations_.resize(allocated + count, 0);
        // Hand out low indices first: they are the warm ones.
        for (uint32_t i = count; i > 0; --i) free_.push_back(allocated + i - 1);
        return true;
    }

    uint32_t capacity_;
    uint32_t in_use_ = 0;
    std::vector<std::unique_ptr<T[]>> blocks_;
    std::vector<uint32_t> generations_;
    std::vector<uint32_t> free_;
};

}  // namespace ringlb::core
