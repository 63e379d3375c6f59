// `source`: outgoing connections come from the configured address (and port range); named
// servers: the name stands for the server in admin commands, metrics labels and logs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "net_util.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// Accepts connections and writes each one the peer address it sees ("127.0.0.2:41234\n"); keeps
// them open until it stops, so that their local ports stay taken, and remembers every peer's IP.
class PeerReportingBackend {
public:
    PeerReportingBackend() : listener_(listen_on_loopback(0)), thread_([this] { run(); }) {}
    ~PeerReportingBackend() {
        stop_ = true;
        thread_.join();
    }
    std::string endpoint() const { return loopback_endpoint(local_port(listener_.get())); }
    std::vector<std::string> peer_ips() const {
        std::lock_guard lock(mutex_);
        return peer_ips_;
    }

private:
    void run() {
        std::vector<UniqueFd> open;
        while (!stop_) {
            pollfd entry{listener_.get(), POLLIN, 0};
            if (::poll(&entry, 1, 20) <= 0) continue;
            sockaddr_in peer{};
            socklen_t length = sizeof peer;
            UniqueFd client(::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC));
            if (!client.valid()) continue;
            char ip[INET_ADDRSTRLEN] = {};
            ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
            {
                std::lock_guard lock(mutex_);
                peer_ips_.push_back(ip);
            }
            send_all(client.get(), std::string(ip) + ":" + std::to_string(ntohs(peer.sin_port)) + "\n");
            open.push_back(std::move(client));
        }
    }

    UniqueFd listener_;
    mutable std::mutex mutex_;
    std::vector<std::string> peer_ips_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// The line the backend sent through ringlb; the client stays connected in `client`.
std::string seen_from(std::uint16_t port, UniqueFd& client) {
    client = connect_to(port);
    if (!client.valid()) return "<connect failed>";
    const ReadResult line = read_line(client.get());
    return line.end == ReadEnd::Limit ? line.data : std::string("<") + to_string(line.end) + ">";
}

// Holds 127.0.0.3:port (bound, not listening) so that nothing else can bind it.
UniqueFd occupy(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.3", &address.sin_addr);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return UniqueFd();
    return fd;
}

}  // namespace

