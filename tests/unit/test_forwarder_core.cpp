// The session core driven by a recording engine: which requests it makes and how it reacts to
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

#include "forwarder_harness.hpp"
#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"

using namespace ringlb;
using engine::Completion;
using engine::UserData;

namespace {

using test::LoopbackPair;
using test::RecordingEngine;

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

struct Harness : test::ForwarderHarness {
    using ForwarderHarness::ForwarderHarness;

    // Accepts the pair's connection and completes its connect: the session is established.
    struct Established {
        int client_fd;
        int server_fd;
    };
    Established establish(const LoopbackPair& pair) {
        accept_client(pair);
        const auto connect = engine.take(RecordingEngine::Kind::Connect);
        engine.complete(connect, 0);
        turn();
        return {pair.accepted, connect.fd};
    }
};

}  // namespace

TEST_CASE("a refused connect moves the client to the next server, each server once") {
    Harness h(config_with_servers({"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
    LoopbackPair pair;
    const auto accept = h.engine.take(RecordingEngine::Kind::Accept);
    h.engine.complete(accept, pair.accepted, true);
    h.turn();
    std::set<uint16_t> ports;
    for (int attempt = 0; attempt < 3; ++attempt) {
        const auto connect = h.engine.take(RecordingEngine::Kind::Connect);
        ports.insert(connect.to.port());
        h.engine.complete(connect, -ECONNREFUSED);
        h.turn();
    }
    CHECK(ports == std::set<uint16_t>{1, 2, 3});
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Connect));
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.forwarder.stats().connect_failures == 3);
    char byte;
    CHECK(::recv(pair.client.get(), &byte, 1, 0) == 0);  // the client was closed with a FIN
}

TEST_CASE("bytes go through in order and a client FIN reaches the server after them") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);

    const auto client_recv = h.engine.take(RecordingEngine::Kind::Recv, client_fd);
    REQUIRE(h.engine.has(RecordingEngine::Kind::Recv, server_fd));
    h.engine.complete_recv(client_recv, "hello", 2);
    h.turn();
    auto send = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    CHECK(send.bytes == "hello");
    CHECK_FALSE(send.fin_follows);  // the client may send more
    // The next receive is already asked for while the send is in flight.
    const auto client_eof = h.engine.take(RecordingEngine::Kind::Recv, client_fd);
    h.engine.complete(client_eof, 0);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Shutdown));  // not before "hello" is out

    h.engine.complete(send, 2);  // a short send
    h.turn();
    send = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    CHECK(send.bytes == "llo");
    CHECK(send.fin_follows);  // the client's FIN came meanwhile: these are its last bytes
    CHECK(h.engine.released.empty());
    h.engine.complete(send, 3);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{2});
    const auto shutdown = h.engine.take(RecordingEngine::Kind::Shutdown, server_fd);

    // The other direction still flows after the client's half-close.
    h.engine.complete(shutdown, 0);
    const auto server_recv = h.engine.take(RecordingEngine::Kind::Recv, server_fd);
    h.engine.complete_recv(server_recv, "reply", 1);
    h.turn();
    const auto reply = h.engine.take(RecordingEngine::Kind::Send, client_fd);
    CHECK(reply.bytes == "reply");
    CHECK(h.forwarder.active_sessions() == 1);

    h.engine.complete(reply, 5);
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Recv, server_fd), 0);
    h.turn();
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Shutdown, client_fd), 0);
    h.turn();
    CHECK(h.forwarder.active_sessions() == 0);  // both directions finished: the session is gone
}

TEST_CASE("bytes the FIN came right behind are sent as the last ones, and the FIN follows their send at once") {
    for (const bool multishot : {true, false}) {
        CAPTURE(multishot);
        Harness h(config_with_servers({"127.0.0.1:1"}));
        LoopbackPair pair;
        const auto [client_fd, server_fd] = h.establish(pair);

        const auto server_recv = h.engine.take(RecordingEngine::Kind::Recv, server_fd);
        h.engine.complete_last_recv(server_recv, "reply", 1, multishot);
        h.turn();
        const auto reply = h.engine.take(RecordingEngine::Kind::Send, client_fd);
        CHECK(reply.bytes == "reply");
        CHECK(reply.fin_follows);
        CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Recv, server_fd));  // nothing more can come
        CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Shutdown));        // not before the bytes are out

        // A receive still armed completes with the end of the stream as well: nothing changes.
        if (multishot) h.engine.complete(server_recv, 0);
        h.engine.complete(reply, 5);
        h.turn();
        h.engine.complete(h.engine.take(RecordingEngine::Kind::Shutdown, client_fd), 0);
        h.turn();
        CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Shutdown));
        CHECK(h.forwarder.active_sessions() == 1);  // the client's direction is still open

        h.engine.complete(h.engine.take(RecordingEngine::Kind::Recv, client_fd), 0);
        h.turn();
        h.engine.complete(h.engine.take(RecordingEngine::Kind::Shutdown, server_fd), 0);
        h.turn();
        CHECK(h.forwarder.active_sessions() == 0);
    }
}

