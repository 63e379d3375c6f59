// Upgrades that drop nothing: SIGUSR2 makes ringlb start its binary anew with every listening
// socket; once the new process is ready the old one stops accepting and lets its sessions
// finish. A client opens 200 connections a second for the whole run while the binary is
// upgraded ten times: every connection must be served, byte for byte, and the sessions live on
// each old process must finish normally on it.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// Processes started by ringlb itself (the new side of each upgrade) are no children of the test;
// once their parent exits they become ours (we are their subreaper), and this kills what is left.
class Descendants {
public:
    Descendants() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
    ~Descendants() {
        for (pid_t pid : pids_) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    }
    void add(pid_t pid) { pids_.push_back(pid); }
    // Waits for `pid` (orphaned to us) to exit; its exit code, or -1 on a timeout or a signal.
    int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
        for (const auto until = Clock::now() + timeout; Clock::now() < until;) {
            int status = 0;
            const pid_t done = ::waitpid(pid, &status, WNOHANG);
            if (done == pid) {
                std::erase(pids_, pid);
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(10ms);  // not exited, or not orphaned to us yet (ECHILD)
        }
        return -1;
    }

private:
    std::vector<pid_t> pids_;
};

// How many times `needle` occurs in `text`.
size_t count_of(const std::string& text, std::string_view needle) {
    size_t count = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
    return count;
}

// The pid in the `nth` (0-based) "upgrade: started ... as pid N" line of the log.
pid_t started_pid(const std::string& log, size_t nth) {
    size_t at = 0;
    for (size_t i = 0; i <= nth; ++i) {
        at = log.find("upgrade: started ", at);
        if (at == std::string::npos) return -1;
        at += 1;
    }
    const size_t pid_at = log.find(" as pid ", at);
    return pid_at == std::string::npos ? -1 : static_cast<pid_t>(std::stol(log.substr(pid_at + 8)));
}

// A payload of 1..8192 bytes that depends only on the connection's number.
std::string payload_for(uint64_t id) {
    uint64_t state = id * 0x9E3779B97F4A7C15ULL + 1;
    const size_t size = 1 + static_cast<size_t>(state % 8192);
    std::string bytes(size, '\0');
    for (char& byte : bytes) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        byte = static_cast<char>(state);
    }
    return bytes;
}

// Opens `rate_per_second` connections a second over `threads` threads until stopped: each sends
// its payload, reads the echo and compares it byte for byte, then closes.
class SteadyClients {
public:
    SteadyClients(std::uint16_t port, unsigned rate_per_second, unsigned threads) {
        const auto period = std::chrono::microseconds(1'000'000ULL * threads / rate_per_second);
        for (unsigned t = 0; t < threads; ++t)
            threads_.emplace_back([this, port, period, t, threads] { run(port, period, t, threads); });
    }
    ~SteadyClients() { stop(); }
    void stop() {
        stop_.store(true);
        for (auto& thread : threads_)
            if (thread.joinable()) thread.join();
    }
    uint64_t started() const { return started_.load(); }
    uint64_t served() const { return served_.load(); }
    std::vector<std::string> failures() const {
        std::lock_guard lock(mutex_);
        return failures_;
    }

private:
    void run(std::uint16_t port, std::chrono::microseconds period, unsigned first, unsigned step) {
        auto next = Clock::now();
        for (uint64_t id = first; !stop_.load(); id += step) {
            std::this_thread::sleep_until(next);
            next += period;
            ++started_;
            if (std::string failure = one_connection(port, id); !failure.empty()) {
                std::lock_guard lock(mutex_);
                failures_.push_back("connection " + std::to_string(id) + ": " + failure);
            } else {
                ++served_;
            }
        }
    }
    static std::string one_connection(std::uint16_t port, uint64_t id) {
        UniqueFd client = connect_to(port, Family::V4, 5s);
        if (!client.valid()) return "connect failed (" + std::string(std::strerror(errno)) + ")";
        const std::string payload = payload_for(id);
        if (!send_all(client.get(), payload, 5s)) return "send failed";
        const ReadResult echo = read_exactly(client.get(), payload.size(), 5s);
        if (echo.data != payload)
            return "echo differs: " + std::to_string(echo.data.size()) + " of " + std::to_string(payload.size()) +
                   " bytes, then " + to_string(echo.end);
        return "";
    }

    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> started_{0}, served_{0};
    mutable std::mutex mutex_;
    std::vector<std::string> failures_;
    std::vector<std::thread> threads_;
};

