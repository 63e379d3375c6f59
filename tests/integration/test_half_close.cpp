// Proves that a FIN from one side is forwarded only after that side's pending bytes, and that the
// other direction keeps flowing afterwards (TCP half-close).
#include <sys/socket.h>

#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "prng_stream.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

std::string pseudo_random_bytes(std::size_t size, std::uint64_t seed) {
    std::string bytes(size, '\0');
    PrngStream(seed).fill(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(bytes.data()), size));
    return bytes;
}

// Sends `payload`, shuts down writing, then reads everything until the connection ends.
ReadResult send_then_half_close(std::uint16_t port, const std::string& payload) {
    UniqueFd client = connect_to(port);
    if (!client.valid()) return {};
    // The echo comes back while we are still sending; EchoBackend buffers it, so sending all
    // first cannot deadlock.
    if (!send_all(client.get(), payload, 20s)) return {};
    ::shutdown(client.get(), SHUT_WR);
    return read_until_closed(client.get(), 20s);
}

}  // namespace

TEST_CASE("half-close: client FIN reaches the server, and the server's reply after it still arrives") {
    // "bye" comes 300 ms after the backend saw the FIN: the session must stay up for it.
    EchoBackend backend("bye", 300ms);
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    SUBCASE("small message: client gets \"hellobye\" then EOF") {
        ReadResult reply = send_then_half_close(port, "hello");
        CHECK(reply.data == "hellobye");
        CHECK(std::string(to_string(reply.end)) == "EOF");
    }
    SUBCASE("4 MiB: the FIN is forwarded only after every pending byte") {
        std::string payload = pseudo_random_bytes(4 * 1024 * 1024, 42);
        ReadResult reply = send_then_half_close(port, payload);
        CHECK(reply.data.size() == payload.size() + 3);
        CHECK((reply.data == payload + "bye"));
        CHECK(std::string(to_string(reply.end)) == "EOF");
    }
    CHECK(backend.wait_finished(1, 5s));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("half-close: server FIN reaches the client, and the client's data after it still arrives") {
    const std::string greeting = "server speaks first and then stops writing\n";
    WriteFirstBackend backend(greeting);
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    ReadResult first = read_until_closed(client.get(), 5s);
    CHECK(first.data == greeting);
    REQUIRE(std::string(to_string(first.end)) == "EOF");
    // Give a proxy that wrongly tears the session down at the first FIN time to do so.
    std::this_thread::sleep_for(300ms);

    // The server can no longer write, but must still receive everything the client sends now.
    std::string payload = pseudo_random_bytes(256 * 1024, 7);
    CHECK(send_all(client.get(), payload, 10s));
    ::shutdown(client.get(), SHUT_WR);

    REQUIRE(backend.wait_finished(1, 5s));
    auto received = backend.received();
    REQUIRE(received.size() == 1);
    CHECK(received[0].size() == payload.size());  // the count the backend reports
    CHECK((received[0] == payload));
    CHECK_CLEAN_EXIT(ringlb);
}
