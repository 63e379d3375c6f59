// Receives as both engines perform them, on a socket pair: the room a receive is given bounds what
// the engine takes from the socket, bytes arrive whole and in order, every completion reaches the
// caller (the engine keeps no received bytes of its own), a cancelled receive always completes,
// and an abandoned descriptor is closed only once the kernel holds nothing on it.
#include <doctest/doctest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringlb/engine/epoll/epoll_engine.hpp"
#include "ringlb/engine/uring/uring_engine.hpp"
#include "ringlb/net/socket.hpp"

using namespace ringlb::engine;
using ringlb::net::UniqueFd;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kBuffer = 32 * 1024;

struct Collector final : CompletionHandler {
    std::vector<Completion> completions;
    void on_completion(const Completion& completion) override { completions.push_back(completion); }
};

struct Variant {
    const char* name;
    std::function<std::unique_ptr<Engine>(EngineOptions)> make;
};

// uring with and without multishot receives, and epoll; a uring variant this machine cannot run
// is left out, with a message.
std::vector<Variant> variants() {
    return {
        {"uring", [](EngineOptions o) { return std::make_unique<UringEngine>(o); }},
        {"uring one-shot",
         [](EngineOptions o) {
             o.multishot_recv = false;
             return std::make_unique<UringEngine>(o);
         }},
        {"epoll", [](EngineOptions o) { return std::make_unique<EpollEngine>(o); }},
    };
}

std::unique_ptr<Engine> make_or_skip(const Variant& variant, const EngineOptions& options) {
    try {
        return variant.make(options);
    } catch (const EngineUnavailable& e) {
        MESSAGE(variant.name, " skipped: ", e.what());
        return nullptr;
    }
}

// Runs `body` with a fresh engine of each variant this machine can run; the variant's name is in
// the context of every failure.
void for_each_engine(const EngineOptions& options, const std::function<void(Engine&, std::string_view)>& body) {
    for (const Variant& variant : variants()) {
        const std::string name = variant.name;
        CAPTURE(name);
        if (const auto engine = make_or_skip(variant, options)) body(*engine, name);
    }
}

// Whether the engine receives with multishot requests (the features before "; not used").
bool multishot(const Engine& engine) {
    const std::string features = engine.features();
    const std::string used = features.substr(0, features.find(';'));
    return used.find("multishot-recv") != std::string::npos;
}

struct Pair {
    UniqueFd reader;
    UniqueFd writer;
};

Pair socket_pair(const Engine& engine) {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    Pair pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
    if (engine.wants_nonblocking_sockets()) ringlb::net::set_nonblocking(pair.reader.get(), true);
    ringlb::net::set_nonblocking(pair.writer.get(), true);
    return pair;
}

char pattern(size_t offset) { return static_cast<char>('a' + offset % 23); }

// Writes the pattern until the socket pair is full; returns how many bytes went in.
size_t fill(int fd) {
    std::string chunk(4096, '\0');
    size_t written = 0;
    for (;;) {
        for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = pattern(written + i);
        const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n <= 0) return written;
        written += static_cast<size_t>(n);
    }
}

size_t unread(int fd) {
    int bytes = 0;
    REQUIRE(::ioctl(fd, FIONREAD, &bytes) == 0);
    return static_cast<size_t>(bytes);
}

EngineOptions pool_of(uint32_t buffer_size, uint32_t count) {
    EngineOptions options;
    options.buffer_size = buffer_size;
    options.initial_buffers = count;
    options.max_buffers = count;
    options.queue_depth = 256;
    return options;
}

// Polls until `count` completions have come (or two seconds have passed).
std::vector<Completion> poll_for(Engine& engine, size_t count) {
    Collector collector;
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (collector.completions.size() < count && std::chrono::steady_clock::now() < deadline)
        engine.poll(20ms, collector);
    return collector.completions;
}

void settle(Engine& engine) {
    Collector collector;
    for (int i = 0; i < 5; ++i) engine.poll(10ms, collector);
    CHECK(collector.completions.empty());  // nothing was asked for
}

}  // namespace