// A session opened before an upgrade and carried on after it, on the old process.
struct LiveSession {
    UniqueFd fd;
    std::string sent;
};

LiveSession open_live_session(std::uint16_t port, int number) {
    LiveSession session{connect_to(port, Family::V4, 5s), "before upgrade " + std::to_string(number) + "\n"};
    REQUIRE(session.fd.valid());
    REQUIRE(send_all(session.fd.get(), session.sent));
    REQUIRE(read_exactly(session.fd.get(), session.sent.size()).data == session.sent);
    return session;
}

// More bytes after the upgrade, then the client's end of stream: all must come back, then EOF.
void finish_live_session(LiveSession& session, int number) {
    const std::string more = "after upgrade " + std::to_string(number) + "\n";
    REQUIRE(send_all(session.fd.get(), more));
    CHECK(read_exactly(session.fd.get(), more.size()).data == more);
    ::shutdown(session.fd.get(), SHUT_WR);
    const ReadResult rest = read_until_closed(session.fd.get(), 5s);
    CHECK(rest.data.empty());
    CHECK(rest.end == ReadEnd::Eof);
}

// The test's own NOTIFY_SOCKET (an abstract name): what each process announced.
class NotifyCollector {
public:
    NotifyCollector() : name_("ringlb-test-upgrade-" + std::to_string(::getpid())) {
        fd_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path + 1, name_.data(), name_.size());
        REQUIRE(::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&address),
                       static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name_.size())) == 0);
    }
    std::string environment() const { return "NOTIFY_SOCKET=@" + name_; }
    // Every datagram so far, one after the other, each followed by a blank line.
    const std::string& text() {
        char buffer[4096];
        for (ssize_t n; (n = ::recv(fd_.get(), buffer, sizeof buffer, 0)) > 0;)
            text_ += std::string(buffer, static_cast<size_t>(n)) + "\n\n";
        return text_;
    }

private:
    std::string name_;
    UniqueFd fd_;
    std::string text_;
};

std::string upgrade_config(unsigned threads, const std::vector<std::uint16_t>& ports, const std::string& server) {
    GlobalSpec global;
    global.threads = threads;
    global.shutdown_timeout = "20s";  // live sessions finish on the old process
    RuleSpec rule;
    rule.id = "echo";
    for (std::uint16_t port : ports) rule.listen.push_back(loopback_endpoint(port));
    rule.servers = {{server}};
    return render_config(global, {rule});
}

}  // namespace

