// Running under a service manager (systemd, Type=notify), against the real binary: the test binds
// a unix datagram socket of its own, names it in NOTIFY_SOCKET and reads what ringlb announces:
// READY=1 once it serves, RELOADING=1 (with the reload's CLOCK_MONOTONIC instant) and READY=1
// around a reload, STOPPING=1 on a graceful stop, and WATCHDOG=1 only while every worker turns.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

using Clock = std::chrono::steady_clock;

uint64_t monotonic_usec() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1'000;
}

struct Notification {
    std::string text;
    Clock::time_point at;
    bool has(std::string_view line) const {
        return (std::string("\n") + text + "\n").find(std::string("\n") + std::string(line) + "\n") != std::string::npos;
    }
    // The value of "NAME=value"; empty when absent.
    std::string value(std::string_view name) const {
        const std::string key = std::string("\n") + std::string(name) + "=";
        const std::string lines = std::string("\n") + text;
        const size_t at = lines.find(key);
        if (at == std::string::npos) return "";
        const size_t start = at + key.size();
        return lines.substr(start, lines.find('\n', start) - start);
    }
};

// The test's own NOTIFY_SOCKET: a unix datagram socket bound to a socket file or, when `abstract`,
// to a name in the abstract namespace ("@name" in NOTIFY_SOCKET).
class NotifySocket {
public:
    explicit NotifySocket(bool abstract) {
        static std::atomic<unsigned> counter{0};
        const std::string name = "ringlb-test-notify-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
        fd_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd_.valid());
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        socklen_t length = 0;
        if (abstract) {
            env_value_ = "@" + name;
            std::memcpy(address.sun_path + 1, name.data(), name.size());
            length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
        } else {
            const char* tmp = std::getenv("TMPDIR");
            path_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + name + ".sock";
            env_value_ = path_;
            REQUIRE(path_.size() < sizeof address.sun_path);
            std::memcpy(address.sun_path, path_.data(), path_.size());
            length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size() + 1);
        }
        REQUIRE(::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&address), length) == 0);
    }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;
    ~NotifySocket() {
        if (!path_.empty()) ::unlink(path_.c_str());
    }

    std::string environment() const { return "NOTIFY_SOCKET=" + env_value_; }

    // The next datagram, or nullopt after `timeout`.
    std::optional<Notification> receive(std::chrono::milliseconds timeout) {
        timeval tv{};
        const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(std::max(timeout, 1ms));
        tv.tv_sec = static_cast<time_t>(micros.count() / 1'000'000);
        tv.tv_usec = static_cast<suseconds_t>(micros.count() % 1'000'000);
        ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buffer[4096];
        ssize_t n = -1;
        do {  // the test process handles signals of its own (its children ending)
            n = ::recv(fd_.get(), buffer, sizeof buffer, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) return std::nullopt;
        return Notification{std::string(buffer, static_cast<size_t>(n)), Clock::now()};
    }

    // Reads until a datagram has the line `line` (e.g. "READY=1"); every datagram read is kept in
    // `seen`. nullopt when none came within `timeout`.
    std::optional<Notification> wait_for(std::string_view line, std::chrono::milliseconds timeout,
                                         std::vector<Notification>* seen = nullptr) {
        const auto until = Clock::now() + timeout;
        while (Clock::now() < until) {
            auto next = receive(std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
            if (!next) return std::nullopt;
            if (seen) seen->push_back(*next);
            if (next->has(line)) return next;
        }
        return std::nullopt;
    }

    // Every datagram that arrives within `duration`.
    std::vector<Notification> collect(std::chrono::milliseconds duration) {
        std::vector<Notification> all;
        const auto until = Clock::now() + duration;
        while (Clock::now() < until) {
            auto next = receive(std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
            if (next) all.push_back(*next);
        }
        return all;
    }

private:
    UniqueFd fd_;
    std::string path_;
    std::string env_value_;
};

// The instants of the WATCHDOG=1 datagrams among `all`.
std::vector<Clock::time_point> pings(const std::vector<Notification>& all) {
    std::vector<Clock::time_point> out;
    for (const Notification& n : all)
        if (n.has("WATCHDOG=1")) out.push_back(n.at);
    return out;
}

std::chrono::milliseconds longest_gap(Clock::time_point from, const std::vector<Clock::time_point>& at, Clock::time_point to) {
    std::chrono::milliseconds longest{0};
    Clock::time_point previous = from;
    for (Clock::time_point t : at) {
        longest = std::max(longest, std::chrono::duration_cast<std::chrono::milliseconds>(t - previous));
        previous = t;
    }
    return std::max(longest, std::chrono::duration_cast<std::chrono::milliseconds>(to - previous));
}

std::string describe(const std::vector<Notification>& all, Clock::time_point from) {
    std::string out;
    for (const Notification& n : all)
        out += std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(n.at - from).count()) + " ms: " + n.text + "\n";
    return out;
}

}  // namespace

