// The management and metrics ports under attack from the operator's own address: clients that
// trickle bytes and never authenticate, a token guesser, a reconnect flood, and control bytes in
// commands. The admin and metrics ports run on the control thread's own loop whatever the engine;
// the suite still runs once per engine.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

const std::string kToken = "operator-token-5f2c9a41e7";

bool contains(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

size_t count_lines_with(const std::string& text, std::string_view needle) {
    size_t count = 0;
    size_t start = 0;
    for (size_t end = text.find('\n'); end != std::string::npos; end = text.find('\n', start)) {
        if (std::string_view(text).substr(start, end - start).find(needle) != std::string_view::npos) ++count;
        start = end + 1;
    }
    return count;
}

// False once the peer closed or reset the connection; what it sent meanwhile is read and dropped.
bool still_open(int fd) {
    char chunk[512];
    for (;;) {
        const ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0) continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

// `count` clients of the admin port that send one byte a second and never a whole line; one
// that ringlb closed connects again at its next tick, as a persistent attacker would.
class Tricklers {
public:
    Tricklers(std::uint16_t port, size_t count) : port_(port), fds_(count) {
        thread_ = std::thread([this] { run(); });
    }
    ~Tricklers() {
        stop_ = true;
        thread_.join();
    }
    Tricklers(const Tricklers&) = delete;
    Tricklers& operator=(const Tricklers&) = delete;

    size_t connects() const { return connects_; }

private:
    void run() {
        while (!stop_) {
            for (UniqueFd& fd : fds_) {
                if (fd.valid() && (!still_open(fd.get()) || ::send(fd.get(), "x", 1, MSG_NOSIGNAL) < 0)) fd.reset();
                if (!fd.valid()) {
                    fd = start_connect(port_);
                    ++connects_;
                }
            }
            for (int i = 0; i < 20 && !stop_; ++i) std::this_thread::sleep_for(50ms);
        }
    }

    std::uint16_t port_;
    std::vector<UniqueFd> fds_;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> connects_{0};
    std::thread thread_;
};

// Guesses tokens as fast as the port answers: three per connection (then ringlb closes it),
// and a new connection right away.
class TokenGuesser {
public:
    explicit TokenGuesser(std::uint16_t port) : port_(port) { thread_ = std::thread([this] { run(); }); }
    ~TokenGuesser() {
        stop_ = true;
        thread_.join();
    }
    TokenGuesser(const TokenGuesser&) = delete;
    TokenGuesser& operator=(const TokenGuesser&) = delete;

    size_t answered() const { return answered_; }

private:
    void run() {
        for (size_t attempt = 0; !stop_;) {
            UniqueFd fd = connect_to(port_, Family::V4, 1s);
            for (int i = 0; i < 3 && fd.valid() && !stop_; ++i) {
                if (!send_all(fd.get(), "auth guess-" + std::to_string(attempt++) + "\n", 1s)) break;
                const ReadResult reply = read_line(fd.get(), 2s);
                if (reply.end != ReadEnd::Limit) break;
                if (reply.data == "error: authentication failed") ++answered_;
            }
        }
    }

    std::uint16_t port_;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> answered_{0};
    std::thread thread_;
};

// Runs `ringlb ctl ...` and returns its result with its wall time.
std::pair<RunResult, std::chrono::milliseconds> timed_ctl(const std::vector<std::string>& args) {
    const auto start = Clock::now();
    RunResult result = run_to_exit(args, 5s);
    return {std::move(result), std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start)};
}

std::string admin_config(std::uint16_t port, std::uint16_t admin_port, const std::string& backend) {
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\"",
                             "token = \"" + kToken + "\""};
    return simple_config(port, {{backend}}, global);
}

}  // namespace

