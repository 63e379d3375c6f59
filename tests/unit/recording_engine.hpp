#pragma once
// An engine for driving the session core in unit tests: it records every request and completes
// none by itself, except that cancel(fd) completes whatever is pending on fd with -ECANCELED, as
// both real engines do. Loopback sockets stand in for accepted clients.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <deque>
#include <optional>

#include "ringlb/engine/engine.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::test {

class RecordingEngine final : public engine::Engine {
public:
    enum class Kind { Accept, Connect, Recv, Send, Shutdown };
    struct Request {
        Kind kind = Kind::Accept;
        int fd = -1;
        engine::UserData user_data = 0;
        net::SocketAddress to;  // connect: the server
    };

    std::string_view name() const override { return "recording"; }
    std::string features() const override { return "test"; }
    bool wants_nonblocking_sockets() const override { return true; }

    void accept(int fd, engine::UserData ud) override { requests.push_back({Kind::Accept, fd, ud, {}}); }
    void connect(int fd, const net::SocketAddress& to, engine::UserData ud) override {
        requests.push_back({Kind::Connect, fd, ud, to});
    }
    void recv(int fd, uint32_t, engine::UserData ud) override { requests.push_back({Kind::Recv, fd, ud, {}}); }
    void send_parts(int fd, std::span<const engine::SendPart>, engine::UserData ud) override {
        requests.push_back({Kind::Send, fd, ud, {}});
    }
    void shutdown_write(int fd, engine::UserData ud) override { requests.push_back({Kind::Shutdown, fd, ud, {}}); }
    void cancel(int fd) override {
        for (auto it = requests.begin(); it != requests.end();) {
            if (it->fd != fd || it->kind == Kind::Accept) {
                ++it;
                continue;
            }
            ready.push_back({it->user_data, -ECANCELED, false, false, 0});
            it = requests.erase(it);
        }
    }
    void forget(int) override {}
    void abandon(net::UniqueFd, std::span<const uint16_t>) override {}
    engine::BufferStats buffer_stats() const override { return {}; }
    bool buffers_under_pressure() const override { return false; }
    std::byte* buffer_data(uint16_t) override { return buffer; }
    void release_buffer(uint16_t) override {}
    uint32_t buffer_size() const override { return sizeof buffer; }
    void wake() override {}
    void poll(std::chrono::milliseconds, engine::CompletionHandler& handler) override {
        handler.on_batch_start();
        while (!ready.empty()) {
            const engine::Completion completion = ready.front();
            ready.pop_front();
            handler.on_completion(completion);
        }
    }

    // Takes the oldest request of that kind (and fd, when given) off the record.
    std::optional<Request> take(Kind kind, std::optional<int> fd = std::nullopt) {
        for (auto it = requests.begin(); it != requests.end(); ++it) {
            if (it->kind == kind && (!fd || it->fd == *fd)) {
                const Request request = *it;
                requests.erase(it);
                return request;
            }
        }
        return std::nullopt;
    }
    size_t count(Kind kind) const {
        size_t n = 0;
        for (const Request& request : requests) n += request.kind == kind ? 1 : 0;
        return n;
    }
    void complete(const Request& request, int result, bool more = false) {
        ready.push_back({request.user_data, result, more, false, 0});
    }

    std::deque<Request> requests;
    std::deque<engine::Completion> ready;
    std::byte buffer[1024]{};
};

// A loopback listener the tests "accept" from: each call to accepted() connects a fresh client
// and returns the accepted end (the client end is closed at once: the core only reads the peer
// address, which stays readable).
class LoopbackAcceptor {
public:
    LoopbackAcceptor()
        : listener_(net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"))), address_(net::local_address(listener_.get())) {
        net::set_nonblocking(listener_.get(), false);
    }
    int accepted() {
        net::UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::connect(client.get(), address_.sockaddr_ptr(), address_.length()) == 0);
        const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        REQUIRE(fd >= 0);
        return fd;
    }

private:
    net::UniqueFd listener_;
    net::SocketAddress address_;
};

}  // namespace ringlb::test
