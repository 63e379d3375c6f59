// The session core on a listener with sni rules, driven by a recording engine: the ClientHello is
// read before any server is connected, the rule is chosen by it, and the bytes read go to the
// server first, unchanged, whatever the receives delivered meanwhile.
#include <doctest/doctest.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "forwarder_harness.hpp"
#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"

using namespace ringlb;
using test::LoopbackPair;
using test::RecordingEngine;

namespace {

// Rule "tls" (sni www.example.com) to 127.0.0.1:1, then, when `fallback`, rule "other" to
// 127.0.0.1:2, both on one listener.
config::Config sni_config(bool fallback) {
    config::Config config;
    config.source = "test";
    config::RuleConfig tls;
    tls.id = "tls";
    tls.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
    tls.sni = {"www.example.com"};
    tls.servers.push_back({*net::SocketAddress::parse("127.0.0.1:1"), 1});
    config.rules.push_back(tls);
    if (fallback) {
        config::RuleConfig other = tls;
        other.id = "other";
        other.sni.clear();
        other.servers = {{*net::SocketAddress::parse("127.0.0.1:2"), 1}};
        config.rules.push_back(other);
    }
    return config;
}

// openssl s_client's ClientHello for www.Example.com (a fuzz seed).
std::string captured_hello() {
    const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "client_hello" /
                      "openssl-tls13-sni-alpn";
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), path.string());
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct Harness : test::ForwarderHarness {
    using ForwarderHarness::ForwarderHarness;
    RecordingEngine::Request accept(const LoopbackPair& pair) {
        accept_client(pair);
        return engine.take(RecordingEngine::Kind::Recv, pair.accepted);
    }
};

}  // namespace

TEST_CASE("sni core: no connect before the ClientHello is whole; the bytes read go to the server first") {
    Harness h(sni_config(true));
    LoopbackPair pair;
    const auto receive = h.accept(pair);
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Connect));
    CHECK(h.limits.handshakes() == 1);

    const std::string hello = captured_hello();
    // A multishot receive: the first part, then the rest with the client's first data, then more
    // data while the server is being connected.
    h.engine.complete_recv(receive, hello.substr(0, 100), 0, true);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Connect));
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Recv));  // the armed receive delivers the rest
    h.engine.complete_recv(receive, hello.substr(100) + "early", 1, true);
    h.turn();
    const auto connect = h.engine.take(RecordingEngine::Kind::Connect);
    CHECK(connect.to.port() == 1);  // rule "tls", by the server name
    CHECK(h.limits.handshakes() == 0);
    h.engine.complete_recv(receive, "late", 2, false);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Send));  // nothing goes to a server not yet connected

    h.engine.complete(connect, 0);
    h.turn();
    auto send = h.engine.take(RecordingEngine::Kind::Send, connect.fd);
    CHECK(send.bytes == hello + "early");
    h.engine.complete(send, static_cast<int>(send.bytes.size()));
    h.turn();
    send = h.engine.take(RecordingEngine::Kind::Send, connect.fd);
    CHECK(send.bytes == "late");
}

TEST_CASE("sni core: a client that is not TLS goes to the rule without sni, its bytes unchanged") {
    Harness h(sni_config(true));
    LoopbackPair pair;
    h.engine.complete_recv(h.accept(pair), "GET / HTTP/1.0\r\n", 0);
    h.turn();
    const auto connect = h.engine.take(RecordingEngine::Kind::Connect);
    CHECK(connect.to.port() == 2);
    h.engine.complete(connect, 0);
    h.turn();
    CHECK(h.engine.take(RecordingEngine::Kind::Send, connect.fd).bytes == "GET / HTTP/1.0\r\n");
    CHECK(h.forwarder.stats().rejected_client_hello == 0);
}

TEST_CASE("sni core: without a rule lacking sni, a client that is not TLS is closed and counted") {
    Harness h(sni_config(false));
    LoopbackPair pair;
    h.engine.complete_recv(h.accept(pair), "GET / HTTP/1.0\r\n", 0);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Connect));
    CHECK(h.forwarder.stats().rejected_client_hello == 1);
    CHECK(h.forwarder.stats().rejected_no_rule == 0);
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.limits.handshakes() == 0);
}

TEST_CASE("sni core: a hello naming no rule's server is closed as matching no rule") {
    Harness h(sni_config(false));
    LoopbackPair pair;
    const std::string hello = captured_hello();
    std::string other_name = hello;
    const auto at = other_name.find("www.Example.com");
    REQUIRE(at != std::string::npos);
    other_name.replace(at, 3, "xyz");  // same length: the hello stays well-formed
    h.engine.complete_recv(h.accept(pair), other_name, 0);
    h.turn();
    CHECK_FALSE(h.engine.has(RecordingEngine::Kind::Connect));
    CHECK(h.forwarder.stats().rejected_no_rule == 1);
    CHECK(h.forwarder.stats().rejected_client_hello == 0);
}
