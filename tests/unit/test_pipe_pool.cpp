// The pipe pool of the splice path on real loopback sockets and pipes: a pipe is taken for bytes
// that arrived, reused once given back empty, closed when given back with bytes, and a socket
// with nothing to read neither makes a pipe nor counts a fallback.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>

#include <string>

#include "forwarder_harness.hpp"
#include "ringlb/engine/pipe_pool.hpp"

using namespace ringlb;
using engine::PipeFallback;
using engine::PipePool;
using engine::SpliceIn;
using test::LoopbackPair;

namespace {

// A loopback connection whose accepted end is non-blocking, as the engines' sockets are.
struct Connection : LoopbackPair {
    net::UniqueFd server{accepted};
    Connection() { net::set_nonblocking(server.get(), true); }
    // The client sends `bytes`; returns once they can be read at the server end.
    void arrive(const std::string& bytes) {
        REQUIRE(::send(client.get(), bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
        pollfd ready{server.get(), POLLIN, 0};
        REQUIRE(::poll(&ready, 1, 2000) == 1);
    }
};

uint64_t fallbacks(const PipePool& pool, PipeFallback cause) {
    return pool.stats().fallbacks[static_cast<size_t>(cause)];
}

uint64_t all_fallbacks(const PipePool& pool) {
    uint64_t sum = 0;
    for (const uint64_t n : pool.stats().fallbacks) sum += n;
    return sum;
}

}  // namespace

TEST_CASE("pipe pool: a socket with nothing to read makes no pipe and counts no fallback") {
    PipePool pool(4, 64 * 1024);
    Connection idle;
    for (int i = 0; i < 3; ++i) CHECK(pool.fill_from(idle.server.get(), 65536).outcome == SpliceIn::Outcome::WouldBlock);
    CHECK(pool.stats().free == 0);
    CHECK(pool.stats().in_use == 0);
    CHECK(all_fallbacks(pool) == 0);
}

TEST_CASE("pipe pool: bytes take a pipe; given back empty it is reused, given back full it is closed") {
    PipePool pool(1, 64 * 1024);
    Connection first, second;
    first.arrive("hello");
    const SpliceIn in = pool.fill_from(first.server.get(), 65536);
    REQUIRE(in.outcome == SpliceIn::Outcome::Moved);
    CHECK(in.result == 5);
    CHECK(pool.stats().in_use == 1);
    CHECK(pool.stats().taken == 1);

    // The one pipe is in use: a socket without bytes waits, uncounted; one with bytes finds none.
    CHECK(pool.fill_from(second.server.get(), 65536).outcome == SpliceIn::Outcome::WouldBlock);
    CHECK(all_fallbacks(pool) == 0);
    second.arrive("world");
    CHECK(pool.fill_from(second.server.get(), 65536).outcome == SpliceIn::Outcome::NoPipe);
    CHECK(fallbacks(pool, PipeFallback::PoolEmpty) == 1);

    // Sent on whole and given back empty: the same pipe serves the next bytes.
    CHECK(pool.drain_to(in.pipe, first.server.get(), 5) == 5);
    pool.give(in.pipe, true);
    CHECK(pool.stats().free == 1);
    const SpliceIn again = pool.fill_from(second.server.get(), 65536);
    REQUIRE(again.outcome == SpliceIn::Outcome::Moved);
    CHECK(again.pipe == in.pipe);
    CHECK(pool.stats().taken == 2);

    // Given back with its bytes still in: closed, not reused; the next bytes get a new one.
    pool.give(again.pipe, false);
    CHECK(pool.stats().free == 0);
    CHECK(pool.stats().in_use == 0);
    first.arrive("more");
    const SpliceIn fresh = pool.fill_from(first.server.get(), 65536);
    REQUIRE(fresh.outcome == SpliceIn::Outcome::Moved);
    CHECK(fresh.result == 4);
    char echoed[5] = {};
    CHECK(::recv(first.client.get(), echoed, 5, MSG_DONTWAIT) == 5);
    CHECK(std::string(echoed, 5) == "hello");
}

TEST_CASE("pipe pool: the end of the stream is seen even with every pipe in use") {
    PipePool pool(1, 64 * 1024);
    Connection busy, ending;
    busy.arrive("x");
    REQUIRE(pool.fill_from(busy.server.get(), 65536).outcome == SpliceIn::Outcome::Moved);
    REQUIRE(::shutdown(ending.client.get(), SHUT_WR) == 0);
    pollfd ready{ending.server.get(), POLLIN, 0};
    REQUIRE(::poll(&ready, 1, 2000) == 1);
    // No pipe to be had: the caller is sent to recv(), which then sees the end.
    CHECK(pool.fill_from(ending.server.get(), 65536).outcome == SpliceIn::Outcome::NoPipe);
}