TEST_CASE("source binds connections to servers to its address; a server's own source wins over the rule's") {
    PeerReportingBackend backend;
    const std::uint16_t rule_port = find_free_port(), server_port = find_free_port(), plain_port = find_free_port();
    RuleSpec by_rule = one_server_rule("by-rule", rule_port, backend.endpoint());
    by_rule.extra_lines = {"source = \"127.0.0.2\""};
    RuleSpec by_server = one_server_rule("by-server", server_port, backend.endpoint());
    by_server.servers[0].source = "127.0.0.4";
    by_server.extra_lines = {"source = \"127.0.0.2\""};
    const RuleSpec plain = one_server_rule("plain", plain_port, backend.endpoint());
    RinglbProcess ringlb(render_config(GlobalSpec{}, {by_rule, by_server, plain}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd a, b, c, d;
    const std::string first = seen_from(rule_port, a), second = seen_from(rule_port, b);
    CHECK(first.starts_with("127.0.0.2:"));
    CHECK(second.starts_with("127.0.0.2:"));
    CHECK(first != second);  // IP_BIND_ADDRESS_NO_PORT: connect() picked a port for each
    CHECK(seen_from(server_port, c).starts_with("127.0.0.4:"));
    CHECK(seen_from(plain_port, d).starts_with("127.0.0.1:"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("active health checks come from the source address; one that cannot be bound fails the check and says why") {
    PeerReportingBackend backend;
    const std::uint16_t port = find_free_port(), unbindable_port = find_free_port();
    const std::vector<std::string> health = {"[rule.health]", "interval = \"200ms\"", "timeout = \"200ms\"",
                                             "rise = 1", "fall = 1"};
    RuleSpec checked = one_server_rule("checked", port, backend.endpoint());
    checked.servers[0].source = "127.0.0.4";
    checked.extra_lines = {"source = \"127.0.0.2\""};
    checked.extra_lines.insert(checked.extra_lines.end(), health.begin(), health.end());
    // 192.0.2.1 (TEST-NET-1) is on no interface here, and without freebind it cannot be bound.
    RuleSpec unbindable = one_server_rule("unbindable", unbindable_port, backend.endpoint());
    unbindable.extra_lines = {"source = \"192.0.2.1\""};
    unbindable.extra_lines.insert(unbindable.extra_lines.end(), health.begin(), health.end());
    GlobalSpec global;
    global.log_level = "debug";  // a server that never came UP says why its checks fail at debug
    RinglbProcess ringlb(render_config(global, {checked, unbindable}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    REQUIRE(ringlb.wait_for_log("server checked/" + backend.endpoint() + " UP"));
    REQUIRE(ringlb.wait_for_log("health check of server unbindable/" + backend.endpoint() +
                                " failed (still DOWN): cannot bind the source address 192.0.2.1"));
    // The worker learns of the UP a moment after the log line: a client before that is closed.
    UniqueFd client;
    std::string seen;
    for (const auto deadline = Clock::now() + 5s; Clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
        seen = seen_from(port, client);
        if (seen.starts_with("127.0.0.")) break;
    }
    CHECK(seen.starts_with("127.0.0.4:"));
    const std::vector<std::string> peers = backend.peer_ips();
    CHECK(peers.size() >= 2);  // at least one check and the client
    CHECK(std::all_of(peers.begin(), peers.end(), [](const std::string& ip) { return ip == "127.0.0.4"; }));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("source with a port range uses only its ports, skips those in use and closes a client when all are taken") {
    PeerReportingBackend backend;
    // Two free ports in a row on 127.0.0.3; the first is then held by the test.
    std::uint16_t first_port = 0;
    UniqueFd held;
    for (int attempt = 0; attempt < 50 && !held.valid(); ++attempt) {
        const std::uint16_t candidate = find_free_port();
        if (candidate == 65535) continue;
        UniqueFd probe = occupy(static_cast<std::uint16_t>(candidate + 1));
        if (!probe.valid()) continue;
        probe.reset();
        held = occupy(candidate);
        first_port = candidate;
    }
    REQUIRE(held.valid());
    const std::uint16_t port = find_free_port();
    RuleSpec rule = one_server_rule("ranged", port, backend.endpoint());
    rule.extra_lines = {"source = \"127.0.0.3:" + std::to_string(first_port) + "-" + std::to_string(first_port + 1) + "\""};
    RinglbProcess ringlb(render_config(GlobalSpec{}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd a, b;
    // The range's first port is taken: ringlb moves on to the second.
    CHECK(seen_from(port, a) == "127.0.0.3:" + std::to_string(first_port + 1));
    // Now both are: the connect fails before it starts, and with no other server the client is closed.
    CHECK(seen_from(port, b) == "<EOF>");
    CHECK(ringlb.wait_for_log("binding the source address for connect to " + backend.endpoint() +
                              " failed: Address already in use", 5s));
    // A port freed is used again.
    a.reset();
    held.reset();
    UniqueFd c;
    const std::string again = seen_from(port, c);
    CHECK((again == "127.0.0.3:" + std::to_string(first_port) || again == "127.0.0.3:" + std::to_string(first_port + 1)));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("a named server is known by its name in admin commands, metrics labels and logs; its address still works") {
    NameBackend one("one"), two("two");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port(), metrics_port = find_free_port();
    RuleSpec rule = one_server_rule("web", port, one.endpoint());
    rule.servers[0].name = "web1";
    rule.servers.push_back({two.endpoint()});
    GlobalSpec global;
    global.log_level = "debug";
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\"", "[metrics]",
                             "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    REQUIRE(admin_command(admin_port, "disable server web web1").ok());
    for (int i = 0; i < 4; ++i) CHECK(fetch_name(port) == "two");
    CHECK(ringlb.wait_for_log("server web/web1 disabled by the operator", 5s));
    const AdminReply rules = admin_command(admin_port, "show rules");
    CHECK(rules.body.find("server " + one.endpoint() + " name=web1 disabled") != std::string::npos);
    // The address names the same server.
    REQUIRE(admin_command(admin_port, "enable server web " + one.endpoint()).ok());
    // Only the name is known, no other word.
    const AdminReply unknown = admin_command(admin_port, "disable server web web2");
    CHECK(unknown.last.find("rule \"web\" has no server named \"web2\"") != std::string::npos);

    UniqueFd metrics = connect_to(metrics_port);
    REQUIRE(send_all(metrics.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string text = read_until_closed(metrics.get(), 5s).data;
    CHECK(text.find("{rule=\"web\",server=\"web1\"") != std::string::npos);
    CHECK(text.find("server=\"" + two.endpoint() + "\"") != std::string::npos);
    CHECK(text.find("server=\"" + one.endpoint() + "\"") == std::string::npos);

    // Debug lines name the session's server by name and address.
    UniqueFd client;
    std::string name;
    for (int i = 0; i < 4 && name != "one"; ++i) name = open_session(port, client);
    CHECK(name == "one");
    CHECK(ringlb.wait_for_log("-> web1 (" + one.endpoint() + ") (rule web) established", 5s));
    CHECK_CLEAN_EXIT(ringlb);
}