TEST_CASE("service notify: READY=1 once serving, RELOADING=1 + MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1 on SIGTERM") {
    NotifySocket notify(/*abstract=*/true);
    NameBackend backend("a");
    const std::uint16_t port = find_free_port();
    RinglbOptions options;
    options.environment = {notify.environment()};
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);

    const auto ready = notify.wait_for("READY=1", 10s);
    REQUIRE_MESSAGE(ready, "no READY=1");
    // Announced after every listener is up: the log says so first, and a client is served.
    CHECK(ringlb.log_text().find("ready: listening on") != std::string::npos);
    CHECK(ready->value("STATUS") == "ready: 0 active sessions, 1 rule");
    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    CHECK(read_line(client.get()).data == "a");

    const uint64_t before = monotonic_usec();
    REQUIRE(::kill(ringlb.pid(), SIGHUP) == 0);
    std::vector<Notification> seen;
    const auto reloading = notify.wait_for("RELOADING=1", 5s, &seen);
    REQUIRE_MESSAGE(reloading, "no RELOADING=1; got:\n", describe(seen, ready->at));
    const std::string stamp = reloading->value("MONOTONIC_USEC");
    REQUIRE_MESSAGE(!stamp.empty(), reloading->text);
    const uint64_t reload_usec = std::stoull(stamp);
    // The reload began after the signal was sent, and within a second of it.
    CHECK(reload_usec >= before);
    CHECK(reload_usec < before + 1'000'000);
    const auto reloaded = notify.wait_for("READY=1", 5s, &seen);
    REQUIRE_MESSAGE(reloaded, "no READY=1 after the reload; got:\n", describe(seen, ready->at));
    CHECK(reloaded->value("STATUS") == "reloaded: 1 active session, 1 rule");

    client.reset();
    REQUIRE(::kill(ringlb.pid(), SIGTERM) == 0);
    const auto stopping = notify.wait_for("STOPPING=1", 5s, &seen);
    CHECK_MESSAGE(stopping, "no STOPPING=1; got:\n", describe(seen, ready->at));
    const ExitStatus status = ringlb.wait_exit();
    CHECK_MESSAGE(status.exited, status.describe());
    CHECK(status.code == 0);
}

TEST_CASE("service notify: a socket file as NOTIFY_SOCKET; an admin reload that fails is announced and ends in READY=1") {
    NotifySocket notify(/*abstract=*/false);
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    RinglbOptions options;
    options.environment = {notify.environment()};
    RinglbProcess ringlb(options, render_config(global, {one_server_rule("r1", port, "127.0.0.1:9")}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_MESSAGE(notify.wait_for("READY=1", 10s), "no READY=1");

    {
        std::FILE* file = std::fopen(ringlb.config_path().c_str(), "w");
        REQUIRE(file);
        std::fputs("[global\nthreads = \n", file);
        std::fclose(file);
    }
    const AdminReply reply = admin_command(admin_port, "reload");
    CHECK_FALSE(reply.ok());
    std::vector<Notification> seen;
    CHECK(notify.wait_for("RELOADING=1", 5s, &seen));
    const auto after = notify.wait_for("READY=1", 5s, &seen);
    REQUIRE_MESSAGE(after, "no READY=1 after the failed reload");
    CHECK(after->value("STATUS") == "reload failed: 0 active sessions, 1 rule");
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("service notify: with WATCHDOG_USEC the pings keep coming, within the interval") {
    NotifySocket notify(/*abstract=*/true);
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.threads = 2;
    RinglbOptions options;
    options.environment = {notify.environment(), "WATCHDOG_USEC=400000"};
    RinglbProcess ringlb(options, simple_config(port, {{"127.0.0.1:9"}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    const auto ready = notify.wait_for("READY=1", 10s);
    REQUIRE_MESSAGE(ready, "no READY=1");

    const std::vector<Notification> all = notify.collect(2500ms);
    const auto at = pings(all);
    INFO("received:\n", describe(all, ready->at));
    CHECK(at.size() >= 6);  // one per 200 ms is expected: 12
    // systemd restarts a service that leaves a whole interval without a ping.
    CHECK(longest_gap(ready->at, at, Clock::now()) < 400ms);
    CHECK(ringlb.log_text().find("watchdog: worker") == std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("service notify: a stalled worker stops the watchdog pings, and they resume when it turns again") {
    NotifySocket notify(/*abstract=*/true);
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.threads = 2;
    RinglbOptions options;
    // Worker 1 sleeps 2 s inside its loop, a second after it starts serving.
    options.environment = {notify.environment(), "WATCHDOG_USEC=400000", "RINGLB_FAULT=worker-stall:2000@1"};
    RinglbProcess ringlb(options, simple_config(port, {{"127.0.0.1:9"}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    const auto ready = notify.wait_for("READY=1", 10s);
    REQUIRE_MESSAGE(ready, "no READY=1");

    const std::vector<Notification> all = notify.collect(4500ms);
    const auto at = pings(all);
    INFO("received:\n", describe(all, ready->at));
    REQUIRE_FALSE(at.empty());
    // Pings before the stall, none for most of its 2 s, and pings again after it.
    CHECK(at.front() - ready->at < 1s);
    CHECK(longest_gap(ready->at, at, at.back()) >= 1200ms);
    CHECK(Clock::now() - at.back() < 1s);
    CHECK(ringlb.wait_for_log("watchdog: worker 1 has not turned its loop", 1s));
    CHECK(ringlb.wait_for_log("watchdog: worker 1 turns again", 1s));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("service notify: no watchdog pings when WATCHDOG_PID names another process") {
    NotifySocket notify(/*abstract=*/true);
    const std::uint16_t port = find_free_port();
    RinglbOptions options;
    options.environment = {notify.environment(), "WATCHDOG_USEC=400000", "WATCHDOG_PID=1"};
    RinglbProcess ringlb(options, simple_config(port, {{"127.0.0.1:9"}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    const auto ready = notify.wait_for("READY=1", 10s);
    REQUIRE_MESSAGE(ready, "no READY=1");
    const std::vector<Notification> all = notify.collect(1000ms);
    INFO("received:\n", describe(all, ready->at));
    CHECK(pings(all).empty());
    CHECK_CLEAN_EXIT(ringlb);
}
