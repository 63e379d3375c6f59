#pragma once
// Receive buffers: equal buffers cut from one anonymous mapping, handed out by a pool that grows
// on demand and gives back the pages of buffers left unused for a second.
//
// - Memory: the mapping reserves address space for the most buffers a worker may ever hold;
//   pages become resident only when a buffer is first written, and go back to the kernel
//   (madvise) once the buffer has been free for kIdleRelease. So an idle worker holds almost no
//   buffer memory, whatever its peak was.
// - The cap: every pool of the process draws on one BufferBudget (max_buffer_memory). A pool
//   takes budget in small batches, so the shared counter is touched once per batch, not once per
//   buffer.
// - Order: free buffers form a stack, so the most recently used (warm) buffer is reused first and
//   the cold ones at the bottom are the ones whose pages are given back.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "ringlb/engine/engine.hpp"

namespace ringlb::engine {

// The receive-buffer memory all workers of a process may hold at once. Thread-safe.
class BufferBudget {
public:
    explicit BufferBudget(uint64_t max_bytes) : max_bytes_(max_bytes) {}

    // Takes `bytes` of the budget if they fit under the cap.
    bool try_take(uint64_t bytes);
    void give(uint64_t bytes) { in_use_.fetch_sub(bytes, std::memory_order_relaxed); }
    void note_cap_reached() { cap_reached_.fetch_add(1, std::memory_order_relaxed); }

    uint64_t max_bytes() const { return max_bytes_; }
    uint64_t in_use_bytes() const { return in_use_.load(std::memory_order_relaxed); }
    uint64_t cap_reached() const { return cap_reached_.load(std::memory_order_relaxed); }
    // Above about three quarters of the cap: sessions whose sends are not moving get room for one
    // buffer per direction only, so the rest stays for sessions that hold none.
    bool under_pressure() const { return in_use_bytes() * 4 >= max_bytes_ * 3; }

private:
    const uint64_t max_bytes_;
    std::atomic<uint64_t> in_use_{0};
    std::atomic<uint64_t> cap_reached_{0};
};

class BufferPool {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr auto kIdleRelease = std::chrono::seconds(1);
    // Buffer ids are 16 bits: a worker holds at most this many buffers (2 GiB of 32 KiB buffers).
    static constexpr uint32_t kMaxBuffers = 65536;

    // `initial` ids are ready at once (no memory is touched for them); more are made on demand up
    // to `max_count`, each one only while `budget` allows.
    BufferPool(uint32_t buffer_size, uint32_t initial, uint32_t max_count, BufferBudget& budget);
    ~BufferPool();
    BufferPool(const BufferPool&) = delete;
    BufferPool& operator=(const BufferPool&) = delete;

    // A free buffer, or nullopt when this pool's maximum or the process's cap is reached (the
    // budget counts that).
    std::optional<uint16_t> take();
    void give(uint16_t id);

    std::byte* data(uint16_t id) const { return base_ + static_cast<size_t>(id) * buffer_size_; }
    uint32_t buffer_size() const { return buffer_size_; }
    uint32_t max_count() const { return max_count_; }
    uint32_t made() const { return made_; }           // ids that exist so far
    uint32_t in_use() const { return in_use_; }       // taken and not given back
    uint32_t resident_free() const { return resident_free_; }  // free, but their pages still held
    const BufferBudget& budget() const { return budget_; }

    // Once per loop round: `now` stamps the buffers given back until the next tick (one clock
    // read per round, not one per buffer), and the pages of buffers free since kIdleRelease
    // before it go back to the kernel. Cheap when there is nothing to give back.
    void tick(Clock::time_point now);

private:
    struct Free {
        uint16_t id;
        Clock::time_point since;
    };
    bool reserve_budget();

    std::byte* base_ = nullptr;
    size_t mapped_bytes_ = 0;
    const uint32_t buffer_size_;
    const uint32_t max_count_;
    BufferBudget& budget_;
    uint32_t made_ = 0;
    uint32_t in_use_ = 0;
    uint32_t credit_ = 0;        // budget taken for buffers not in use yet
    uint32_t credit_batch_ = 1;  // buffers of budget taken or given back at once
    std::vector<Free> free_;          // a stack: back() is the warmest
    std::vector<bool> resident_;      // by id: its pages may be held
    uint32_t resident_free_ = 0;      // free buffers whose pages may be held
    size_t released_depth_ = 0;       // free_[0, released_depth_) hold no pages
    Clock::time_point now_ = Clock::now();
};

}  // namespace ringlb::engine
