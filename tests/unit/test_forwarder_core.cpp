// The session core driven by a scripted engine: which requests it makes and how it reacts to
// their completions, with no event API involved. Real loopback sockets stand in for clients.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <algorithm>

#include "ringlb/core/forwarder.hpp"

using namespace ringlb;
using engine::Completion;
using engine::UserData;

namespace {

// Records every request; the test decides when and how each completes.
class ScriptedEngine final : public engine::Engine {
public:
    enum class Kind { Accept, Connect, Recv, Send, Shutdown };
    struct Request {
        Kind kind = Kind::Accept;
        int fd = -1;
        UserData user_data = 0;
        uint32_t length = 0;
        std::string bytes;  // send: what the core asked to send
        net::SocketAddress to;
    };

    std::string_view name() const override { return "scripted"; }
    std::string features() const override { return "test"; }
    bool wants_nonblocking_sockets() const override { return true; }

    void accept(int fd, UserData ud) override { record(Kind::Accept, fd, ud); }
    void connect(int fd, const net::SocketAddress& to, UserData ud) override {
        record(Kind::Connect, fd, ud).to = to;
    }
    void recv(int fd, uint32_t max, UserData ud) override { record(Kind::Recv, fd, ud).length = max; }
    void send_parts(int fd, std::span<const engine::SendPart> parts, UserData ud) override {
        std::string& bytes = record(Kind::Send, fd, ud).bytes;
        for (const engine::SendPart& part : parts) bytes.append(reinterpret_cast<const char*>(part.data), part.length);
    }
    void shutdown_write(int fd, UserData ud) override { record(Kind::Shutdown, fd, ud); }
    void cancel(int fd) override { cancelled.insert(fd); }
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
            Completion completion = ready.front();
            ready.pop_front();
            handler.on_completion(completion);
        }
    }

    Request& record(Kind kind, int fd, UserData ud) {
        Request request;
        request.kind = kind;
        request.fd = fd;
        request.user_data = ud;
        requests.push_back(request);
        return requests.back();
    }

    // Takes the oldest request of that kind (and fd, when given) off the record.
    Request take(Kind kind, std::optional<int> fd = std::nullopt) {
        for (auto it = requests.begin(); it != requests.end(); ++it) {
            if (it->kind == kind && (!fd || it->fd == *fd)) {
                Request request = *it;
                requests.erase(it);
                return request;
            }
        }
        FAIL("no pending request of the expected kind");
        return {};
    }
    bool has(Kind kind, std::optional<int> fd = std::nullopt) const {
        for (const Request& r : requests)
            if (r.kind == kind && (!fd || r.fd == *fd)) return true;
        return false;
    }
    void complete(const Request& request, int result, bool more = false) {
        ready.push_back(Completion{request.user_data, result, more, false, 0});
    }
    void complete_recv(const Request& request, const std::string& bytes, uint16_t buffer, bool more = false) {
        std::memcpy(buffers[buffer], bytes.data(), bytes.size());
        ready.push_back(Completion{request.user_data, static_cast<int32_t>(bytes.size()), more, true, buffer});
    }

    std::deque<Request> requests;
    std::deque<Completion> ready;
    std::set<int> cancelled;
    std::vector<uint16_t> released;
    std::vector<int> abandoned;  // descriptors handed over by abandon()
    bool under_pressure = false;
    char buffers[4][1024]{};
};

config::Config config_with_servers(std::vector<std::string> servers) {
    config::Config config;
    config.source = "test";
    config::RuleConfig rule;
    rule.id = "web";
    rule.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
    for (const std::string& text : servers) rule.servers.push_back({*net::SocketAddress::parse(text), 1});
    config.rules.push_back(rule);
    return config;
}

// A connected loopback TCP pair: `client` stays with the test, the other end goes to the core
// as if accepted.
struct LoopbackPair {
    net::UniqueFd client;
    int accepted = -1;
    LoopbackPair() {
        net::UniqueFd listener = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"));
        net::set_nonblocking(listener.get(), false);
        const net::SocketAddress address = net::local_address(listener.get());
        client.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(::connect(client.get(), address.sockaddr_ptr(), address.length()) == 0);
        accepted = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
        REQUIRE(accepted >= 0);
    }
};

struct Harness {
    ScriptedEngine engine;
    Logger log{LogLevel::Error};
    core::SessionLimits limits;
    core::Forwarder forwarder;
    explicit Harness(const config::Config& config)
        : limits(config.global.max_sessions, config.global.max_sessions_per_ip), forwarder(config, engine, log, limits) {
        forwarder.start_accepting();
    }
    void turn() { forwarder.run_once(std::chrono::milliseconds(0)); }

