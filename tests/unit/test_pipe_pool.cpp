// The splice path's pipe pool: bytes move socket -> pipe -> socket unchanged, a pipe is held only
// while it holds bytes, the pool never makes more than max_pipes, and every case in which no pipe
// can be had is counted by its cause.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "ringlb/engine/pipe_pool.hpp"
#include "ringlb/net/socket.hpp"

using ringlb::engine::PipeFallback;
using ringlb::engine::PipePool;
using ringlb::engine::SpliceIn;
using ringlb::net::UniqueFd;

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
