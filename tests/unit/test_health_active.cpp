// Active health checks on a real epoll engine against loopback servers run by the test: rise and
// fall, connect refused, send/expect, timeouts, a server that leaves and returns, set_targets()
// keeping and dropping servers with checks in flight, and reports that are never duplicated.
#include <doctest/doctest.h>

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ringlb/engine/dispatch.hpp"
#include "ringlb/engine/epoll/epoll_engine.hpp"
#include "ringlb/health/active.hpp"
#include "ringlb/net/socket.hpp"

using namespace ringlb;
using namespace std::chrono_literals;

namespace {

net::SocketAddress loopback(uint16_t port) { return *net::SocketAddress::parse("127.0.0.1:" + std::to_string(port)); }

// A port nothing listens on: bound once to get it from the kernel, then closed.
net::SocketAddress closed_port() {
    const net::UniqueFd listener = net::listen_tcp(loopback(0));
    return net::local_address(listener.get());
}

// What a test server does with each connection it accepts.
struct Behaviour {
    size_t read_first = 0;   // bytes to read before answering
    std::string reply;       // then sent; the connection is closed after it
    bool hold_open = false;  // accept and neither read nor answer until the server stops
};

// A loopback server on its own thread, serving one connection at a time.
class TestServer {
public:
    explicit TestServer(Behaviour behaviour, uint16_t port = 0)
        : listener_(net::listen_tcp(loopback(port))), address_(net::local_address(listener_.get())),
          behaviour_(std::move(behaviour)), thread_([this] { serve(); }) {}
    ~TestServer() {
        stop_ = true;
        thread_.join();
    }
    TestServer(const TestServer&) = delete;
    TestServer& operator=(const TestServer&) = delete;

    const net::SocketAddress& address() const { return address_; }
    int accepted() const { return accepted_.load(); }

private:
    void serve() {
        std::vector<net::UniqueFd> held;
        while (!stop_) {
            pollfd ready{listener_.get(), POLLIN, 0};
            if (::poll(&ready, 1, 20) <= 0) continue;
            net::UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
            if (!connection) continue;
            ++accepted_;
            if (behaviour_.hold_open) {
                held.push_back(std::move(connection));
            } else {
                answer(connection.get());
            }
        }
    }

    void answer(int fd) const {
        const timeval limit{0, 500'000};  // a check that never sends must not stall the server
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        char buffer[256];
        for (size_t got = 0; got < behaviour_.read_first;) {
            const ssize_t n = ::recv(fd, buffer, std::min(sizeof buffer, behaviour_.read_first - got), 0);
            if (n <= 0) return;
            got += static_cast<size_t>(n);
        }
        if (!behaviour_.reply.empty())
            (void)::send(fd, behaviour_.reply.data(), behaviour_.reply.size(), MSG_NOSIGNAL);
    }

    net::UniqueFd listener_;
    net::SocketAddress address_;
    Behaviour behaviour_;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::thread thread_;
};

// Captures log lines in a temporary file.
struct CapturedLog {
    std::FILE* file = std::tmpfile();
    Logger log{LogLevel::Info, file};
    ~CapturedLog() { std::fclose(file); }
    std::string text() {
        std::fflush(file);
        std::rewind(file);
        std::string out;
        char chunk[512];
        size_t n;
        while ((n = std::fread(chunk, 1, sizeof chunk, file)) > 0) out.append(chunk, n);
        return out;
    }
};

size_t count_of(const std::string& text, const std::string& part) {
    size_t count = 0;
    for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
    return count;
}

struct ReportEntry {
    uint32_t rule_key;
    size_t server_index;
    bool up;
    std::string reason;
};

// The engine, dispatcher and checker of one test, with every report kept.
struct Harness {
    CapturedLog captured;
    engine::EpollEngine engine{engine::EngineOptions{4096, 32, 64}};
    engine::Dispatcher dispatcher{engine};
    std::vector<ReportEntry> reports;
    health::ActiveChecker checker{dispatcher, captured.log,
                                  [this](uint32_t rule_key, size_t index, bool up, const std::string& reason) {
                                      reports.push_back({rule_key, index, up, reason});
                                  }};

    // Runs the dispatcher until `done` or `limit`; true when done.
    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 3s) {
        const auto give_up = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < give_up) {
            if (done()) return true;
            dispatcher.run_once(10ms);
        }
        return done();
    }
    void run_for(std::chrono::milliseconds duration) {
        run_until([] { return false; }, duration);
    }