    // Accepts the pair's connection and completes its connect: the session is established.
    struct Established {
        int client_fd;
        int server_fd;
    };
    Established establish(const LoopbackPair& pair) {
        engine.complete(engine.take(ScriptedEngine::Kind::Accept), pair.accepted, true);
        turn();
        const auto connect = engine.take(ScriptedEngine::Kind::Connect);
        engine.complete(connect, 0);
        turn();
        return {pair.accepted, connect.fd};
    }
};

}  // namespace

TEST_CASE("a refused connect moves the client to the next server, each server once") {
    Harness h(config_with_servers({"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    LoopbackPair pair;
    const auto accept = h.engine.take(ScriptedEngine::Kind::Accept);
    h.engine.complete(accept, pair.accepted, true);
    h.turn();
    std::set<uint16_t> ports;
    for (int attempt = 0; attempt < 3; ++attempt) {
        const auto connect = h.engine.take(ScriptedEngine::Kind::Connect);
        ports.insert(connect.to.port());
        h.engine.complete(connect, -ECONNREFUSED);
        h.turn();
    }
    CHECK(ports == std::set<uint16_t>{1, 2, 3});
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Connect));
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.forwarder.stats().connect_failures == 3);
    char byte;
    CHECK(::recv(pair.client.get(), &byte, 1, 0) == 0);  // the client was closed with a FIN
}

TEST_CASE("bytes go through in order and a client FIN reaches the server after them") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);

    const auto client_recv = h.engine.take(ScriptedEngine::Kind::Recv, client_fd);
    REQUIRE(h.engine.has(ScriptedEngine::Kind::Recv, server_fd));
    h.engine.complete_recv(client_recv, "hello", 2);
    h.turn();
    auto send = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    CHECK(send.bytes == "hello");
    // The next receive is already asked for while the send is in flight.
    const auto client_eof = h.engine.take(ScriptedEngine::Kind::Recv, client_fd);
    h.engine.complete(client_eof, 0);
    h.turn();
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Shutdown));  // not before "hello" is out

    h.engine.complete(send, 2);  // a short send
    h.turn();
    send = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    CHECK(send.bytes == "llo");
    CHECK(h.engine.released.empty());
    h.engine.complete(send, 3);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{2});
    const auto shutdown = h.engine.take(ScriptedEngine::Kind::Shutdown, server_fd);

    // The other direction still flows after the client's half-close.
    h.engine.complete(shutdown, 0);
    const auto server_recv = h.engine.take(ScriptedEngine::Kind::Recv, server_fd);
    h.engine.complete_recv(server_recv, "reply", 1);
    h.turn();
    const auto reply = h.engine.take(ScriptedEngine::Kind::Send, client_fd);
    CHECK(reply.bytes == "reply");
    CHECK(h.forwarder.active_sessions() == 1);

    h.engine.complete(reply, 5);
    h.engine.complete(h.engine.take(ScriptedEngine::Kind::Recv, server_fd), 0);
    h.turn();
    h.engine.complete(h.engine.take(ScriptedEngine::Kind::Shutdown, client_fd), 0);
    h.turn();
    CHECK(h.forwarder.active_sessions() == 0);  // both directions finished: the session is gone
}

TEST_CASE("chunks queued behind a send leave together in one gathered send") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    // 1000 bytes of a 1024-byte buffer: what follows cannot join them in their buffer.
    const std::string one(1000, '1');
    const std::string big(1000, 'b');
    const std::string other(100, 'o');

    h.engine.complete_recv(h.engine.take(ScriptedEngine::Kind::Recv, client_fd), one, 0);
    h.turn();
    auto first = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    CHECK(first.bytes == one);
    // Two more chunks arrive while "one" is in flight: they wait, and then go out as one send.
    h.engine.complete_recv(h.engine.take(ScriptedEngine::Kind::Recv, client_fd), big, 1);
    h.turn();
    h.engine.complete_recv(h.engine.take(ScriptedEngine::Kind::Recv, client_fd), other, 2);
    h.turn();
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Send, server_fd));
    h.engine.complete(first, 1000);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{0});
    auto gathered = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    CHECK(gathered.bytes == big + other);

    // A short send that ends inside the second chunk frees the first buffer only.
    h.engine.complete(gathered, 1003);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{0, 1});
    auto rest = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    CHECK(rest.bytes == other.substr(3));
    h.engine.complete(rest, 97);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{0, 1, 2});
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Send, server_fd));
}