TEST_CASE("upgrade: ten upgrades under 200 connections a second drop nothing; one changes threads and listeners") {
    constexpr int kUpgrades = 10;
    constexpr int kReshapingUpgrade = 5;  // threads 2 -> 3, listener `removed` out, `added` in
    Descendants descendants;
    NotifyCollector notify;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), removed = find_free_port(), added = find_free_port();
    RinglbOptions options;
    options.environment = {notify.environment()};
    RinglbProcess ringlb(options, upgrade_config(2, {port, removed}, backend.endpoint()));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    SteadyClients clients(port, 200, 4);
    pid_t current = ringlb.pid();
    for (int upgrade = 1; upgrade <= kUpgrades; ++upgrade) {
        CAPTURE(upgrade);
        std::this_thread::sleep_for(300ms);
        LiveSession live = open_live_session(port, upgrade);
        if (upgrade == kReshapingUpgrade) {
            std::ofstream(ringlb.config_path(), std::ios::trunc) << upgrade_config(3, {port, added}, backend.endpoint());
        }
        REQUIRE(::kill(current, SIGUSR2) == 0);
        const std::string ready_line = " is ready and serves; this process (pid " + std::to_string(current) + ")";
        for (const auto until = Clock::now() + 20s; Clock::now() < until && ringlb.log_text().find(ready_line) == std::string::npos;)
            std::this_thread::sleep_for(10ms);
        REQUIRE(ringlb.log_text().find(ready_line) != std::string::npos);
        const pid_t next = started_pid(ringlb.log_text(), static_cast<size_t>(upgrade - 1));
        REQUIRE(next > 0);
        descendants.add(next);
        CHECK(notify.text().find("MAINPID=" + std::to_string(next) + "\n\n") != std::string::npos);

        finish_live_session(live, upgrade);  // on the old process, which then has none left and exits
        const int old_exit = current == ringlb.pid() ? ringlb.wait_exit(20s).code : descendants.wait_exit(current, 20s);
        CHECK(old_exit == 0);
        current = next;
        if (upgrade == kReshapingUpgrade) {
            CHECK(count_of(ringlb.log_text(), "3 worker threads") == 1);
            UniqueFd to_added = connect_to(added, Family::V4, 2s);
            REQUIRE(to_added.valid());
            REQUIRE(send_all(to_added.get(), "via the added listener\n"));
            CHECK(read_exactly(to_added.get(), 23).data == "via the added listener\n");
            CHECK_FALSE(connect_to(removed, Family::V4, 2s).valid());
        }
    }
    std::this_thread::sleep_for(300ms);
    clients.stop();
    const std::vector<std::string> failures = clients.failures();
    INFO("connections: ", clients.started(), " started, ", clients.served(), " served");
    for (size_t i = 0; i < failures.size() && i < 20; ++i) CHECK_MESSAGE(false, failures[i]);
    CHECK(failures.empty());
    CHECK(clients.served() == clients.started());
    CHECK(clients.started() > 200U * 3);
    CHECK(count_of(ringlb.log_text(), "upgrade failed") == 0);
    CHECK(ringlb.log_text().find("MAINPID") == std::string::npos);  // sent to the service manager, never logged

    ::kill(current, SIGTERM);
    CHECK(descendants.wait_exit(current, 20s) == 0);
}

TEST_CASE("upgrade: sockets from the service manager pass on as such, and the new process sees no LISTEN_ variables") {
    Descendants descendants;
    NameBackend backend("activated");
    UniqueFd socket = listen_on_loopback(0);
    const std::uint16_t port = local_port(socket.get());
    RinglbOptions options;
    options.listen_fds = {socket.get()};
    GlobalSpec global;
    global.threads = 2;
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(fetch_name(port) == "activated");

    REQUIRE(::kill(ringlb.pid(), SIGUSR2) == 0);
    REQUIRE(ringlb.wait_for_log(" is ready and serves; this process (pid " + std::to_string(ringlb.pid()) + ")", 20s));
    const pid_t next = started_pid(ringlb.log_text(), 0);
    REQUIRE(next > 0);
    descendants.add(next);
    CHECK(ringlb.wait_exit(20s).code == 0);
    // The new process got the one socket (not bound anew: the test's copy holds the port without
    // SO_REUSEPORT) and the variables were gone from its environment.
    CHECK(ringlb.log_text().find("1 listening socket(s), 1 listen address claim(s)") != std::string::npos);
    CHECK(count_of(ringlb.log_text(), "socket activation:") == 1);  // the first process's line only
    for (int i = 0; i < 10; ++i) CHECK(fetch_name(port) == "activated");

    ::kill(next, SIGTERM);
    CHECK(descendants.wait_exit(next, 20s) == 0);
    // Never shut down, by either process: the service manager's socket still listens.
    CHECK(connect_to(port, Family::V4, 2s).valid());
}

TEST_CASE("upgrade: a new process that cannot start changes nothing; the admin port comes back") {
    NameBackend backend("still");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global;
    global.threads = 2;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::ofstream(ringlb.config_path(), std::ios::trunc) << "[global]\nthreads = \"many\"\n";
    REQUIRE(::kill(ringlb.pid(), SIGUSR2) == 0);
    REQUIRE(ringlb.wait_for_log("upgrade failed, this process serves on: the new process (pid ", 20s));
    CHECK(ringlb.log_text().find(") exited with status 2 before it was ready") != std::string::npos);
    CHECK(ringlb.running());
    for (int i = 0; i < 10; ++i) CHECK(fetch_name(port) == "still");
    CHECK(admin_command(admin_port, "version").ok());
    CHECK_CLEAN_EXIT(ringlb);
}
