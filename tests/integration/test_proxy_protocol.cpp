// PROXY protocol both ways, checked against the bytes on the wire: send_proxy puts the header
// before any client byte; accept_proxy takes the client's address from it (for clients, limits
// and hashing) and closes connections whose header is missing, malformed or late; only the peers
// in proxy_from may send one; connections awaiting their header are held to the per-IP limits
// (for their peer) and to max_handshakes, so they cannot starve anyone else.
#include <arpa/inet.h>
#include <poll.h>

#include <algorithm>

#include "admin_client.hpp"
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

namespace {

std::string v1_header(const std::string& client_ip, uint16_t client_port) {
    return "PROXY TCP4 " + client_ip + " 192.0.2.1 " + std::to_string(client_port) + " 80\r\n";
}

// Waits until `show stats` gives `key` the value `want`; returns the last value seen (-1: none).
long long wait_for_stat(std::uint16_t admin_port, const std::string& key, long long want,
                        std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    long long seen = -1;
    while (true) {
        seen = reply_value(admin_command(admin_port, "show stats"), key).value_or(-1);
        if (seen == want || Clock::now() >= deadline) return seen;
        std::this_thread::sleep_for(20ms);
    }
}

long long stat(std::uint16_t admin_port, const std::string& key) {
    return reply_value(admin_command(admin_port, "show stats"), key).value_or(-1);
}

// How many of `connections` ringlb has closed (EOF or reset), waiting up to `timeout` for `expected`
// of them, then a moment more so that one closed too many shows.
std::size_t count_closed(const std::vector<UniqueFd>& connections, std::size_t expected, std::chrono::milliseconds timeout) {
    const auto closed_now = [&] {
        std::size_t closed = 0;
        for (const UniqueFd& fd : connections) {
            pollfd p{fd.get(), POLLIN, 0};
            if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) ++closed;
        }
        return closed;
    };
    const auto deadline = Clock::now() + timeout;
    while (closed_now() < expected && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    std::this_thread::sleep_for(200ms);
    return closed_now();
}

// A session through ringlb with a NameBackend behind it: the name line, or "<how it ended>".
std::string name_via(UniqueFd& client, const std::string& first_bytes = "") {
    if (!client.valid()) return "<connect failed>";
    if (!first_bytes.empty() && !send_all(client.get(), first_bytes)) return "<send failed>";
    const ReadResult line = read_line(client.get(), 3s);
    return line.end == ReadEnd::Limit ? line.data : std::string("<") + to_string(line.end) + ">";
}

}  // namespace

// A proxied rule (silent connections stay for the whole test) and a plain echo rule, with
// max_sessions = 20, max_sessions_per_ip = 3 and an admin port.
struct FloodSetup {
    NameBackend proxied_backend{"proxied"};
    EchoBackend echo;
    const std::uint16_t proxy_port = find_free_port(), plain_port = find_free_port(), admin_port = find_free_port();

    std::string config(const std::vector<std::string>& extra_global) const {
        RuleSpec proxied;
        proxied.id = "proxied";
        proxied.listen = {loopback_endpoint(proxy_port)};
        proxied.servers = {{proxied_backend.endpoint()}};
        proxied.connect_timeout = "60s";
        proxied.extra_lines = {"accept_proxy = true"};
        RuleSpec plain;
        plain.id = "plain";
        plain.listen = {loopback_endpoint(plain_port)};
        plain.servers = {{echo.endpoint()}};
        GlobalSpec global;
        global.max_sessions_per_ip = 3;
        global.extra_lines = {"max_sessions = 20"};
        global.extra_lines.insert(global.extra_lines.end(), extra_global.begin(), extra_global.end());
        global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
        return render_config(global, {proxied, plain});
    }
};

bool echoes(int fd, const std::string& line) {
    return send_all(fd, line) && read_exactly(fd, line.size(), 3s).data == line;
}

