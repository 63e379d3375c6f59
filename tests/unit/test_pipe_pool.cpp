// The splice path's pipe pool: bytes move socket -> pipe -> socket unchanged, a pipe is held only
// while it holds bytes (a socket with nothing to read makes none), reused once given back empty
// and closed when given back with bytes, the pool never makes more than max_pipes, and every case
// in which no pipe can be had is counted by its cause.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "forwarder_harness.hpp"
#include "ringlb/engine/pipe_pool.hpp"
#include "ringlb/net/socket.hpp"

using ringlb::engine::PipeFallback;
using ringlb::engine::PipePool;
using ringlb::engine::SpliceIn;
using ringlb::net::UniqueFd;
using ringlb::test::LoopbackPair;

namespace {

struct SocketPair {
    UniqueFd a;
    UniqueFd b;
};

SocketPair nonblocking_pair() {
    int ends[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0);
    return {UniqueFd(ends[0]), UniqueFd(ends[1])};
}

void write_all(int fd, const std::string& bytes) {
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
}

std::string read_some(int fd, size_t most) {
    std::string bytes(most, '\0');
    const ssize_t n = ::read(fd, bytes.data(), most);
    REQUIRE(n >= 0);
    bytes.resize(static_cast<size_t>(n));
    return bytes;
}

uint64_t fallbacks(const PipePool& pool, PipeFallback cause) {
    return pool.stats().fallbacks[static_cast<size_t>(cause)];
}

}  // namespace

TEST_CASE("bytes spliced from one socket into a pipe and out to another arrive unchanged; the empty pipe is reused") {
    PipePool pool(4, 64 * 1024);
    SocketPair source = nonblocking_pair();
    SocketPair destination = nonblocking_pair();
    const std::string message = "hello through a pipe";
    write_all(source.b.get(), message);

    const SpliceIn in = pool.fill_from(source.a.get(), 64 * 1024);
    REQUIRE(in.outcome == SpliceIn::Outcome::Moved);
    CHECK(in.result == static_cast<int32_t>(message.size()));
    CHECK(pool.stats().in_use == 1);
    CHECK(pool.drain_to(in.pipe, destination.a.get(), static_cast<uint32_t>(in.result)) == in.result);
    CHECK(read_some(destination.b.get(), 100) == message);
    pool.give(in.pipe, true);
    CHECK(pool.stats().in_use == 0);
    CHECK(pool.stats().free == 1);
    CHECK(pool.stats().taken == 1);

    write_all(source.b.get(), "again");
    const SpliceIn second = pool.fill_from(source.a.get(), 64 * 1024);
    REQUIRE(second.outcome == SpliceIn::Outcome::Moved);
    CHECK(second.pipe == in.pipe);  // the same pipe, not a new one
    CHECK(pool.stats().free == 0);
}

TEST_CASE("a socket with nothing to read holds no pipe; a closed one reports the end of the stream") {
    PipePool pool(4, 64 * 1024);
    SocketPair pair = nonblocking_pair();
    CHECK(pool.fill_from(pair.a.get(), 1024).outcome == SpliceIn::Outcome::WouldBlock);
    CHECK(pool.stats().in_use == 0);
    pair.b.reset();
    const SpliceIn end = pool.fill_from(pair.a.get(), 1024);
    CHECK(end.outcome == SpliceIn::Outcome::Done);
    CHECK(end.result == 0);
    CHECK(pool.stats().in_use == 0);
}

TEST_CASE("at most max_pipes pipes: beyond them no pipe is had and it is counted as pool_empty") {
    PipePool pool(2, 64 * 1024);
    std::vector<SocketPair> pairs;
    std::vector<uint16_t> held;
    for (int i = 0; i < 3; ++i) {
        pairs.push_back(nonblocking_pair());
        write_all(pairs.back().b.get(), "x");
    }
    for (int i = 0; i < 2; ++i) {
        const SpliceIn in = pool.fill_from(pairs[static_cast<size_t>(i)].a.get(), 1024);
        REQUIRE(in.outcome == SpliceIn::Outcome::Moved);
        held.push_back(in.pipe);
    }
    CHECK(pool.fill_from(pairs[2].a.get(), 1024).outcome == SpliceIn::Outcome::NoPipe);
    CHECK(fallbacks(pool, PipeFallback::PoolEmpty) == 1);
    CHECK(read_some(pairs[2].a.get(), 10) == "x");  // the byte is still in the socket, for a copy

    // A pipe given back with bytes in it is closed, which makes room for a new one.
    pool.give(held[0], false);
    CHECK(pool.stats().in_use == 1);
    CHECK(pool.stats().free == 0);
    write_all(pairs[2].b.get(), "y");
    CHECK(pool.fill_from(pairs[2].a.get(), 1024).outcome == SpliceIn::Outcome::Moved);
}

TEST_CASE("a pipe that would take descriptors above the ceiling is not kept, and is counted as refused") {
    PipePool pool(4, 64 * 1024, 3);  // every new descriptor is numbered 3 or above
    SocketPair pair = nonblocking_pair();
    write_all(pair.b.get(), "z");
    CHECK(pool.fill_from(pair.a.get(), 1024).outcome == SpliceIn::Outcome::NoPipe);
    CHECK(fallbacks(pool, PipeFallback::Refused) == 1);
    CHECK(pool.stats().in_use + pool.stats().free == 0);
}

