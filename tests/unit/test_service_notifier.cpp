// The sd_notify side of ringlb: NOTIFY_SOCKET addresses (socket files and abstract names), the
// watchdog interval and whom it is meant for, the messages as they reach a datagram socket, and
// the judgement of whether every worker keeps turning.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "ringlb/app/service_notifier.hpp"

using namespace ringlb;
using namespace std::chrono_literals;

namespace {

// A datagram socket bound to `address`, read without waiting long.
struct Receiver {
    net::UniqueFd fd{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
    explicit Receiver(const app::NotifyAddress& address) {
        REQUIRE(static_cast<bool>(fd));
        REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address.address), address.length) == 0);
        timeval tv{1, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    std::string next() {
        char buffer[512];
        const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        return n < 0 ? "<nothing>" : std::string(buffer, static_cast<size_t>(n));
    }
};

std::string unique_name() { return "ringlb-unit-notify-" + std::to_string(::getpid()); }

}  // namespace

TEST_CASE("notify address: a socket file path, or @name in the abstract namespace") {
    const auto path = app::parse_notify_address("/run/systemd/notify");
    REQUIRE(path);
    CHECK(std::string(path->address.sun_path) == "/run/systemd/notify");
    CHECK(path->length == offsetof(sockaddr_un, sun_path) + 20);  // with the terminating NUL

    const auto abstract = app::parse_notify_address("@sd-notify");
    REQUIRE(abstract);
    CHECK(abstract->address.sun_path[0] == '\0');
    CHECK(std::string(abstract->address.sun_path + 1, 9) == "sd-notify");
    CHECK(abstract->length == offsetof(sockaddr_un, sun_path) + 10);  // no NUL after an abstract name

    for (const char* bad : {"", "@", "/", "relative/notify", "vsock:2:1234"}) {
        CAPTURE(bad);
        CHECK_FALSE(app::parse_notify_address(bad));
    }
    CHECK(app::parse_notify_address(std::string("/") + std::string(106, 'a')));  // 107 bytes + NUL = sun_path
    CHECK_FALSE(app::parse_notify_address(std::string("/") + std::string(107, 'a')));
    CHECK(app::parse_notify_address(std::string("@") + std::string(107, 'a')));
    CHECK_FALSE(app::parse_notify_address(std::string("@") + std::string(108, 'a')));
}

TEST_CASE("watchdog interval: from WATCHDOG_USEC when WATCHDOG_PID is unset or names this process") {
    CHECK(app::parse_watchdog_interval("10000000", nullptr, 42) == 10s);
    CHECK(app::parse_watchdog_interval("400000", "42", 42) == 400ms);
    CHECK_FALSE(app::parse_watchdog_interval("400000", "43", 42));
    CHECK_FALSE(app::parse_watchdog_interval("400000", "x", 42));
    CHECK_FALSE(app::parse_watchdog_interval(nullptr, nullptr, 42));
    for (const char* bad : {"", "0", "-5", "12s", "99999999999999999999999"}) {
        CAPTURE(bad);
        CHECK_FALSE(app::parse_watchdog_interval(bad, nullptr, 42));
    }
}

TEST_CASE("notifier: the messages reach a socket file and an abstract name; a disabled one sends nothing") {
    Logger log(LogLevel::Error);
    const std::string file = "/tmp/" + unique_name() + ".sock";
    for (const std::string& where : {file, std::string("@") + unique_name()}) {
        CAPTURE(where);
        const auto address = app::parse_notify_address(where);
        REQUIRE(address);
        ::unlink(file.c_str());
        Receiver receiver(*address);
        app::ServiceNotifier notifier(log, *address, 400ms);
        REQUIRE(notifier.enabled());
        CHECK(notifier.watchdog_interval() == 400ms);

        notifier.ready("ready: 0 active sessions, 1 rule");
        CHECK(receiver.next() == "READY=1\nSTATUS=ready: 0 active sessions, 1 rule");
        notifier.status("ready: 0 active sessions, 1 rule");  // unchanged: not sent again
        notifier.status("2 active sessions, 1 rule");
        CHECK(receiver.next() == "STATUS=2 active sessions, 1 rule");

        const uint64_t before = app::monotonic_usec_now();
        notifier.reloading();
        const std::string reloading = receiver.next();
        REQUIRE(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
        const uint64_t stamp = std::stoull(reloading.substr(reloading.find('=', 12) + 1));
        CHECK(stamp >= before);
        CHECK(stamp <= app::monotonic_usec_now());

        notifier.watchdog();
        CHECK(receiver.next() == "WATCHDOG=1");
        notifier.stopping("stopping: 0 active sessions, 1 rule");
        CHECK(receiver.next() == "STOPPING=1\nSTATUS=stopping: 0 active sessions, 1 rule");
    }
    ::unlink(file.c_str());

    app::ServiceNotifier disabled(log);
    CHECK_FALSE(disabled.enabled());
    CHECK_FALSE(disabled.send("READY=1"));
    CHECK(app::reloading_message(1234567) == "RELOADING=1\nMONOTONIC_USEC=1234567");
}

TEST_CASE("notifier: a socket nobody listens on fails the send, and ringlb carries on") {
    Logger log(LogLevel::Error);
    const auto address = app::parse_notify_address(std::string("@") + unique_name() + "-nobody");
    REQUIRE(address);
    app::ServiceNotifier notifier(log, *address, std::nullopt);
    CHECK_FALSE(notifier.send("READY=1"));
    CHECK_FALSE(notifier.send("READY=1"));
}

TEST_CASE("turn watch: a worker whose counter has not moved for longer than the limit is stuck") {
    using Clock = app::TurnWatch::Clock;
    const Clock::time_point t0{};
    app::TurnWatch watch(400ms, t0);
    CHECK_FALSE(watch.stuck({0, 0}, t0 + 300ms));   // not yet past the limit since the start
    CHECK_FALSE(watch.stuck({5, 3}, t0 + 390ms));
    CHECK_FALSE(watch.stuck({9, 3}, t0 + 700ms));   // worker 1 last moved at 390 ms
    CHECK(watch.stuck({12, 3}, t0 + 800ms) == 1u);  // 410 ms without a turn
    CHECK(watch.idle_for(1, t0 + 800ms) == 410ms);
    CHECK(watch.stuck({12, 3}, t0 + 1300ms) == 0u);  // now worker 0 too: the first one is named
    CHECK_FALSE(watch.stuck({13, 4}, t0 + 1400ms));  // both turned again
}