TEST_CASE("PROXY: 20 silent connections from one address take 3 slots (its per-IP limit) and starve no one") {
    FloodSetup setup;
    RinglbProcess ringlb(setup.config({}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::uint16_t admin_port = setup.admin_port;

    UniqueFd established = connect_from("127.0.0.4", setup.plain_port);
    REQUIRE(echoes(established.get(), "before\n"));

    std::vector<UniqueFd> silent;
    for (int i = 0; i < 20; ++i) {
        silent.push_back(connect_to(setup.proxy_port));
        REQUIRE(silent.back().valid());
    }
    CHECK(wait_for_stat(admin_port, "accepted", 21) == 21);
    CHECK(count_closed(silent, 17, 5s) == 17);
    CHECK(stat(admin_port, "rejected_limit") == 17);
    CHECK(stat(admin_port, "handshakes_active") == 3);

    // Everyone else is served, at once: a proxied client from another address, a new plain
    // client, the established session.
    UniqueFd via_proxy = connect_from("127.0.0.2", setup.proxy_port);
    CHECK(name_via(via_proxy, v1_header("198.51.100.7", 4000)) == "proxied");
    UniqueFd plain_client = connect_from("127.0.0.5", setup.plain_port);
    REQUIRE(plain_client.valid());
    CHECK(echoes(plain_client.get(), "plain\n"));
    CHECK(echoes(established.get(), "during\n"));
    CHECK(stat(admin_port, "limits_active") == 6);  // 3 handshakes and 3 sessions

    silent.clear();
    via_proxy.reset();
    plain_client.reset();
    established.reset();
    CHECK(wait_for_stat(admin_port, "limits_active", 0) == 0);
    CHECK(wait_for_stat(admin_port, "handshakes_active", 0) == 0);
    CHECK(wait_for_stat(admin_port, "limits_tracked_ips", 0) == 0);
    CHECK(wait_for_stat(admin_port, "active_sessions", 0) == 0);
    CHECK(ringlb.running());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("PROXY: max_handshakes caps silent connections from many addresses; sessions and plain listeners go on") {
    FloodSetup setup;
    RinglbProcess ringlb(setup.config({"max_handshakes = 6"}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::uint16_t admin_port = setup.admin_port;

    UniqueFd established = connect_from("127.0.0.4", setup.plain_port);
    REQUIRE(echoes(established.get(), "before\n"));
    UniqueFd proxied_session = connect_from("127.0.0.2", setup.proxy_port);
    REQUIRE(name_via(proxied_session, v1_header("198.51.100.7", 4000)) == "proxied");

    // One silent connection from each of ten addresses: six wait, four are refused and counted.
    std::vector<UniqueFd> silent;
    for (int i = 11; i <= 20; ++i) {
        silent.push_back(connect_from(("127.0.0." + std::to_string(i)).c_str(), setup.proxy_port));
        REQUIRE(silent.back().valid());
    }
    CHECK(wait_for_stat(admin_port, "rejected_max_handshakes", 4) == 4);
    CHECK(stat(admin_port, "handshakes_active") == 6);
    CHECK(count_closed(silent, 4, 5s) == 4);
    // While it is full, a new proxied client is refused too; nothing else is.
    UniqueFd refused = connect_from("127.0.0.3", setup.proxy_port);
    CHECK(name_via(refused, v1_header("198.51.100.8", 4001)).starts_with("<"));
    CHECK(stat(admin_port, "rejected_max_handshakes") == 5);
    UniqueFd plain_client = connect_from("127.0.0.5", setup.plain_port);
    REQUIRE(plain_client.valid());
    CHECK(echoes(plain_client.get(), "plain\n"));
    CHECK(echoes(established.get(), "during\n"));
    CHECK(send_all(proxied_session.get(), "still there?"));  // the NameBackend keeps it open
    CHECK_FALSE(wait_readable(proxied_session.get(), 100ms));
    // A handshake that ends makes room for the next.
    const auto waiting = std::find_if(silent.begin(), silent.end(), [](const UniqueFd& fd) { return !wait_readable(fd.get(), 0ms); });
    REQUIRE(waiting != silent.end());
    silent.erase(waiting);
    CHECK(wait_for_stat(admin_port, "handshakes_active", 5) == 5);
    UniqueFd next = connect_from("127.0.0.3", setup.proxy_port);
    CHECK(name_via(next, v1_header("198.51.100.9", 4002)) == "proxied");

    silent.clear();
    refused.reset();
    next.reset();
    plain_client.reset();
    proxied_session.reset();
    established.reset();
    CHECK(wait_for_stat(admin_port, "limits_active", 0) == 0);
    CHECK(wait_for_stat(admin_port, "handshakes_active", 0) == 0);
    CHECK(wait_for_stat(admin_port, "limits_tracked_ips", 0) == 0);
    CHECK(ringlb.running());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("PROXY: only peers in proxy_from may send a header; the log names both peer and client") {
    NameBackend backend("served");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RuleSpec rule;
    rule.id = "behind-lb";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{backend.endpoint()}};
    rule.connect_timeout = "2s";
    rule.extra_lines = {"accept_proxy = true", "proxy_from = [\"127.0.0.9\"]"};
    GlobalSpec global;
    global.max_sessions_per_ip = 3;
    global.log_level = "debug";
    global.extra_lines = {"log_connections = true"};
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.log_text().find("without proxy_from") == std::string::npos);

    // A client claiming to be the load balancer is refused before its header is read.
    const std::size_t before = backend.accepted();
    UniqueFd impostor = connect_from("127.0.0.2", port);
    CHECK(name_via(impostor, v1_header("127.0.0.9", 5000)).starts_with("<"));
    CHECK(wait_for_stat(admin_port, "rejected_untrusted_proxy", 1) == 1);
    CHECK(backend.accepted() == before);
    CHECK(ringlb.wait_for_log("peer=127.0.0.2:"));
    const std::string refused_line = ringlb.log_text();
    CHECK(refused_line.find("conn client=- peer=127.0.0.2:") != std::string::npos);
    CHECK(refused_line.find("end=untrusted-proxy") != std::string::npos);

    // The real load balancer relays its clients, more of them at once than the per-IP limit
    // (3): it is not held to it, its clients are.
    std::vector<UniqueFd> relayed;
    for (int i = 0; i < 5; ++i) {
        relayed.push_back(connect_from("127.0.0.9", port));
        REQUIRE(relayed.back().valid());
    }
    CHECK(wait_for_stat(admin_port, "handshakes_active", 5) == 5);
    for (int i = 0; i < 5; ++i) {
        INFO("relayed client ", i);
        CHECK(name_via(relayed[static_cast<std::size_t>(i)], v1_header("203.0.113." + std::to_string(9 + i), 6000)) == "served");
    }
    {
        std::vector<UniqueFd> same_client;
        for (int i = 0; i < 4; ++i) {
            same_client.push_back(connect_from("127.0.0.9", port));
            const std::string got = name_via(same_client.back(), v1_header("198.51.100.1", static_cast<uint16_t>(7000 + i)));
            if (i < 3) CHECK(got == "served");
            else CHECK(got.starts_with("<"));  // the client's own per-IP limit holds
        }
    }
    relayed.clear();
    CHECK(wait_for_stat(admin_port, "limits_active", 0) == 0);
    CHECK(stat(admin_port, "limits_tracked_ips") == 0);
    CHECK(ringlb.wait_for_log("client=203.0.113.9:6000 peer=127.0.0.9:"));
    const std::string log = ringlb.log_text();
    CHECK(log.find("peer 127.0.0.9:") != std::string::npos);
    CHECK(log.find("sent a PROXY header for client 203.0.113.9:6000") != std::string::npos);
    CHECK(log.find("203.0.113.9:6000 via 127.0.0.9:") != std::string::npos);
    CHECK(log.find("is not in proxy_from") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("PROXY: accept_proxy without proxy_from is served as before, with a warning at --check and start-up") {
    NameBackend backend("served");
    const std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.id = "open-proxy";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{backend.endpoint()}};
    rule.extra_lines = {"accept_proxy = true"};
    const std::string text = render_config({}, {rule});
    TempFile config(text, ".toml");
    const RunResult check = run_to_exit({"-c", config.path(), "--check"});
    INFO(check.output);
    CHECK(check.status.exited);
    CHECK(check.status.code == 0);
    CHECK(check.output.find("warning: rule \"open-proxy\": accept_proxy = true without proxy_from") != std::string::npos);
    CHECK(check.output.find("ok:") != std::string::npos);

    RinglbProcess ringlb(text);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.first_log_line().find("engine=") != std::string::npos);
    CHECK(ringlb.log_text().find("without proxy_from") != std::string::npos);
    UniqueFd client = connect_from("127.0.0.2", port);
    CHECK(name_via(client, v1_header("203.0.113.50", 8000)) == "served");
    CHECK_CLEAN_EXIT(ringlb);
}
