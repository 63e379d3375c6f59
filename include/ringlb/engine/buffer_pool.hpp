#pragma once
// The memory behind receive buffers: one anonymous mapping cut into equal buffers. Pages are
// touched only when a buffer is first used, so an unused pool costs address space, not RAM.
#include <cstddef>
#include <cstdint>

#include "ringlb/engine/engine.hpp"

namespace ringlb::engine {

class BufferMemory {
public:
    BufferMemory(uint32_t buffer_size, uint32_t buffer_count);
    ~BufferMemory();
    BufferMemory(const BufferMemory&) = delete;
    BufferMemory& operator=(const BufferMemory&) = delete;

    std::byte* data(uint16_t id) const { return base_ + static_cast<size_t>(id) * buffer_size_; }
    uint32_t buffer_size() const { return buffer_size_; }
    uint32_t buffer_count() const { return buffer_count_; }

private:
    std::byte* base_ = nullptr;
    uint32_t buffer_size_;
    uint32_t buffer_count_;
};

}  // namespace ringlb::engine
