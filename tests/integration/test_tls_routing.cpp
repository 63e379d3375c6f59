// TLS passthrough routed by the ClientHello: real `openssl s_client` clients and `openssl s_server`
// backends (a certificate per backend, so the client's output names the backend that answered),
// the handshake completing through ringlb; clients that are not TLS or send a bad, late or
// oversized hello; a hello one byte per TCP segment; a PROXY header before the hello and one sent
// before it to the server.
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "openssl_tools.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

RuleSpec rule(const std::string& id, std::uint16_t port, const std::string& server, std::vector<std::string> extra = {}) {
    RuleSpec spec = one_server_rule(id, port, server);
    spec.extra_lines = std::move(extra);
    return spec;
}

long long stat(std::uint16_t admin_port, std::string_view key) {
    return reply_value(admin_command(admin_port, "show stats"), key).value_or(-1);
}

GlobalSpec with_admin(std::uint16_t admin_port) {
    GlobalSpec global;
    global.extra_lines = {"log_connections = true"};
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    return global;
}

// Sends `bytes` one byte per TCP segment (TCP_NODELAY, a write per byte, a pause between).
void send_byte_by_byte(int fd, std::string_view bytes) {
    const int one = 1;
    REQUIRE(::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    for (const char byte : bytes) {
        REQUIRE(::send(fd, &byte, 1, MSG_NOSIGNAL) == 1);
        std::this_thread::sleep_for(1ms);
    }
}

}  // namespace

