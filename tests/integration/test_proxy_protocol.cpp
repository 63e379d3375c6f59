// PROXY protocol both ways, checked against the bytes on the wire: send_proxy puts the header
// before any client byte; accept_proxy takes the client's address from it (for clients, limits
// and hashing) and closes connections whose header is missing, malformed or late.
#include <arpa/inet.h>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// Through ringlb: read the backend's greeting, send `payload`, half-close, wait for the end.
void talk(std::uint16_t port, const std::string& payload) {
    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    CHECK(read_line(client.get()).data == "hi");
    REQUIRE(send_all(client.get(), payload));
    ::shutdown(client.get(), SHUT_WR);
    CHECK(read_until_closed(client.get()).end == ReadEnd::Eof);
}

std::string last_received(const WriteFirstBackend& backend, std::size_t count) {
    for (int i = 0; i < 100 && backend.received().size() < count; ++i) std::this_thread::sleep_for(20ms);
    const auto all = backend.received();
    return all.size() < count ? "<nothing>" : all[count - 1];
}

std::string v2_header_ipv4(const char* source, uint16_t source_port, const char* destination, uint16_t destination_port) {
    std::string header("\r\n\r\n\0\r\nQUIT\n", 12);
    header += '\x21';  // version 2, PROXY
    header += '\x11';  // AF_INET, STREAM
    header += std::string("\0\x0c", 2);
    in_addr address{};
    ::inet_pton(AF_INET, source, &address);
    header.append(reinterpret_cast<const char*>(&address), 4);
    ::inet_pton(AF_INET, destination, &address);
    header.append(reinterpret_cast<const char*>(&address), 4);
    const uint16_t ports[2] = {htons(source_port), htons(destination_port)};
    header.append(reinterpret_cast<const char*>(ports), 4);
    return header;
}

}  // namespace

TEST_CASE("PROXY: send_proxy v1 and v2 put the client's address first, then the client's bytes") {
    WriteFirstBackend backend("hi\n");
    const std::uint16_t port_v1 = find_free_port(), port_v2 = find_free_port();
    RuleSpec v1;
    v1.id = "v1";
    v1.listen = {loopback_endpoint(port_v1)};
    v1.servers = {{backend.endpoint()}};
    v1.extra_lines = {"send_proxy = \"v1\""};
    RuleSpec v2 = v1;
    v2.id = "v2";
    v2.listen = {loopback_endpoint(port_v2)};
    v2.extra_lines = {"send_proxy = \"v2\""};
    RinglbProcess ringlb(render_config({}, {v1, v2}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    talk(port_v1, "hello");
    const std::string got_v1 = last_received(backend, 1);
    INFO("v1 bytes: ", got_v1);
    const std::string prefix = "PROXY TCP4 127.0.0.1 127.0.0.1 ";
    REQUIRE(got_v1.rfind(prefix, 0) == 0);
    const auto crlf = got_v1.find("\r\n");
    REQUIRE(crlf != std::string::npos);
    CHECK(got_v1.substr(crlf + 2) == "hello");
    CHECK(got_v1.substr(0, crlf).ends_with(" " + std::to_string(port_v1)));

    talk(port_v2, "world");
    const std::string got_v2 = last_received(backend, 2);
    REQUIRE(got_v2.size() == 28 + 5);
    CHECK(got_v2.substr(0, 12) == std::string("\r\n\r\n\0\r\nQUIT\n", 12));
    CHECK(got_v2[12] == '\x21');
    CHECK(got_v2[13] == '\x11');
    CHECK(got_v2.substr(16, 4) == std::string("\x7f\0\0\x01", 4));
    CHECK(static_cast<uint8_t>(got_v2[26]) * 256 + static_cast<uint8_t>(got_v2[27]) == port_v2);
    CHECK(got_v2.substr(28) == "world");
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("PROXY: accept_proxy uses the announced client for clients and passes it on; bad headers are closed") {
    WriteFirstBackend backend("hi\n");
    const std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.id = "behind-lb";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{backend.endpoint()}};
    rule.connect_timeout = "1s";
    rule.extra_lines = {"accept_proxy = true", "send_proxy = \"v1\"", "clients = [\"10.1.2.0/24\"]"};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // v1 header split over two writes, with client data right behind it.
    {
        UniqueFd client = connect_to(port);
        REQUIRE(send_all(client.get(), "PROXY TCP4 10.1.2.3 192.0.2.1 5555 "));
        std::this_thread::sleep_for(50ms);
        REQUIRE(send_all(client.get(), "8080\r\nfirst bytes"));
        CHECK(read_line(client.get()).data == "hi");
        ::shutdown(client.get(), SHUT_WR);
        CHECK(read_until_closed(client.get()).end == ReadEnd::Eof);
    }
    CHECK(last_received(backend, 1) == "PROXY TCP4 10.1.2.3 127.0.0.1 5555 " + std::to_string(port) + "\r\nfirst bytes");

    // v2 from an address the rule takes.
    {
        UniqueFd client = connect_to(port);
        REQUIRE(send_all(client.get(), v2_header_ipv4("10.1.2.77", 4444, "192.0.2.1", 80) + "v2 data"));
        CHECK(read_line(client.get()).data == "hi");
        ::shutdown(client.get(), SHUT_WR);
        CHECK(read_until_closed(client.get()).end == ReadEnd::Eof);
    }
    CHECK(last_received(backend, 2).rfind("PROXY TCP4 10.1.2.77 127.0.0.1 4444 ", 0) == 0);

    const std::size_t before = backend.accepted();
    const auto closed_without_server = [&](const std::string& first_bytes) {
        UniqueFd client = connect_to(port);
        if (!first_bytes.empty()) send_all(client.get(), first_bytes);
        return read_until_closed(client.get(), 5s).closed();
    };
    CHECK(closed_without_server("GET / HTTP/1.0\r\n\r\n"));                          // no header at all
    CHECK(closed_without_server("PROXY TCP4 10.1.2.3 1.2.3.4 99999 80\r\n"));         // port out of range
    CHECK(closed_without_server("PROXY TCP4 172.16.0.1 1.2.3.4 1000 80\r\nx"));       // not in clients
    CHECK(closed_without_server(""));                                                // silent: closed after connect_timeout
    CHECK(closed_without_server("PROXY TCP4 10.1.2.3 1.2.3.4 1000"));                // partial, then silence
    CHECK(backend.accepted() == before);
    CHECK(ringlb.running());
    CHECK_CLEAN_EXIT(ringlb);
}