TEST_CASE("a receive delivers no more than its room and one buffer, and bytes arrive whole and in order") {
    for_each_engine(pool_of(kBuffer, 64), [&](Engine& engine, std::string_view) {
        Pair pair = socket_pair(engine);
        const size_t written = fill(pair.writer.get());
        REQUIRE(written > 4 * kBuffer);

        const uint32_t room = 2 * kBuffer;
        std::string received;
        // One receive: its completions until one says it is done (more = false).
        const auto receive_once = [&](uint64_t user_data) {
            engine.recv(pair.reader.get(), room, user_data);
            size_t delivered = 0;
            bool done = false;
            bool eof = false;
            const auto deadline = std::chrono::steady_clock::now() + 2s;
            while (!done && std::chrono::steady_clock::now() < deadline) {
                Collector collector;
                engine.poll(20ms, collector);
                for (const Completion& c : collector.completions) {
                    REQUIRE(c.user_data == user_data);
                    REQUIRE(c.result >= 0);
                    done = !c.more;
                    eof = eof || c.result == 0;
                    if (!c.has_buffer) continue;
                    received.append(reinterpret_cast<const char*>(engine.buffer_data(c.buffer_id)),
                                    static_cast<size_t>(c.result));
                    delivered += static_cast<size_t>(c.result);
                    engine.release_buffer(c.buffer_id);
                }
            }
            REQUIRE(done);
            CHECK(delivered <= room + kBuffer);
            return eof;
        };
        receive_once(1);
        settle(engine);  // nothing armed any more: nothing more is taken from the socket
        const size_t taken = received.size();
        CHECK(taken == (multishot(engine) ? room : kBuffer));
        CHECK(unread(pair.reader.get()) == written - taken);

        ::shutdown(pair.writer.get(), SHUT_WR);
        while (!receive_once(2)) {
        }
        REQUIRE(received.size() == written);
        size_t first_wrong = written;
        for (size_t i = 0; i < written && first_wrong == written; ++i)
            if (received[i] != pattern(i)) first_wrong = i;
        CHECK(first_wrong == written);
        engine.forget(pair.reader.get());
    });
}

TEST_CASE("every received buffer reaches the caller: the engine holds none of its own") {
    constexpr uint32_t kSmall = 4096;
    for_each_engine(pool_of(kSmall, 64), [&](Engine& engine, std::string_view) {
        Pair pair = socket_pair(engine);
        // A caller that keeps every buffer it gets, as a session whose destination stalled does.
        std::vector<uint16_t> kept;
        for (int round = 0; round < 20; ++round) {
            for (int i = 0; i < 3; ++i) REQUIRE(::send(pair.writer.get(), "x", 1, MSG_NOSIGNAL) == 1);
            engine.recv(pair.reader.get(), 8 * kSmall, 7);
            bool done = false;
            const auto deadline = std::chrono::steady_clock::now() + 2s;
            while (!done && std::chrono::steady_clock::now() < deadline) {
                Collector collector;
                engine.poll(10ms, collector);
                for (const Completion& c : collector.completions) {
                    if (c.has_buffer) kept.push_back(c.buffer_id);
                    done = !c.more;
                }
                if (!done && collector.completions.empty()) {  // a multishot still armed: end it
                    engine.cancel(pair.reader.get());
                }
            }
            REQUIRE(done);
            CHECK(engine.buffer_stats().held == kept.size());
        }
        for (uint16_t id : kept) engine.release_buffer(id);
        CHECK(engine.buffer_stats().held == 0);
        engine.forget(pair.reader.get());
    });
}

TEST_CASE("a receive cancelled while the buffer ring is empty completes as cancelled") {
    constexpr uint32_t kCount = 16;
    constexpr uint32_t kSmall = 4096;
    for_each_engine(pool_of(kSmall, kCount), [&](Engine& engine, std::string_view) {
        // Every buffer of the pool is held.
        Pair full = socket_pair(engine);
        fill(full.writer.get());
        std::vector<uint16_t> held;
        const auto deadline = std::chrono::steady_clock::now() + 3s;
        while (held.size() < kCount && std::chrono::steady_clock::now() < deadline) {
            engine.recv(full.reader.get(), kSmall, 1);
            const auto got = poll_for(engine, 1);
            REQUIRE(got.size() == 1);
            REQUIRE(got[0].result > 0);
            held.push_back(got[0].buffer_id);
        }
        REQUIRE(held.size() == kCount);
        // A receive and its cancel in the same round, on a socket whose peer says nothing.
        Pair silent = socket_pair(engine);
        engine.recv(silent.reader.get(), kSmall, 2);
        engine.cancel(silent.reader.get());
        const auto got = poll_for(engine, 1);
        REQUIRE(got.size() == 1);
        CHECK(got[0].user_data == 2);
        CHECK(got[0].result == -ECANCELED);
        CHECK_FALSE(got[0].more);
        for (uint16_t id : held) engine.release_buffer(id);
        engine.forget(silent.reader.get());
        engine.forget(full.reader.get());
    });
}