TEST_CASE("chunks queued behind a send leave together in one gathered send") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    // 1000 bytes of a 1024-byte buffer: what follows cannot join them in their buffer.
    const std::string one(1000, '1');
    const std::string big(1000, 'b');
    const std::string other(100, 'o');

    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, client_fd), one, 0);
    h.turn();
    auto first = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    CHECK(first.bytes == one);
    // Two more chunks arrive while "one" is in flight: they wait, and then go out as one send.
    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, client_fd), big, 1);
    h.turn();
    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, client_fd), other, 2);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Send, server_fd));
    h.engine.complete(first, 1000);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{0});
    auto gathered = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    CHECK(gathered.bytes == big + other);

    // A short send that ends inside the second chunk frees the first buffer only.
    h.engine.complete(gathered, 1003);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{0, 1});
    auto rest = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    CHECK(rest.bytes == other.substr(3));
    h.engine.complete(rest, 97);
    h.turn();
    CHECK(h.engine.released == std::vector<uint16_t>{0, 1, 2});
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Send, server_fd));
}

TEST_CASE("tiny segments join the last queued chunk: a flow holds buffers by its bytes, not its segments") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);

    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, client_fd), "a", 0);
    h.turn();
    auto stalled = h.engine.take(RecordingEngine::Kind::Send, server_fd);  // never completes for now
    // A multishot receive delivers 500 one-byte segments into buffers 1 and 2 in turn: each is
    // copied behind the queued "a" and its buffer goes back at once.
    const auto multishot = h.engine.take(RecordingEngine::Kind::Recv, client_fd);
    for (int i = 0; i < 500; ++i) {
        h.engine.complete_recv(multishot, "x", static_cast<uint16_t>(1 + i % 2), true);
        h.turn();
    }
    CHECK(h.engine.released.size() == 500);
    CHECK(h.forwarder.stats().peak_session_buffers == 1);
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Recv, client_fd));  // the multishot is still armed
    h.engine.complete(stalled, 1);
    h.turn();
    CHECK(h.engine.take(RecordingEngine::Kind::Send, server_fd).bytes == std::string(500, 'x'));
}

TEST_CASE("a receive's room fits the free chunk slots, and under pressure a flow holding a buffer waits") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    // Eight slots, each a 1024-byte buffer: three buffers of room (a multishot may deliver one more,
    // and every two consecutive chunks hold more than a buffer, so seven slots are enough).
    auto recv = h.engine.take(RecordingEngine::Kind::Recv, client_fd);
    CHECK(recv.length == 3 * 1024);
    h.engine.complete_recv(recv, std::string(1024, 'a'), 0);
    h.turn();
    auto send = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    recv = h.engine.take(RecordingEngine::Kind::Recv, client_fd);
    CHECK(recv.length == 3 * 1024);  // seven slots free

    // Under pressure a flow that holds a buffer whose send is in flight asks for nothing more
    // until that send completes; then for one buffer.
    h.engine.under_pressure = true;
    h.engine.complete_recv(recv, std::string(1024, 'b'), 1);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Recv, client_fd));
    h.engine.complete(send, 1024);
    h.turn();
    send = h.engine.take(RecordingEngine::Kind::Send, server_fd);
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Recv, client_fd));  // "b" is still queued
    h.engine.complete(send, 1024);
    h.turn();
    CHECK(h.engine.take(RecordingEngine::Kind::Recv, client_fd).length == 1024);
}

