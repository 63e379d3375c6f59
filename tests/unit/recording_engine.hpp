#pragma once
// The one engine for driving the session core in unit tests: it records every request (with the
// bytes of sends) and completes none by itself; the test decides when and how each completes.
// cancel(fd) completes what is pending on fd with -ECANCELED, as both real engines do, unless the
// test turns that off to complete cancellations itself. Loopback sockets stand in for clients.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ringlb/engine/engine.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::test {

class RecordingEngine final : public engine::Engine {
public:
    enum class Kind { Accept, Connect, Recv, Send, Shutdown, SpliceIn, SpliceOut };
    struct Request {
        Kind kind = Kind::Accept;
        int fd = -1;
        engine::UserData user_data = 0;
        net::SocketAddress to;  // connect: the server
        uint32_t length = 0;    // recv, splice_in: the room the core gave; splice_out: the bytes
        uint16_t pipe = 0;      // splice_out: the pipe
        std::string bytes;      // send: what the core asked to send
        bool fin_follows = false;  // send: the core said the stream ends after these bytes
    };

    std::string_view name() const override { return "recording"; }
    std::string features() const override { return "test"; }
    bool wants_nonblocking_sockets() const override { return true; }

    void accept(int fd, engine::UserData ud) override { record(Kind::Accept, fd, ud); }
    void connect(int fd, const net::SocketAddress& to, engine::UserData ud) override { record(Kind::Connect, fd, ud).to = to; }
    void recv(int fd, uint32_t max_bytes, engine::UserData ud) override { record(Kind::Recv, fd, ud).length = max_bytes; }
    void send_parts(int fd, std::span<const engine::SendPart> parts, engine::UserData ud, bool fin_follows) override {
        Request& request = record(Kind::Send, fd, ud);
        request.fin_follows = fin_follows;
        std::string& bytes = request.bytes;
        for (const engine::SendPart& part : parts) bytes.append(reinterpret_cast<const char*>(part.data), part.length);
    }
    void shutdown_write(int fd, engine::UserData ud) override { record(Kind::Shutdown, fd, ud); }
    void splice_in(int fd, uint32_t max_bytes, engine::UserData ud) override {
        record(Kind::SpliceIn, fd, ud).length = max_bytes;
    }
    void splice_out(uint16_t pipe, int fd, uint32_t length, engine::UserData ud) override {
        Request& request = record(Kind::SpliceOut, fd, ud);
        request.length = length;
        request.pipe = pipe;
    }
    // Every pipe the core gave back, with whether it said the pipe was empty.
    void release_pipe(uint16_t pipe, bool empty) override { released_pipes.emplace_back(pipe, empty); }
    uint32_t trim_pipes(bool) override { return 0; }
    engine::PipeStats pipe_stats() const override { return {}; }
    int splice_refusal() const override { return 0; }
    // Noted in `cancelled`; with `cancel_completes`, whatever is pending on fd (accepts aside)
    // also completes with -ECANCELED, as both real engines do.
    void cancel(int fd) override {
        cancelled.insert(fd);
        if (!cancel_completes) return;
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
    void abandon(net::UniqueFd fd, std::span<const uint16_t> held) override {
        abandoned.push_back(fd.get());
        for (const uint16_t id : held) released.push_back(id);
    }
    engine::BufferStats buffer_stats() const override { return {}; }
    bool buffers_under_pressure() const override { return under_pressure; }
    std::byte* buffer_data(uint16_t id) override { return reinterpret_cast<std::byte*>(buffers[id]); }
    void release_buffer(uint16_t id) override { released.push_back(id); }
    uint32_t buffer_size() const override { return sizeof buffers[0]; }
    void wake() override {}
    void poll(std::chrono::milliseconds, engine::CompletionHandler& handler) override {
        handler.on_batch_start();
        while (!ready.empty()) {
            const engine::Completion completion = ready.front();
            ready.pop_front();
            handler.on_completion(completion);
        }
    }

    // Takes the oldest request of that kind (and fd, when given) off the record, if there is one.
    std::optional<Request> try_take(Kind kind, std::optional<int> fd = std::nullopt) {
        for (auto it = requests.begin(); it != requests.end(); ++it) {
            if (it->kind == kind && (!fd || it->fd == *fd)) {
                Request request = *it;
                requests.erase(it);
                return request;
            }
        }
        return std::nullopt;
    }
    // The same, for a request the test expects to be there.
    Request take(Kind kind, std::optional<int> fd = std::nullopt) {
        std::optional<Request> request = try_take(kind, fd);
        REQUIRE_MESSAGE(request.has_value(), "no pending request of the expected kind");
        return *request;
    }
    bool has(Kind kind, std::optional<int> fd = std::nullopt) const {
        for (const Request& r : requests)
            if (r.kind == kind && (!fd || r.fd == *fd)) return true;
        return false;
    }
    size_t count(Kind kind) const {
        size_t n = 0;
        for (const Request& request : requests) n += request.kind == kind ? 1 : 0;
        return n;
    }
    void complete(const Request& request, int result, bool more = false) {
        ready.push_back({request.user_data, result, more, false, 0});
    }
    // A receive that got `bytes` in buffer `buffer`.
    void complete_recv(const Request& request, const std::string& bytes, uint16_t buffer, bool more = false) {
        REQUIRE(bytes.size() <= sizeof buffers[0]);
        std::memcpy(buffers[buffer], bytes.data(), bytes.size());
        ready.push_back({request.user_data, static_cast<int32_t>(bytes.size()), more, true, buffer});
    }
    // The same, with the peer's FIN seen right behind the bytes (Completion::end_follows).
    void complete_last_recv(const Request& request, const std::string& bytes, uint16_t buffer, bool more = false) {
        complete_recv(request, bytes, buffer, more);
        ready.back().end_follows = true;
    }
    // The oldest pending receive gets `bytes` in buffer 0 (none: the peer closed; `error`: that
    // error). One buffer: let the core handle it before the next one is given bytes.
    void complete_next_recv(const std::string& bytes, int error = 0) {
        const Request request = take(Kind::Recv);
        if (error != 0 || bytes.empty())
            complete(request, error);
        else
            complete_recv(request, bytes, 0);
    }

    std::deque<Request> requests;
    std::deque<engine::Completion> ready;
    bool cancel_completes = true;
    std::set<int> cancelled;
    std::vector<uint16_t> released;
    std::vector<std::pair<uint16_t, bool>> released_pipes;
    std::vector<int> abandoned;  // descriptors handed over by abandon()
    bool under_pressure = false;
    char buffers[4][1024]{};

private:
    Request& record(Kind kind, int fd, engine::UserData ud) {
        Request request;
        request.kind = kind;
        request.fd = fd;
        request.user_data = ud;
        requests.push_back(std::move(request));
        return requests.back();
    }
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