TEST_CASE("an abandoned descriptor is closed once nothing is pending on it, and its number's next socket is unaffected") {
    for_each_engine(pool_of(4096, 64), [&](Engine& engine, std::string_view) {
        Pair first = socket_pair(engine);
        const int number = first.reader.get();
        engine.recv(number, 4096, 1);
        settle(engine);  // armed, nothing arrives
        const uint16_t no_buffers[1] = {};
        engine.abandon(std::move(first.reader), std::span<const uint16_t>(no_buffers, 0));
        settle(engine);  // the orphaned receive's completion reaches nobody
        CHECK(::fcntl(number, F_GETFD) == -1);  // closed by the engine once the kernel let go
        // The next socket may get the same number: its receives see only its own bytes.
        Pair second = socket_pair(engine);
        REQUIRE(::send(second.writer.get(), "fresh", 5, MSG_NOSIGNAL) == 5);
        engine.recv(second.reader.get(), 4096, 2);
        const auto got = poll_for(engine, 1);
        REQUIRE(got.size() == 1);
        CHECK(got[0].user_data == 2);
        REQUIRE(got[0].result == 5);
        CHECK(std::string(reinterpret_cast<const char*>(engine.buffer_data(got[0].buffer_id)), 5) == "fresh");
        engine.release_buffer(got[0].buffer_id);
        settle(engine);
        engine.forget(second.reader.get());
    });
}

// The last bytes of a stream say that its end follows them when the engine has seen the FIN
// already (the core then sends its own FIN with them); the end itself is never invented.
TEST_CASE("bytes the peer's FIN came right behind say so; a short read alone does not") {
    for_each_engine(pool_of(kBuffer, 64), [&](Engine& engine, std::string_view name) {
        Pair pair = socket_pair(engine);
        engine.recv(pair.reader.get(), 2 * kBuffer, 1);
        settle(engine);

        const std::string first = "not the end";
        REQUIRE(::send(pair.writer.get(), first.data(), first.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(first.size()));
        std::vector<Completion> got = poll_for(engine, 1);
        REQUIRE(got.size() == 1);
        CHECK(got[0].result == static_cast<int32_t>(first.size()));
        CHECK_FALSE(got[0].end_follows);
        engine.release_buffer(got[0].buffer_id);
        if (!got[0].more) engine.recv(pair.reader.get(), 2 * kBuffer, 1);

        const std::string last = "last words";
        REQUIRE(::send(pair.writer.get(), last.data(), last.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(last.size()));
        REQUIRE(::shutdown(pair.writer.get(), SHUT_WR) == 0);
        const size_t expected = multishot(engine) ? 2 : 1;  // a multishot receive also completes with the end
        got = poll_for(engine, expected);
        REQUIRE(got.size() == expected);
        REQUIRE(got[0].has_buffer);
        CHECK(std::string(reinterpret_cast<const char*>(engine.buffer_data(got[0].buffer_id)),
                          static_cast<size_t>(got[0].result)) == last);
        engine.release_buffer(got[0].buffer_id);
        // A one-shot io_uring receive ends with its bytes, before the FIN is looked at (so does the
        // "uring" variant where the kernel takes no capped multishot receives).
        if (multishot(engine) || name == "epoll") CHECK(got[0].end_follows);
        if (expected == 2) CHECK(got[1].result == 0);
        engine.forget(pair.reader.get());
    });
}

// The epoll engine reads on past a short read once the peer has closed; an error met there (a
// reset behind the last bytes) must reach the caller with the next receive, not pass for a FIN.
TEST_CASE("epoll: a reset right behind the last bytes is reported, not taken for a clean end") {
    EpollEngine engine(pool_of(kBuffer, 64));
    ringlb::net::UniqueFd listener = ringlb::net::listen_tcp(*ringlb::net::SocketAddress::parse("127.0.0.1:0"));
    ringlb::net::set_nonblocking(listener.get(), false);
    const ringlb::net::SocketAddress address = ringlb::net::local_address(listener.get());
    UniqueFd writer(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(writer.get(), address.sockaddr_ptr(), address.length()) == 0);
    UniqueFd reader(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    REQUIRE(reader.get() >= 0);

    engine.recv(reader.get(), 2 * kBuffer, 1);
    settle(engine);
    REQUIRE(::send(writer.get(), "abc", 3, MSG_NOSIGNAL) == 3);
    const linger reset{1, 0};
    REQUIRE(::setsockopt(writer.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == 0);
    writer.reset();  // closing with linger 0 sends a reset right behind "abc"
    std::this_thread::sleep_for(20ms);

    std::vector<Completion> got = poll_for(engine, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].result == 3);
    CHECK_FALSE(got[0].end_follows);
    engine.release_buffer(got[0].buffer_id);
    engine.recv(reader.get(), 2 * kBuffer, 2);
    got = poll_for(engine, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].result == -ECONNRESET);
    engine.forget(reader.get());
}