TEST_CASE("a closed session whose requests never complete is released after its grace") {
    config::Config config = config_with_servers({"127.0.0.1:1"});
    config.rules[0].connect_timeout = std::chrono::milliseconds(100);
    Harness h(config);
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    const auto client_recv = h.engine.take(RecordingEngine::Kind::Recv, client_fd);
    h.engine.complete_recv(client_recv, "stuck", 3);
    h.turn();
    REQUIRE(h.engine.has(RecordingEngine::Kind::Send, server_fd));  // its send never completes
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Recv, client_fd), -ECONNRESET);
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
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Accept), pair.accepted, true);
    h.turn();
    const auto connect = h.engine.take(RecordingEngine::Kind::Connect);
    h.engine.complete(connect, 0);
    h.turn();
    const auto client_recv = h.engine.take(RecordingEngine::Kind::Recv, pair.accepted);
    const auto server_recv = h.engine.take(RecordingEngine::Kind::Recv, connect.fd);
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
    const auto accept = h.engine.take(RecordingEngine::Kind::Accept);
    h.engine.complete(accept, -EMFILE, false);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Accept));
    CHECK(h.forwarder.stats().accept_errors == 1);
    for (int i = 0; i < 50 && !h.engine.has(RecordingEngine::Kind::Accept); ++i) {
        ::usleep(10 * 1000);
        h.turn();
    }
    CHECK(h.engine.has(RecordingEngine::Kind::Accept));
}

// ---- endings -------------------------------------------------------------------------------

namespace {

// What the client's end of a loopback pair reads next, without waiting long: "eof", "reset",
// "data" or "nothing".
std::string next_event(int fd) {
    for (int i = 0; i < 200; ++i) {
        char byte;
        const ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT);
        if (n == 0) return "eof";
        if (n > 0) return "data";
        if (errno == ECONNRESET) return "reset";
        if (errno != EAGAIN && errno != EWOULDBLOCK) return std::string("error ") + std::strerror(errno);
        ::usleep(5 * 1000);
    }
    return "nothing";
}

config::Config config_with_timeout(std::chrono::milliseconds timeout) {
    config::Config config = config_with_servers({"127.0.0.1:1"});
    config.rules[0].timeout = timeout;
    return config;
}

// Runs turns until the idle timeout has closed the session and its pending requests are cancelled.
void let_idle_timeout_fire(Harness& h, int server_fd) {
    for (int i = 0; i < 100 && h.engine.cancelled.count(server_fd) == 0; ++i) {
        ::usleep(10 * 1000);
        h.turn();
    }
    REQUIRE(h.engine.cancelled.count(server_fd) == 1);
    while (!h.engine.requests.empty()) {
        const auto request = h.engine.requests.front();
        h.engine.requests.pop_front();
        if (request.kind != RecordingEngine::Kind::Accept) h.engine.complete(request, -ECANCELED);
    }
    h.turn();
}

}  // namespace

TEST_CASE("a session is quiescent only with nothing half-closed, queued or in flight either way") {
    core::Session session;
    CHECK(core::is_quiescent(session));
    for (core::Side source : {core::Side::Client, core::Side::Server}) {
        CAPTURE(core::to_string(source));
        const auto changed = [&](auto change) {
            core::Session copy;
            change(copy.flow_from(source));
            return core::is_quiescent(copy);
        };
        CHECK_FALSE(changed([](core::Flow& flow) { flow.eof = true; }));  // half-closed
        CHECK_FALSE(changed([](core::Flow& flow) {                       // read, not yet sent
            flow.push({0, 0, 10});
            flow.queued_bytes = 10;
        }));
        CHECK_FALSE(changed([](core::Flow& flow) { flow.send_pending = true; }));      // being sent
        CHECK_FALSE(changed([](core::Flow& flow) { flow.shutdown_pending = true; }));  // FIN on its way
        // A receive waiting for bytes that have not come holds nothing: still quiescent.
        CHECK(changed([](core::Flow& flow) { flow.recv_pending = true; }));
        CHECK(changed([](core::Flow& flow) { flow.delivered_bytes = 1000; }));
    }
}

TEST_CASE("a cut resets each peer still mid-stream; a peer done both ways, or the one that failed, is not reset") {
    core::Session session;
    session.client_fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    session.server_fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    using core::PeerEnd;
    using core::Side;

    // Connecting: no server connection to speak of yet.
    CHECK(core::peer_end(session, Side::Server, true, std::nullopt) == PeerEnd::None);
    CHECK(core::peer_end(session, Side::Client, true, std::nullopt) == PeerEnd::Reset);
    CHECK(core::peer_end(session, Side::Client, false, std::nullopt) == PeerEnd::Fin);
    session.established = true;

    // The client half-closed and its FIN reached the server: both wait for the reply.
    session.upstream.eof = session.upstream.finished = true;
    CHECK_FALSE(core::is_quiescent(session));
    CHECK_FALSE(core::finished_both_ways(session, Side::Client));
    CHECK_FALSE(core::finished_both_ways(session, Side::Server));
    CHECK(core::peer_end(session, Side::Client, true, std::nullopt) == PeerEnd::Reset);
    CHECK(core::peer_end(session, Side::Server, true, std::nullopt) == PeerEnd::Reset);
    CHECK(core::peer_end(session, Side::Server, true, Side::Server) == PeerEnd::Peer);

    // The server's FIN came and was passed on: both peers are done both ways.
    session.downstream.eof = session.downstream.finished = true;
    CHECK(core::finished_both_ways(session, Side::Client));
    CHECK(core::finished_both_ways(session, Side::Server));
    CHECK(core::peer_end(session, Side::Client, true, std::nullopt) == PeerEnd::Fin);
    CHECK(core::peer_end(session, Side::Server, true, std::nullopt) == PeerEnd::Fin);

    // The server's FIN came but is still queued behind bytes for the client: the client is not done.
    session.downstream.finished = false;
    CHECK_FALSE(core::finished_both_ways(session, Side::Client));
    CHECK(core::finished_both_ways(session, Side::Server));
    CHECK(core::peer_end(session, Side::Client, true, Side::Server) == PeerEnd::Reset);
}