    size_t reports_for(uint32_t rule_key, size_t index) const {
        size_t count = 0;
        for (const auto& report : reports) count += report.rule_key == rule_key && report.server_index == index;
        return count;
    }

    // Servers start DOWN unreported, so each server's reports must go UP, DOWN, UP, ...
    bool reports_alternate() const {
        std::map<std::pair<uint32_t, size_t>, bool> last_up;
        for (const auto& report : reports) {
            const auto key = std::make_pair(report.rule_key, report.server_index);
            const bool was_up = last_up.count(key) ? last_up[key] : false;
            if (report.up == was_up) return false;
            last_up[key] = report.up;
        }
        return true;
    }
};

config::HealthCheckConfig quick_check(unsigned rise, unsigned fall, std::chrono::milliseconds timeout = 500ms) {
    config::HealthCheckConfig check;
    check.enabled = true;
    check.interval = 30ms;
    check.timeout = timeout;
    check.rise = rise;
    check.fall = fall;
    return check;
}

health::CheckTarget target(uint32_t rule_key, std::string rule_id, std::vector<net::SocketAddress> servers,
                           config::HealthCheckConfig check) {
    return health::CheckTarget{rule_key, std::move(rule_id), std::move(servers), std::move(check)};
}

size_t open_fd_count() {
    size_t count = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (::readdir(dir) != nullptr) ++count;
        ::closedir(dir);
    }
    return count;
}

}  // namespace

TEST_CASE("active health: a listening server goes UP after rise passed checks, reported once") {
    TestServer server({});
    Harness h;
    auto check = quick_check(2, 3);
    check.interval = 50ms;
    const auto started = std::chrono::steady_clock::now();
    h.checker.set_targets({target(7, "web", {server.address()}, check)});
    CHECK_FALSE(h.checker.is_up(7, 0));  // starts DOWN

    REQUIRE(h.run_until([&] { return h.checker.is_up(7, 0); }));
    CHECK(std::chrono::steady_clock::now() - started >= 45ms);  // the second check waits an interval
    h.run_for(200ms);  // more passes change nothing
    REQUIRE(h.reports.size() == 1);
    CHECK(h.reports[0].rule_key == 7);
    CHECK(h.reports[0].server_index == 0);
    CHECK(h.reports[0].up);
    CHECK(h.reports[0].reason == "2 checks passed");
    const auto log = h.captured.text();
    CHECK(count_of(log, "server web/" + server.address().to_string() + " UP (2 checks passed)") == 1);
    CHECK(server.accepted() >= 4);  // checked every interval, not once
}

TEST_CASE("active health: a closed port stays DOWN with reason connect refused, never reported") {
    Harness h;
    const auto address = closed_port();
    h.checker.set_targets({target(1, "web", {address}, quick_check(1, 1))});
    REQUIRE(h.run_until([&] { return !h.checker.last_failure(1, 0).empty(); }));
    h.run_for(150ms);
    CHECK(h.checker.last_failure(1, 0) == "connect refused");
    CHECK_FALSE(h.checker.is_up(1, 0));
    CHECK(h.reports.empty());  // it started DOWN: staying DOWN is no change
}