TEST_CASE("sni: openssl clients reach the backend their server name and ALPN choose, the handshake through ringlb") {
    if (!openssl_available()) {
        MESSAGE("openssl not found: skipped");
        return;
    }
    TempDir dir;
    TlsReverseServer a(dir, "backend-a"), b(dir, "backend-b"), rest(dir, "backend-rest");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global = with_admin(admin_port);
    const std::uint16_t metrics_port = find_free_port();
    global.trailing_lines.insert(global.trailing_lines.end(), {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\""});
    RinglbProcess ringlb(render_config(
        global, {rule("a", port, a.endpoint(), {"sni = [\"a.example\", \"*.wild.example\"]"}),
                 rule("b", port, b.endpoint(), {"sni = \"b.example\"", "alpn = [\"h2\"]"}),
                 rule("rest", port, rest.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    struct Case {
        const char* name;
        const char* alpn;
        const char* backend;
    };
    const Case cases[] = {
        {"a.example", "", "backend-a"},
        {"A.Example", "http/1.1", "backend-a"},  // names compare case-insensitively
        {"x.wild.example", "", "backend-a"},
        {"y.x.wild.example", "", "backend-rest"},  // the star is one label
        {"wild.example", "", "backend-rest"},
        {"b.example", "h2", "backend-b"},
        {"b.example", "http/1.1,h2", "backend-b"},  // one of the offered protocols is enough
        {"b.example", "http/1.1", "backend-rest"},  // sni and alpn both needed
        {"", "h2", "backend-rest"},                 // no server name at all
    };
    for (const Case& c : cases) {
        INFO("server name \"", std::string(c.name), "\", alpn \"", std::string(c.alpn), "\"");
        const std::string output = tls_round_trip(port, c.name, c.alpn, "hello through ringlb");
        INFO("s_client output:\n", output);
        CHECK(output.find("CN = " + std::string(c.backend)) != std::string::npos);
        CHECK(output.find("blgnir hguorht olleh") != std::string::npos);
        if (std::string_view(c.alpn) == "h2") CHECK(output.find("ALPN protocol: h2") != std::string::npos);
    }
    // The connection log names the server name each client sent; the metrics the patterns matched.
    CHECK(ringlb.wait_for_log("rule=a sni=x.wild.example server=" + a.endpoint()));
    CHECK(ringlb.wait_for_log("rule=rest sni=y.x.wild.example server=" + rest.endpoint()));
    const std::string metrics = http_get(metrics_port, "/metrics");
    INFO(metrics);
    CHECK(metrics.find("ringlb_rule_sni_sessions_total{rule=\"a\",sni=\"a.example\"} 2") != std::string::npos);
    CHECK(metrics.find("ringlb_rule_sni_sessions_total{rule=\"a\",sni=\"*.wild.example\"} 1") != std::string::npos);
    CHECK(metrics.find("ringlb_rule_sni_sessions_total{rule=\"b\",sni=\"b.example\"} 2") != std::string::npos);
    CHECK(stat(admin_port, "rejected_client_hello") == 0);
}

TEST_CASE("sni: clients without a usable ClientHello go to a rule without sni, or are closed and counted") {
    EchoBackend echo;
    NameBackend named("tls-backend");
    const std::uint16_t with_fallback = find_free_port(), only_sni = find_free_port(), admin_port = find_free_port();
    RuleSpec plain = rule("plain", with_fallback, echo.endpoint());
    RuleSpec tls_only = rule("tls-only", only_sni, named.endpoint(), {"sni = \"www.example.com\""});
    tls_only.connect_timeout = "500ms";
    RinglbProcess ringlb(render_config(
        with_admin(admin_port),
        {rule("tls", with_fallback, named.endpoint(), {"sni = \"www.example.com\""}), plain, tls_only}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    SUBCASE("a plain-text client falls to the rule without sni, its bytes intact") {
        UniqueFd client = connect_to(with_fallback);
        REQUIRE(send_all(client.get(), "GET / HTTP/1.0\r\n\r\n"));
        CHECK(read_exactly(client.get(), 18).data == "GET / HTTP/1.0\r\n\r\n");
    }
    SUBCASE("a real hello for the name goes to its rule") {
        UniqueFd client = connect_to(with_fallback);
        REQUIRE(send_all(client.get(), captured_hello()));
        CHECK(read_line(client.get()).data == "tls-backend");
    }
    SUBCASE("not TLS, a garbage or oversized hello, a client that gives up: closed and counted") {
        const std::string oversized("\x16\x03\x01\x40\x00\x01\x00\x40\x00", 9);  // a 16 KiB hello: over the bound
        const std::string alert("\x15\x03\x03\x00\x02\x02\x28", 7);
        const std::string hello = captured_hello();
        int closed = 0;
        for (const std::string& bytes : {std::string("GET / HTTP/1.0\r\n\r\n"), oversized, alert,
                                         hello.substr(0, hello.size() / 2) /* the rest never comes */}) {
            UniqueFd client = connect_to(only_sni);
            REQUIRE(send_all(client.get(), bytes));
            const ReadResult result = read_until_closed(client.get(), 5s);
            CHECK(result.data.empty());
            CHECK(result.end != ReadEnd::Timeout);
            ++closed;
        }
        // Half a hello, then the client's FIN: the rest never comes.
        UniqueFd gives_up = connect_to(only_sni);
        REQUIRE(send_all(gives_up.get(), hello.substr(0, 40)));
        ::shutdown(gives_up.get(), SHUT_WR);
        CHECK(read_until_closed(gives_up.get(), 5s).end != ReadEnd::Timeout);
        ++closed;
        for (int i = 0; i < 100 && stat(admin_port, "rejected_client_hello") < closed; ++i) std::this_thread::sleep_for(20ms);
        CHECK(stat(admin_port, "rejected_client_hello") == closed);
        CHECK(ringlb.wait_for_log("end=client-hello"));
        CHECK(named.accepted() == 0);
    }
    SUBCASE("nothing within connect_timeout: closed, not held; waiting, it holds no server connection") {
        UniqueFd silent = connect_to(only_sni);
        const auto started = Clock::now();
        for (int i = 0; i < 50 && stat(admin_port, "handshakes_active") < 1; ++i) std::this_thread::sleep_for(5ms);
        CHECK(stat(admin_port, "handshakes_active") == 1);
        CHECK(named.accepted() == 0);
        const ReadResult result = read_until_closed(silent.get(), 5s);
        CHECK(result.end != ReadEnd::Timeout);
        CHECK(Clock::now() - started >= 400ms);  // the rule's connect_timeout (500 ms), not sooner
        CHECK(stat(admin_port, "rejected_client_hello") == 1);
        CHECK(stat(admin_port, "handshakes_active") == 0);
    }
}

TEST_CASE("sni: clients awaiting their ClientHello count under max_handshakes") {
    NameBackend named("tls-backend");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global = with_admin(admin_port);
    global.extra_lines.push_back("max_handshakes = 1");
    RinglbProcess ringlb(render_config(global, {rule("tls", port, named.endpoint(), {"sni = \"www.example.com\""})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd waiting = connect_to(port);
    for (int i = 0; i < 100 && stat(admin_port, "handshakes_active") < 1; ++i) std::this_thread::sleep_for(5ms);
    REQUIRE(stat(admin_port, "handshakes_active") == 1);
    UniqueFd refused = connect_to(port);
    CHECK(read_until_closed(refused.get(), 5s).end != ReadEnd::Timeout);
    CHECK(stat(admin_port, "rejected_max_handshakes") == 1);
    // The one waiting is still served once its hello comes.
    REQUIRE(send_all(waiting.get(), captured_hello()));
    CHECK(read_line(waiting.get()).data == "tls-backend");
}

TEST_CASE("sni: a ClientHello one byte per TCP segment is routed by its name and forwarded byte for byte") {
    EchoBackend echo;
    NameBackend other("other");
    const std::uint16_t port = find_free_port();
    RinglbProcess ringlb(render_config(
        {}, {rule("named", port, echo.endpoint(), {"sni = \"*.example.com\""}), rule("other", port, other.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const std::string hello = captured_hello();
    UniqueFd client = connect_to(port);
    send_byte_by_byte(client.get(), hello);
    const ReadResult echoed = read_exactly(client.get(), hello.size());
    CHECK(echoed.data == hello);
    CHECK(other.accepted() == 0);
}

TEST_CASE("sni: a PROXY header, then the ClientHello; send_proxy puts its header before the hello") {
    WriteFirstBackend backend("hi\n");
    const std::uint16_t port = find_free_port();
    RinglbProcess ringlb(render_config(
        {}, {rule("proxied", port, backend.endpoint(),
                  {"accept_proxy = true", "proxy_from = [\"127.0.0.1\"]", "send_proxy = \"v1\"", "sni = \"www.example.com\""})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const std::string hello = captured_hello();
    const std::string incoming = "PROXY TCP4 203.0.113.7 127.0.0.1 40000 " + std::to_string(port) + "\r\n";
    SUBCASE("in one write") {
        UniqueFd client = connect_to(port);
        REQUIRE(send_all(client.get(), incoming + hello + "after"));
        CHECK(read_line(client.get()).data == "hi");
        ::shutdown(client.get(), SHUT_WR);
        CHECK(read_until_closed(client.get()).end == ReadEnd::Eof);
    }
    SUBCASE("one byte per segment") {
        UniqueFd client = connect_to(port);
        send_byte_by_byte(client.get(), incoming + hello + "after");
        CHECK(read_line(client.get()).data == "hi");
        ::shutdown(client.get(), SHUT_WR);
        CHECK(read_until_closed(client.get()).end == ReadEnd::Eof);
    }
    for (int i = 0; i < 100 && backend.received().empty(); ++i) std::this_thread::sleep_for(20ms);
    REQUIRE(backend.received().size() == 1);
    const std::string got = backend.received()[0];
    const std::string outgoing = "PROXY TCP4 203.0.113.7 127.0.0.1 40000 " + std::to_string(port) + "\r\n";
    CHECK(got.substr(0, outgoing.size()) == outgoing);
    CHECK(got.substr(std::min(got.size(), outgoing.size())) == hello + "after");
}

TEST_CASE("sni with a queue: the ClientHello read before a client queued stays held and goes first once it is served") {
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RuleSpec tls = rule("tls", port, "", {"sni = [\"www.example.com\"]", "queue = 1", "queue_timeout = \"10s\""});
    tls.servers = {{backend.endpoint(), 0, false, 1}};
    RinglbProcess ringlb(render_config(with_admin(admin_port), {tls}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string hello = captured_hello();

    UniqueFd holder = connect_to(port);
    REQUIRE(send_all(holder.get(), hello));
    REQUIRE(read_exactly(holder.get(), hello.size(), 5s).data == hello);
    UniqueFd waiter = connect_to(port);
    REQUIRE(send_all(waiter.get(), hello + "after"));
    bool queued = false;
    for (int i = 0; i < 200 && !queued; ++i) {
        queued = admin_command(admin_port, "show sessions").body.find(" state=queued") != std::string::npos;
        if (!queued) std::this_thread::sleep_for(10ms);
    }
    REQUIRE(queued);
    CHECK(!wait_readable(waiter.get(), 100ms));
    holder.reset();  // the connection comes free: the waiter's held hello goes first, then the rest
    CHECK(read_exactly(waiter.get(), hello.size() + 5, 5s).data == hello + "after");
    waiter.reset();
    CHECK_CLEAN_EXIT(ringlb);
}