TEST_CASE("idle timeout: a client that half-closed and waits for its reply gets a reset") {
    Harness h(config_with_timeout(std::chrono::milliseconds(30)));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, client_fd), "request", 0);
    h.turn();
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Send, server_fd), 7);
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Recv, client_fd), 0);  // the client's FIN
    h.turn();
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Shutdown, server_fd), 0);
    h.turn();

    let_idle_timeout_fire(h, server_fd);
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.forwarder.stats().idle_timeouts == 1);
    CHECK(next_event(pair.client.get()) == "reset");
}

TEST_CASE("idle timeout: a quiet keep-alive session ends with a FIN") {
    Harness h(config_with_timeout(std::chrono::milliseconds(30)));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, client_fd), "request", 0);
    h.turn();
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Send, server_fd), 7);
    h.turn();
    h.engine.complete_recv(h.engine.take(RecordingEngine::Kind::Recv, server_fd), "reply", 1);
    h.turn();
    h.engine.complete(h.engine.take(RecordingEngine::Kind::Send, client_fd), 5);
    h.turn();

    let_idle_timeout_fire(h, server_fd);
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(next_event(pair.client.get()) == "eof");
}

TEST_CASE("idle timeout: bytes the client sent that ringlb has not read yet make the ending a reset") {
    Harness h(config_with_timeout(std::chrono::milliseconds(30)));
    LoopbackPair pair;
    const auto [client_fd, server_fd] = h.establish(pair);
    // The engine has not taken them yet: from the session's flows the session looks quiescent.
    REQUIRE(::send(pair.client.get(), "late", 4, 0) == 4);
    let_idle_timeout_fire(h, server_fd);
    CHECK(next_event(pair.client.get()) == "reset");
}

TEST_CASE("abort_all_sessions: a session mid-stream is reset and released at once, a quiescent one gets a FIN") {
    Harness h(config_with_servers({"127.0.0.1:1"}));
    LoopbackPair busy_pair, quiet_pair;
    // One armed accept brings both clients.
    const auto accept = h.engine.take(RecordingEngine::Kind::Accept);
    h.engine.complete(accept, busy_pair.accepted, true);
    h.engine.complete(accept, quiet_pair.accepted, true);
    h.turn();
    for (int i = 0; i < 2; ++i) h.engine.complete(h.engine.take(RecordingEngine::Kind::Connect), 0);
    h.turn();
    REQUIRE(h.forwarder.active_sessions() == 2);
    const auto busy_recv = h.engine.take(RecordingEngine::Kind::Recv, busy_pair.accepted);
    h.engine.complete_recv(busy_recv, "in flight", 0);
    h.turn();
    REQUIRE(h.engine.has(RecordingEngine::Kind::Send));  // the send never completes

    h.forwarder.abort_all_sessions(core::EndCause::Error);
    CHECK(h.forwarder.active_sessions() == 0);  // no waiting for the requests still pending
    CHECK(next_event(busy_pair.client.get()) == "reset");
    CHECK(next_event(quiet_pair.client.get()) == "eof");
}

TEST_CASE("a forwarder destroyed with sessions still open resets the ones mid-stream") {
    LoopbackPair pair;
    {
        Harness h(config_with_servers({"127.0.0.1:1"}));
        const auto [client_fd, server_fd] = h.establish(pair);
        h.engine.complete(h.engine.take(RecordingEngine::Kind::Recv, client_fd), 0);  // half-closed
        h.turn();
        (void)server_fd;
    }
    CHECK(next_event(pair.client.get()) == "reset");
}