TEST_CASE("tiny segments join the last queued chunk: a flow holds buffers by its bytes, not its segments") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);

    h.engine.complete_recv(h.engine.take(ScriptedEngine::Kind::Recv, client_fd), "a", 0);
    h.turn();
    auto stalled = h.engine.take(ScriptedEngine::Kind::Send, server_fd);  // never completes for now
    // A multishot receive delivers 500 one-byte segments into buffers 1 and 2 in turn: each is
    // copied behind the queued "a" and its buffer goes back at once.
    const auto multishot = h.engine.take(ScriptedEngine::Kind::Recv, client_fd);
    for (int i = 0; i < 500; ++i) {
        h.engine.complete_recv(multishot, "x", static_cast<uint16_t>(1 + i % 2), true);
        h.turn();
    }
    CHECK(h.engine.released.size() == 500);
    CHECK(h.forwarder.stats().peak_session_buffers == 1);
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Recv, client_fd));  // the multishot is still armed
    h.engine.complete(stalled, 1);
    h.turn();
    CHECK(h.engine.take(ScriptedEngine::Kind::Send, server_fd).bytes == std::string(500, 'x'));
}

TEST_CASE("a receive's room fits the free chunk slots, and under pressure a flow holding a buffer waits") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    // Eight slots, each a 1024-byte buffer: three buffers of room (a multishot may deliver one more,
    // and every two consecutive chunks hold more than a buffer, so seven slots are enough).
    auto recv = h.engine.take(ScriptedEngine::Kind::Recv, client_fd);
    CHECK(recv.length == 3 * 1024);
    h.engine.complete_recv(recv, std::string(1024, 'a'), 0);
    h.turn();
    auto send = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    recv = h.engine.take(ScriptedEngine::Kind::Recv, client_fd);
    CHECK(recv.length == 3 * 1024);  // seven slots free

    // Under pressure a flow that holds a buffer whose send is in flight asks for nothing more
    // until that send completes; then for one buffer.
    h.engine.under_pressure = true;
    h.engine.complete_recv(recv, std::string(1024, 'b'), 1);
    h.turn();
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Recv, client_fd));
    h.engine.complete(send, 1024);
    h.turn();
    send = h.engine.take(ScriptedEngine::Kind::Send, server_fd);
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Recv, client_fd));  // "b" is still queued
    h.engine.complete(send, 1024);
    h.turn();
    CHECK(h.engine.take(ScriptedEngine::Kind::Recv, client_fd).length == 1024);
}

TEST_CASE("a closed session whose requests never complete is released after its grace") {
    config::Config config = config_with_servers({"127.0.0.1:1"});
    config.rules[0].connect_timeout = std::chrono::milliseconds(100);
    Harness h(config);
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    const auto client_recv = h.engine.take(ScriptedEngine::Kind::Recv, client_fd);
    h.engine.complete_recv(client_recv, "stuck", 3);
    h.turn();
    REQUIRE(h.engine.has(ScriptedEngine::Kind::Send, server_fd));  // its send never completes
    h.engine.complete(h.engine.take(ScriptedEngine::Kind::Recv, client_fd), -ECONNRESET);
    h.turn();
    CHECK(h.engine.cancelled.count(server_fd) == 1);
    CHECK(h.forwarder.active_sessions() == 1);  // waiting for the cancelled send and receive
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    h.turn();
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.forwarder.stats().sessions_abandoned == 1);
    CHECK(h.engine.abandoned == std::vector<int>{server_fd});
    // The buffer the stuck send was reading went to the engine with the descriptor, not to the pool.
    CHECK(std::count(h.engine.released.begin(), h.engine.released.end(), 3) == 1);
}

TEST_CASE("a reset on one side cancels the other side and frees the slot only when all completed") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    h.engine.complete(h.engine.take(ScriptedEngine::Kind::Accept), pair.accepted, true);
    h.turn();
    const auto connect = h.engine.take(ScriptedEngine::Kind::Connect);
    h.engine.complete(connect, 0);
    h.turn();
    const auto client_recv = h.engine.take(ScriptedEngine::Kind::Recv, pair.accepted);
    const auto server_recv = h.engine.take(ScriptedEngine::Kind::Recv, connect.fd);
    h.engine.complete(client_recv, -ECONNRESET);
    h.turn();
    CHECK(h.engine.cancelled.count(connect.fd) == 1);
    CHECK(h.forwarder.active_sessions() == 1);  // the server recv is still in the kernel's hands
    h.engine.complete(server_recv, -ECANCELED);
    h.turn();
    CHECK(h.forwarder.active_sessions() == 0);
}

TEST_CASE("accept errors pause accepting and re-arm it later") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    const auto accept = h.engine.take(ScriptedEngine::Kind::Accept);
    h.engine.complete(accept, -EMFILE, false);
    h.turn();
    CHECK_FALSE(h.engine.has(ScriptedEngine::Kind::Accept));
    CHECK(h.forwarder.stats().accept_errors == 1);
    for (int i = 0; i < 50 && !h.engine.has(ScriptedEngine::Kind::Accept); ++i) {
        ::usleep(10 * 1000);
        h.turn();
    }
    CHECK(h.engine.has(ScriptedEngine::Kind::Accept));
}