TEST_CASE("pipes are made with room for the bytes in flight asked for, beyond the kernel's 64 KiB default") {
    PipePool pool(1, 256 * 1024);
    SocketPair pair = nonblocking_pair();
    int size = 256 * 1024;
    REQUIRE(::setsockopt(pair.b.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size) == 0);
    const std::string bulk(150 * 1024, 'b');
    size_t written = 0;
    while (written < bulk.size()) {
        const ssize_t n = ::write(pair.b.get(), bulk.data() + written, bulk.size() - written);
        if (n <= 0) break;
        written += static_cast<size_t>(n);
    }
    REQUIRE(written > 100 * 1024);
    const SpliceIn in = pool.fill_from(pair.a.get(), 256 * 1024);
    REQUIRE(in.outcome == SpliceIn::Outcome::Moved);
    CHECK(in.result > 64 * 1024);
}

namespace {

// A loopback connection whose accepted end is non-blocking, as the engines' sockets are.
struct Connection : LoopbackPair {
    UniqueFd server{accepted};
    Connection() { ringlb::net::set_nonblocking(server.get(), true); }
    // The client sends `bytes`; returns once they can be read at the server end.
    void arrive(const std::string& bytes) {
        REQUIRE(::send(client.get(), bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
        pollfd ready{server.get(), POLLIN, 0};
        REQUIRE(::poll(&ready, 1, 2000) == 1);
    }
};

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

TEST_CASE("pipe pool: a trim closes the free pipes that no splice needed since the last trim; trim(true) every free one") {
    PipePool pool(3, 64 * 1024);
    std::vector<Connection> connections(3);
    // Moves `bytes` through a pipe of the pool and gives it back empty.
    const auto pass_through = [&pool](Connection& connection, const std::string& bytes) {
        connection.arrive(bytes);
        const SpliceIn in = pool.fill_from(connection.server.get(), 65536);
        REQUIRE(in.outcome == SpliceIn::Outcome::Moved);
        return in.pipe;
    };
    std::vector<uint16_t> held;
    for (Connection& connection : connections) held.push_back(pass_through(connection, "abc"));
    for (uint16_t pipe : held) {
        CHECK(pool.drain_to(pipe, connections[0].server.get(), 3) == 3);
        pool.give(pipe, true);
    }
    // All three were in use since the pool was made: none is closed.
    CHECK(pool.trim(false) == 0);
    CHECK(pool.stats().free == 3);

    // One is needed again: the two that stayed free go, the one used last stays.
    const uint16_t reused = pass_through(connections[1], "d");
    CHECK(pool.drain_to(reused, connections[1].server.get(), 1) == 1);
    pool.give(reused, true);
    CHECK(pool.trim(false) == 2);
    CHECK(pool.stats().free == 1);
    CHECK(pool.stats().in_use == 0);

    // trim(true) closes whatever is free; a closed pipe's place serves the next bytes.
    CHECK(pool.trim(true) == 1);
    CHECK(pool.stats().free == 0);
    const uint16_t fresh = pass_through(connections[2], "e");
    CHECK(pool.stats().in_use == 1);
    CHECK(pool.drain_to(fresh, connections[2].server.get(), 1) == 1);
    pool.give(fresh, true);
}

TEST_CASE("pipe pool: no pipe is kept within the last sixteenth of descriptors below the ceiling: those are for sessions") {
    constexpr int kCeiling = 64;  // pipes stop at 64 - 64 / 16 = 60
    Connection connection;
    connection.arrive("x");
    std::vector<UniqueFd> filler;  // every number up to 59: a new pipe gets 60 and 61
    while (true) {
        UniqueFd next(::dup(0));
        REQUIRE(next);
        if (next.get() >= 60) break;
        filler.push_back(std::move(next));
    }
    REQUIRE(filler.size() >= 3);
    PipePool pool(4, 64 * 1024, kCeiling);
    CHECK(pool.fill_from(connection.server.get(), 1024).outcome == SpliceIn::Outcome::NoPipe);
    CHECK(fallbacks(pool, PipeFallback::Refused) == 1);

    filler.erase(filler.end() - 3, filler.end());  // 57 to 59 free again: the pipe gets 57 and 58
    const SpliceIn in = pool.fill_from(connection.server.get(), 1024);
    CHECK(in.outcome == SpliceIn::Outcome::Moved);
    CHECK(in.result == 1);
    CHECK(fallbacks(pool, PipeFallback::Refused) == 1);
}

TEST_CASE("pipe pool: a splice the kernel refuses (EPERM from a seccomp filter) leaves the bytes in the socket and ends the tries") {
    PipePool pool(4, 64 * 1024, INT_MAX, /*refuse_splice=*/true);
    SocketPair source = nonblocking_pair();
    write_all(source.b.get(), "still here");

    const SpliceIn refused = pool.fill_from(source.a.get(), 64 * 1024);
    CHECK(refused.outcome == SpliceIn::Outcome::NoPipe);  // the caller copies: no error for the session
    CHECK(fallbacks(pool, PipeFallback::Unsupported) == 1);
    CHECK(pool.refusal() == EPERM);  // the hook refuses as a seccomp filter does
    CHECK(pool.stats().in_use == 0);
    CHECK(pool.stats().free == 0);  // the pipe it could not use is closed, not kept
    CHECK(pool.stats().taken == 0);
    CHECK(read_some(source.a.get(), 100) == "still here");  // nothing was moved

    // No pipe is offered again, each try counted, whatever waits.
    write_all(source.b.get(), "more");
    CHECK(pool.fill_from(source.a.get(), 64 * 1024).outcome == SpliceIn::Outcome::NoPipe);
    CHECK(fallbacks(pool, PipeFallback::Unsupported) == 2);
    CHECK(fallbacks(pool, PipeFallback::Refused) == 0);
    CHECK(read_some(source.a.get(), 100) == "more");
}
