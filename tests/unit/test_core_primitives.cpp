// Session slots, completion tokens and per-IP limits: the engine-free core pieces (timers: test_timer_queue.cpp).
#include <doctest/doctest.h>

#include <set>

#include "ringlb/core/ip_limiter.hpp"
#include "ringlb/core/slab.hpp"
#include "ringlb/core/user_data.hpp"

using namespace ringlb;
using namespace ringlb::core;

TEST_CASE("token round-trips slot, generation and op through user_data") {
    const Token token{0xFFFFFFFEu, 0xABCDEFu, Op::ShutdownServer};
    CHECK(Token::unpack(token.pack()) == token);
    const Token accept{3, 0, Op::Accept};
    CHECK(accept.pack() != 0);  // 0 stays free for engine-internal requests
    CHECK(Token::unpack(accept.pack()).op == Op::Accept);
}

TEST_CASE("token keeps only 24 bits of generation") {
    const Token token{7, 0x1000001u, Op::RecvClient};
    CHECK(Token::unpack(token.pack()).generation == 1u);
    CHECK(Token::unpack(token.pack()).slot == 7u);
}

TEST_CASE("slab hands out distinct slots up to its capacity and reuses released ones") {
    Slab<int> slab(3);
    std::set<uint32_t> taken;
    for (int i = 0; i < 3; ++i) {
        auto slot = slab.acquire();
        REQUIRE(slot);
        taken.insert(*slot);
    }
    CHECK(taken.size() == 3);
    CHECK_FALSE(slab.acquire());
    CHECK(slab.in_use() == 3);
    const uint32_t victim = *taken.begin();
    const uint32_t old_generation = slab.generation(victim);
    slab.release(victim);
    CHECK(slab.in_use() == 2);
    CHECK_FALSE(slab.is_current(victim, old_generation));
    auto again = slab.acquire();
    REQUIRE(again);
    CHECK(*again == victim);
    CHECK(slab.is_current(victim, slab.generation(victim)));
}

TEST_CASE("slab grows past one block and resets reused slots") {
    Slab<int> slab(Slab<int>::kBlockSize * 2 + 5);
    std::vector<uint32_t> slots;
    while (auto slot = slab.acquire()) {
        slab[*slot] = 42;
        slots.push_back(*slot);
    }
    CHECK(slots.size() == Slab<int>::kBlockSize * 2 + 5);
    slab.release(slots[10]);
    auto again = slab.acquire();
    REQUIRE(again);
    CHECK(slab[*again] == 0);
}

TEST_CASE("slab for_each_in_use visits exactly the held slots") {
    Slab<int> slab(10);
    auto a = *slab.acquire();
    auto b = *slab.acquire();
    auto c = *slab.acquire();
    slab.release(b);
    std::set<uint32_t> seen;
    slab.for_each_in_use([&](uint32_t index, int&) { seen.insert(index); });
    CHECK(seen == std::set<uint32_t>{a, c});
}

TEST_CASE("ip limiter caps sessions per IP and forgets IPs with none left") {
    IpLimiter limiter(2);
    const auto a = net::IpKey{0, 1};
    const auto b = net::IpKey{0, 2};
    CHECK(limiter.try_acquire(a));
    CHECK(limiter.try_acquire(a));
    CHECK_FALSE(limiter.try_acquire(a));
    CHECK(limiter.try_acquire(b));
    CHECK(limiter.count(a) == 2);
    limiter.release(a);
    CHECK(limiter.try_acquire(a));
    limiter.release(a);
    limiter.release(a);
    limiter.release(b);
    CHECK(limiter.tracked_ips() == 0);
}

TEST_CASE("ip limiter with limit 0 never refuses and tracks nothing") {
    IpLimiter limiter(0);
    for (int i = 0; i < 1000; ++i) CHECK(limiter.try_acquire(net::IpKey{0, 9}));
    CHECK(limiter.tracked_ips() == 0);
}
