// Receives as both engines perform them, on a socket pair: the room a receive is given bounds what
// the engine takes from the socket, bytes arrive whole and in order, and forget() gives back
// every buffer, including those a multishot receive took ahead of the caller.
#include <doctest/doctest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
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

// Whether the engine receives ahead with multishot requests (the features before "; not used").
bool receives_ahead(const Engine& engine) {
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

TEST_CASE("a receive takes no more from the socket than its room, and bytes arrive whole and in order") {
    for (const Variant& variant : variants()) {
        const std::string name = variant.name;
        CAPTURE(name);
        const auto engine = make_or_skip(variant, EngineOptions{kBuffer, 64, 256});
        if (!engine) continue;
        Pair pair = socket_pair(*engine);
        const size_t written = fill(pair.writer.get());
        REQUIRE(written > 4 * kBuffer);

        const uint32_t room = 2 * kBuffer;
        engine->recv(pair.reader.get(), room, 1);
        const auto first = poll_for(*engine, 1);
        REQUIRE(first.size() == 1);
        CHECK(first[0].user_data == 1);
        CHECK(first[0].result == static_cast<int32_t>(kBuffer));
        REQUIRE(first[0].has_buffer);
        settle(*engine);  // no further ask: an engine that receives ahead stops at the room
        const size_t taken = receives_ahead(*engine) ? room : kBuffer;
        CHECK(unread(pair.reader.get()) == written - taken);

        // Now read everything, one buffer per ask, giving each back: every byte in order.
        std::string received(reinterpret_cast<const char*>(engine->buffer_data(first[0].buffer_id)), kBuffer);
        engine->release_buffer(first[0].buffer_id);
        ::shutdown(pair.writer.get(), SHUT_WR);
        bool eof = false;
        while (!eof) {
            engine->recv(pair.reader.get(), room, 2);
            const auto next = poll_for(*engine, 1);
            REQUIRE(next.size() == 1);
            REQUIRE(next[0].result >= 0);
            eof = next[0].result == 0;
            if (next[0].has_buffer) {
                const std::byte* data = engine->buffer_data(next[0].buffer_id);
                received.append(reinterpret_cast<const char*>(data), static_cast<size_t>(next[0].result));
                engine->release_buffer(next[0].buffer_id);
            }
        }
        REQUIRE(received.size() == written);
        size_t first_wrong = written;
        for (size_t i = 0; i < written && first_wrong == written; ++i)
            if (received[i] != pattern(i)) first_wrong = i;
        CHECK(first_wrong == written);
        engine->forget(pair.reader.get());
    }
}

TEST_CASE("forget() gives back every buffer, also those taken ahead of the caller") {
    for (const Variant& variant : variants()) {
        const std::string name = variant.name;
        CAPTURE(name);
        constexpr uint32_t kCount = 16;
        constexpr uint32_t kSmall = 4096;  // the whole pool fits in what a socket pair holds
        const auto engine = make_or_skip(variant, EngineOptions{kSmall, kCount, 256});
        if (!engine) continue;
        // A socket whose receive was answered once and then dropped, with more bytes waiting.
        {
            Pair first = socket_pair(*engine);
            fill(first.writer.get());
            engine->recv(first.reader.get(), 4 * kSmall, 1);
            const auto got = poll_for(*engine, 1);
            REQUIRE(got.size() == 1);
            REQUIRE(got[0].has_buffer);
            engine->release_buffer(got[0].buffer_id);
            settle(*engine);
            engine->forget(first.reader.get());
        }
        settle(*engine);
        // Every buffer of the pool can be held at once again.
        Pair second = socket_pair(*engine);
        fill(second.writer.get());
        std::vector<uint16_t> held;
        const auto deadline = std::chrono::steady_clock::now() + 3s;
        while (held.size() < kCount && std::chrono::steady_clock::now() < deadline) {
            engine->recv(second.reader.get(), (kCount - static_cast<uint32_t>(held.size())) * kSmall, 2);
            const auto got = poll_for(*engine, 1);
            if (got.empty()) break;  // no buffer came back: one was lost
            REQUIRE(got[0].result > 0);
            held.push_back(got[0].buffer_id);
        }
        CHECK(held.size() == kCount);
        for (uint16_t id : held) engine->release_buffer(id);
        engine->forget(second.reader.get());
    }
}
