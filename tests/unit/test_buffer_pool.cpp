// The receive-buffer pool: it grows on demand up to its maximum and the process's cap, hands out
// the warmest buffer first, gives back the pages of buffers idle for a second, and tells when the
// process is under pressure.
#include <doctest/doctest.h>

#include <optional>
#include <set>
#include <vector>

#include "ringlb/engine/buffer_pool.hpp"

using ringlb::engine::BufferBudget;
using ringlb::engine::BufferPool;

namespace {

constexpr uint32_t kSize = 4096;

std::vector<uint16_t> take_all(BufferPool& pool) {
    std::vector<uint16_t> taken;
    while (auto id = pool.take()) taken.push_back(*id);
    return taken;
}

}  // namespace

TEST_CASE("a pool grows past its starting size on demand, up to its maximum") {
    BufferBudget budget(uint64_t{1} << 30);
    BufferPool pool(kSize, 4, 100, budget);
    CHECK(pool.made() == 4);
    const auto taken = take_all(pool);
    CHECK(taken.size() == 100);
    CHECK(pool.made() == 100);
    CHECK(std::set<uint16_t>(taken.begin(), taken.end()).size() == 100);
    CHECK(budget.cap_reached() == 1);
    for (uint16_t id : taken) pool.give(id);
    CHECK(pool.in_use() == 0);
}

TEST_CASE("pools share the process's cap; at the cap a pool refuses and it is counted") {
    BufferBudget budget(uint64_t{10} * kSize);
    BufferPool a(kSize, 2, 1000, budget);
    BufferPool b(kSize, 2, 1000, budget);
    std::vector<uint16_t> from_a;
    for (int i = 0; i < 6; ++i) from_a.push_back(*a.take());
    const auto from_b = take_all(b);
    CHECK(from_b.size() == 4);
    CHECK_FALSE(a.take().has_value());
    CHECK(budget.cap_reached() >= 2);
    CHECK(budget.in_use_bytes() <= budget.max_bytes());
    // Given back, a buffer can be taken by the other pool (its budget follows in batches).
    for (uint16_t id : from_a) a.give(id);
    for (uint16_t id : from_b) b.give(id);
    CHECK(take_all(b).size() >= 4);
}

TEST_CASE("the warmest buffer is reused first") {
    BufferBudget budget(uint64_t{1} << 30);
    BufferPool pool(kSize, 8, 8, budget);
    const uint16_t first = *pool.take();
    const uint16_t second = *pool.take();
    pool.give(first);
    pool.give(second);
    CHECK(*pool.take() == second);
}

TEST_CASE("buffers free for a second give their pages back; busy ones keep them") {
    BufferBudget budget(uint64_t{1} << 30);
    BufferPool pool(kSize, 8, 8, budget);
    auto taken = take_all(pool);
    for (uint16_t id : taken) pool.data(id)[0] = std::byte{1};  // resident now
    const auto start = BufferPool::Clock::now();
    pool.tick(start);
    for (size_t i = 0; i < 6; ++i) pool.give(taken[i]);
    CHECK(pool.resident_free() == 6);
    pool.tick(start + std::chrono::milliseconds(500));
    CHECK(pool.resident_free() == 6);  // not idle long enough
    pool.give(taken[6]);               // freed at +500 ms
    pool.tick(start + std::chrono::milliseconds(1200));
    CHECK(pool.resident_free() == 1);  // the six freed at the start went back; the seventh did not yet
    // A released buffer is usable again (a fresh zero page).
    const uint16_t again = *pool.take();
    pool.data(again)[0] = std::byte{2};
    CHECK(pool.data(again)[0] == std::byte{2});
    pool.give(again);
    pool.give(taken[7]);
}

TEST_CASE("pressure starts at three quarters of the cap") {
    BufferBudget budget(4 * kSize);
    CHECK_FALSE(budget.under_pressure());
    REQUIRE(budget.try_take(2 * kSize));
    CHECK_FALSE(budget.under_pressure());
    REQUIRE(budget.try_take(kSize));
    CHECK(budget.under_pressure());
    CHECK_FALSE(budget.try_take(2 * kSize));
    budget.give(3 * kSize);
    CHECK(budget.in_use_bytes() == 0);
}