TEST_CASE("active health: send and expect") {
    Harness h;
    auto check = quick_check(1, 1);
    check.send = "PING\n";
    check.expect = "PONG";

    SUBCASE("the expected reply passes") {
        TestServer server({5, "PONG\n"});
        h.checker.set_targets({target(1, "api", {server.address()}, check)});
        REQUIRE(h.run_until([&] { return h.checker.is_up(1, 0); }));
        CHECK(h.reports.size() == 1);
    }
    SUBCASE("a wrong reply fails, quoted printably and truncated") {
        TestServer server({5, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"});
        h.checker.set_targets({target(1, "api", {server.address()}, check)});
        REQUIRE(h.run_until([&] { return !h.checker.last_failure(1, 0).empty(); }));
        CHECK(h.checker.last_failure(1, 0) ==
              "reply did not match: got \"HTTP/1.1 500 Internal Server Error\\r\\nCont...\"");
        CHECK_FALSE(h.checker.is_up(1, 0));
    }
    SUBCASE("a short wrong reply before EOF is quoted whole") {
        TestServer server({5, "NO"});
        h.checker.set_targets({target(1, "api", {server.address()}, check)});
        REQUIRE(h.run_until([&] { return !h.checker.last_failure(1, 0).empty(); }));
        CHECK(h.checker.last_failure(1, 0) == "reply did not match: got \"NO\"");
    }
    SUBCASE("a server that closes without answering") {
        TestServer server({5, ""});
        h.checker.set_targets({target(1, "api", {server.address()}, check)});
        REQUIRE(h.run_until([&] { return !h.checker.last_failure(1, 0).empty(); }));
        CHECK(h.checker.last_failure(1, 0) == "closed before reply");
    }
    SUBCASE("send without expect passes once sent") {
        check.expect.clear();
        TestServer server({5, ""});
        h.checker.set_targets({target(1, "api", {server.address()}, check)});
        REQUIRE(h.run_until([&] { return h.checker.is_up(1, 0); }));
    }
    SUBCASE("expect without send reads the server's banner") {
        check.send.clear();
        check.expect = "220 ";
        TestServer server({0, "220 mail ready\r\n"});
        h.checker.set_targets({target(1, "smtp", {server.address()}, check)});
        REQUIRE(h.run_until([&] { return h.checker.is_up(1, 0); }));
    }
    CHECK(h.reports_alternate());
}

TEST_CASE("active health: a server that accepts and never answers fails by timeout") {
    TestServer server({0, "", true});
    Harness h;
    auto check = quick_check(1, 1, 100ms);
    check.expect = "PONG";
    const auto started = std::chrono::steady_clock::now();
    h.checker.set_targets({target(1, "slow", {server.address()}, check)});
    REQUIRE(h.run_until([&] { return !h.checker.last_failure(1, 0).empty(); }));
    CHECK(std::chrono::steady_clock::now() - started >= 95ms);
    CHECK(h.checker.last_failure(1, 0) == "timed out after 100ms");
    CHECK_FALSE(h.checker.is_up(1, 0));
    h.run_for(250ms);  // further timeouts: still no report, one connection at a time
    CHECK(h.reports.empty());
    CHECK(server.accepted() <= 5);  // about 4: never a second check beside the one timing out
}

TEST_CASE("active health: a server that goes away goes DOWN after fall failures and returns after rise") {
    Harness h;
    auto server = std::make_unique<TestServer>(Behaviour{});
    const auto address = server->address();
    h.checker.set_targets({target(3, "web", {address}, quick_check(2, 3))});
    REQUIRE(h.run_until([&] { return h.checker.is_up(3, 0); }));

    server.reset();  // the port now refuses connections
    REQUIRE(h.run_until([&] { return !h.checker.is_up(3, 0); }));
    REQUIRE(h.reports.size() == 2);
    CHECK_FALSE(h.reports[1].up);
    CHECK(h.reports[1].reason == "connect refused");
    CHECK(count_of(h.captured.text(), "server web/" + address.to_string() + " DOWN: connect refused (3 checks)") == 1);

    server = std::make_unique<TestServer>(Behaviour{}, address.port());
    REQUIRE(h.run_until([&] { return h.checker.is_up(3, 0); }));
    h.run_for(100ms);
    REQUIRE(h.reports.size() == 3);
    CHECK(h.reports[2].up);
    CHECK(h.reports_alternate());
}

TEST_CASE("active health: one failure fewer than fall keeps a server UP") {
    Harness h;
    auto server = std::make_unique<TestServer>(Behaviour{});
    const auto address = server->address();
    auto check = quick_check(1, 100);
    h.checker.set_targets({target(1, "web", {address}, check)});
    REQUIRE(h.run_until([&] { return h.checker.is_up(1, 0); }));
    server.reset();
    REQUIRE(h.run_until([&] { return h.checker.last_failure(1, 0) == "connect refused"; }));
    h.run_for(100ms);
    CHECK(h.checker.is_up(1, 0));
    CHECK(h.reports.size() == 1);
}

TEST_CASE("active health: set_targets keeps unchanged servers and drops removed ones mid-check") {
    TestServer kept({});
    TestServer dropped_live({});
    TestServer silent({0, "", true});
    TestServer added({});
    Harness h;
    auto slow = quick_check(1, 1, 5s);  // its checks stay in flight until cancelled
    slow.expect = "PONG";
    h.checker.set_targets({target(1, "web", {dropped_live.address(), kept.address()}, quick_check(1, 1)),
                           target(2, "slow", {silent.address()}, slow)});
    REQUIRE(h.run_until([&] { return h.checker.is_up(1, 0) && h.checker.is_up(1, 1) && silent.accepted() > 0; }));
    REQUIRE(h.reports.size() == 2);

    // Rule 1 loses its first server and gains one; `kept` moves to index 0; rule 2 goes away with
    // its check in flight.
    h.checker.set_targets({target(1, "web", {kept.address(), added.address()}, quick_check(1, 1))});
    CHECK(h.checker.is_up(1, 0));        // kept: still UP, without a new report
    CHECK_FALSE(h.checker.is_up(1, 1));  // added: starts DOWN
    CHECK_FALSE(h.checker.is_up(2, 0));  // removed: unknown
    REQUIRE(h.run_until([&] { return h.checker.is_up(1, 1); }));
    h.run_for(100ms);

    REQUIRE(h.reports.size() == 3);
    CHECK(h.reports[2].rule_key == 1);
    CHECK(h.reports[2].server_index == 1);
    CHECK(h.reports[2].up);
    CHECK(h.checker.is_up(1, 0));
    CHECK(h.reports_for(2, 0) == 0);

    // Removing everything with checks in flight, then adding back: fresh state, DOWN at first.
    h.checker.set_targets({});
    h.run_for(50ms);
    h.checker.set_targets({target(1, "web", {kept.address()}, quick_check(2, 1))});
    CHECK_FALSE(h.checker.is_up(1, 0));
    REQUIRE(h.run_until([&] { return h.checker.is_up(1, 0); }));
    CHECK(h.reports.size() == 4);
}

TEST_CASE("active health: reloads during checks never duplicate a report") {
    TestServer server({5, "PONG\n"});
    Harness h;
    auto check = quick_check(1, 1);
    check.interval = 5ms;
    check.send = "PING\n";
    check.expect = "PONG";
    for (int round = 0; round < 30; ++round) {
        // Same server every time: its state survives each reload, whatever is in flight.
        h.checker.set_targets({target(1, "api", {server.address()}, check)});
        h.run_for(15ms);
    }
    CHECK(h.checker.is_up(1, 0));
    CHECK(h.reports.size() == 1);
    CHECK(h.reports_alternate());
}

TEST_CASE("active health: the first checks of many new servers all start promptly") {
    TestServer server({});
    Harness h;
    auto check = quick_check(1, 1);
    check.interval = 1s;  // one check each: they must not wait for a second round
    h.checker.set_targets({target(1, "many", std::vector<net::SocketAddress>(40, server.address()), check)});
    REQUIRE(h.run_until([&] { return h.reports.size() == 40; }, 900ms));
    for (size_t i = 0; i < 40; ++i) CHECK(h.checker.is_up(1, i));
    CHECK(h.reports_alternate());
}

// Counts whatever the engine still has to deliver.
struct CountingHandler final : engine::CompletionHandler {
    int count = 0;
    void on_completion(const engine::Completion&) override { ++count; }
};

TEST_CASE("active health: destroying the checker with checks in flight closes their sockets") {
    engine::EpollEngine engine{engine::EngineOptions{4096, 32, 64}};
    engine::Dispatcher dispatcher{engine};
    Logger log{LogLevel::Error, stderr};
    const size_t before = open_fd_count();
    {
        TestServer silent({0, "", true});
        std::vector<net::SocketAddress> servers(5, silent.address());
        auto check = quick_check(1, 1, 5s);
        check.expect = "PONG";
        health::ActiveChecker checker(dispatcher, log, nullptr);
        checker.set_targets({target(1, "slow", servers, check)});
        const auto give_up = std::chrono::steady_clock::now() + 3s;
        while (silent.accepted() < 5 && std::chrono::steady_clock::now() < give_up) dispatcher.run_once(10ms);
        REQUIRE(silent.accepted() == 5);
    }
    CHECK(open_fd_count() == before);
    // Every cancelled request was collected before the checker went: nothing is left to deliver
    // to a component that no longer exists.
    CountingHandler leftovers;
    engine.poll(20ms, leftovers);
    CHECK(leftovers.count == 0);
}
