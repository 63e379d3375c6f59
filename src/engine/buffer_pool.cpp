#include "ringlb/engine/buffer_pool.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <string>

#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

namespace {

// Budget moves between a pool and the process in batches of up to this many buffers, and of no
// more than a 64th of the cap: a small cap is not held as credit by one worker while another
// has none.
constexpr uint32_t kMaxCreditBatch = 64;

}  // namespace

bool BufferBudget::try_take(uint64_t bytes) {
    uint64_t current = in_use_.load(std::memory_order_relaxed);
    do {
        if (current + bytes > max_bytes_) return false;
    } while (!in_use_.compare_exchange_weak(current, current + bytes, std::memory_order_relaxed));
    return true;
}

BufferPool::BufferPool(uint32_t buffer_size, uint32_t initial, uint32_t max_count, BufferBudget& budget)
    : buffer_size_(buffer_size), max_count_(std::min(max_count, kMaxBuffers)), budget_(budget) {
    if (buffer_size == 0 || buffer_size > kMaxReceiveBuffer)
        throw std::invalid_argument("receive buffers of " + std::to_string(buffer_size) + " bytes: 1 to " +
                                    std::to_string(kMaxReceiveBuffer) + " allowed");
    if (max_count_ == 0) throw std::invalid_argument("a receive buffer pool of no buffers");
    mapped_bytes_ = static_cast<size_t>(buffer_size) * max_count_;
    void* memory =
        ::mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED)
        throw net::SystemError("mmap of " + std::to_string(mapped_bytes_) + " bytes of receive buffers", errno);
    base_ = static_cast<std::byte*>(memory);
    credit_batch_ = static_cast<uint32_t>(
        std::clamp<uint64_t>(budget.max_bytes() / buffer_size / 64, 1, kMaxCreditBatch));
    resident_.resize(max_count_, false);
    made_ = std::min(initial, max_count_);
    free_.reserve(made_);
    for (uint32_t id = made_; id > 0; --id) free_.push_back({static_cast<uint16_t>(id - 1), Clock::time_point{}});
    released_depth_ = free_.size();  // none of them was ever touched
}

BufferPool::~BufferPool() {
    budget_.give(static_cast<uint64_t>(in_use_ + credit_) * buffer_size_);
    ::munmap(base_, mapped_bytes_);
}

bool BufferPool::reserve_budget() {
    const uint32_t batch = std::max<uint32_t>(1, std::min(credit_batch_, max_count_ - in_use_));
    if (budget_.try_take(static_cast<uint64_t>(batch) * buffer_size_)) {
        credit_ += batch;
        return true;
    }
    // Near the cap a whole batch may not fit where one buffer still does.
    if (batch > 1 && budget_.try_take(buffer_size_)) {
        credit_ += 1;
        return true;
    }
    return false;
}

std::optional<uint16_t> BufferPool::take() {
    if (credit_ == 0 && !reserve_budget()) {
        budget_.note_cap_reached();
        return std::nullopt;
    }
    uint16_t id;
    if (!free_.empty()) {
        id = free_.back().id;
        free_.pop_back();
        released_depth_ = std::min(released_depth_, free_.size());
        if (resident_[id]) --resident_free_;
    } else if (made_ < max_count_) {
        id = static_cast<uint16_t>(made_++);
    } else {
        budget_.note_cap_reached();
        return std::nullopt;
    }
    resident_[id] = true;  // it is about to be written
    --credit_;
    ++in_use_;
    return id;
}

void BufferPool::give(uint16_t id) {
    free_.push_back({id, now_});
    ++resident_free_;
    --in_use_;
    ++credit_;
    if (credit_ >= 2 * credit_batch_) {  // keep a batch; the rest goes back to the process
        credit_ -= credit_batch_;
        budget_.give(static_cast<uint64_t>(credit_batch_) * buffer_size_);
    }
}

void BufferPool::tick(Clock::time_point now) {
    now_ = now;
    if (resident_free_ == 0) return;
    // The stack's bottom holds the buffers freed longest ago; stop at the first one freed too recently.
    while (released_depth_ < free_.size() && now - free_[released_depth_].since >= kIdleRelease) {
        const uint16_t id = free_[released_depth_].id;
        if (resident_[id]) {
            ::madvise(data(id), buffer_size_, MADV_DONTNEED);
            resident_[id] = false;
            --resident_free_;
        }
        ++released_depth_;
    }
}

}  // namespace ringlb::engine