TEST_CASE("admin: 64 trickling clients and a token guesser on the operator's address do not lock it out") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RinglbProcess ringlb(admin_config(port, admin_port, a.endpoint()));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string admin = loopback_endpoint(admin_port);
    {
        Tricklers tricklers(admin_port, 64);
        TokenGuesser guesser(admin_port);
        std::this_thread::sleep_for(1500ms);  // every slot the tricklers can take is theirs by now
        std::chrono::milliseconds slowest{0};
        std::chrono::milliseconds slowest_answer{0};
        for (int i = 0; i < 10; ++i) {
            // The same binary starting and exiting without a conversation (nothing listens there):
            // what the process itself costs, about 40 ms for a Release build on an idle machine
            // but far more for a sanitizer build on a busy one. The bound is on ringlb's answer.
            const auto start_only = timed_ctl({"ctl", "--admin", loopback_endpoint(find_free_port()), "version"});
            REQUIRE(start_only.first.status.code == 2);
            const auto [stats, took] = timed_ctl({"ctl", "--admin", admin, "--token", kToken, "show", "stats"});
            const auto answer = took - std::min(took, start_only.second);
            INFO("ctl run ", i, " took ", took.count(), " ms (the process alone ", start_only.second.count(), " ms), ",
                 stats.status.describe(), ":\n", stats.output);
            CHECK(stats.status.code == 0);
            CHECK(contains(stats.output, "accepted "));
            CHECK(answer < 1s);
            slowest = std::max(slowest, took);
            slowest_answer = std::max(slowest_answer, answer);
            std::this_thread::sleep_for(300ms);
        }
        MESSAGE("slowest of 10 `ringlb ctl show stats` under attack: ", slowest.count(), " ms in all, ",
                slowest_answer.count(), " ms beyond the process's own start and exit");
        CHECK(tricklers.connects() > 64);  // ringlb closed tricklers, and they came back
        CHECK(guesser.answered() > 0);
    }
    const AdminReply stats = admin_command(admin_port, "show stats", kToken);
    INFO(stats.body, stats.last);
    REQUIRE(stats.ok());
    CHECK(reply_value(stats, "admin_auth_failures").value_or(0) >= 1);
    CHECK(reply_value(stats, "admin_evicted_unauthenticated").value_or(0) + reply_value(stats, "admin_auth_timeouts").value_or(0) +
              reply_value(stats, "admin_refused_full").value_or(0) >=
          64);
    // A line per interval and kind, not one per failure or refusal.
    const std::string log = ringlb.log_text();
    CHECK(count_lines_with(log, "authentication failed") <= 3);
    CHECK(count_lines_with(log, "admin: refused connection") + count_lines_with(log, "closed unauthenticated") +
              count_lines_with(log, "not authenticated within") <=
          9);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: control bytes in a command are escaped in the log and in the error reply") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // On a terminal, ESC [2K erases the line and CR returns to its start: what follows would read
    // as a log line of its own. A NUL used to cut the reply short.
    const std::string forged = "\x1b[2K\r2026-01-01T00:00:00.000Z warn admin: FAKE entry";
    UniqueFd admin = connect_to(admin_port);
    REQUIRE(admin.valid());
    REQUIRE(send_all(admin.get(), "add rule {x}" + forged + std::string(1, '\0') + "tail\n"));
    const AdminReply added = read_admin_reply(admin.get());
    INFO("add rule reply: ", added.last);
    CHECK(added.last.starts_with("error: "));
    CHECK(std::none_of(added.last.begin(), added.last.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }));
    REQUIRE(send_all(admin.get(), "bogus\x1b[2K\r" + std::string(1, '\0') + "tail\n"));
    const AdminReply bogus = read_admin_reply(admin.get());
    CHECK(bogus.last == "error: unknown command \"bogus\\u001B[2K\\r\\u0000tail\" (try help)");

    REQUIRE(ringlb.wait_for_log("FAKE entry"));
    const std::string log = ringlb.log_text();
    CHECK(contains(log, "add rule {x}\\u001B[2K\\r2026-01-01T00:00:00.000Z warn admin: FAKE entry\\u0000tail\n"));
    CHECK(!contains(log, "\x1b"));
    CHECK(!contains(log, "\r"));
    CHECK(log.find('\0') == std::string::npos);
    CHECK(count_lines_with(log, "FAKE entry") == 1);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("metrics: scrapes from another address succeed during a reconnect flood from one address") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\"",
                             "allow = [\"127.0.0.0/8\"]"};
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // 128 connections from 127.0.0.1 that never send a request; each one ringlb closes is opened
    // again at once.
    std::atomic<bool> stop{false};
    std::atomic<size_t> flood_connects{0};
    std::thread flood([&] {
        std::vector<UniqueFd> fds(128);
        while (!stop) {
            for (UniqueFd& fd : fds) {
                if (fd.valid() && !still_open(fd.get())) fd.reset();
                if (!fd.valid()) {
                    fd = start_connect(metrics_port);
                    ++flood_connects;
                }
            }
            std::this_thread::sleep_for(2ms);
        }
    });
    std::this_thread::sleep_for(1s);
    unsigned served = 0;
    for (int i = 0; i < 10; ++i) {
        UniqueFd scraper = connect_from("127.0.0.2", metrics_port);
        if (scraper.valid() && send_all(scraper.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) {
            const ReadResult response = read_until_closed(scraper.get(), 5s);
            served += response.data.starts_with("HTTP/1.1 200 OK") && contains(response.data, "ringlb_info");
        }
        std::this_thread::sleep_for(200ms);
    }
    stop = true;
    flood.join();
    INFO("flood connects: ", flood_connects.load());
    CHECK(served == 10);
    CHECK(flood_connects > 128);

    UniqueFd scraper = connect_from("127.0.0.2", metrics_port);
    REQUIRE(send_all(scraper.get(), "GET /metrics HTTP/1.1\r\n\r\n"));
    const std::string metrics = read_until_closed(scraper.get(), 5s).data;
    CHECK(!contains(metrics, "ringlb_metrics_connections_refused_total{reason=\"per_ip\"} 0\n"));
    CHECK(contains(metrics, "ringlb_metrics_connections_refused_total{reason=\"per_ip\"} "));
    CHECK(count_lines_with(ringlb.log_text(), "that IP already has") <= 3);
    CHECK_CLEAN_EXIT(ringlb);
}
