// [global] busy_poll_us against the real binary: with busy polling on, sessions are served byte
// for byte, the worker keeps polling (spends its CPU) while requests come faster than the window,
// and goes back to sleeping (spends none) once they stop: busy polling never outlives the work.
#include <chrono>
#include <string>
#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "proc_stats.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr auto kWindow = std::chrono::milliseconds(20);

bool echoes(int fd, const std::string& message) {
    return send_all(fd, message, 2s) && read_exactly(fd, message.size(), 2s).data == message;
}

// ringlb's CPU time over `span` while `during` runs (or the test sleeps).
template <typename Work>
std::chrono::milliseconds cpu_over(pid_t pid, std::chrono::milliseconds span, Work during) {
    const auto before = cpu_time_of(pid);
    const auto until = Clock::now() + span;
    while (Clock::now() < until) during();
    const auto after = cpu_time_of(pid);
    REQUIRE(before);
    REQUIRE(after);
    return *after - *before;
}

}  // namespace

TEST_CASE("busy_poll_us: sessions are served; the worker polls while work comes within the window and sleeps once it stops") {
    EchoBackend backend;
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.extra_lines = {"busy_poll_us = " + std::to_string(std::chrono::microseconds(kWindow).count())};
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    unsigned echoed = 0, sent = 0;
    // A request every 5 ms, inside the 20 ms window: the worker never sleeps in between.
    const auto polling = cpu_over(ringlb.pid(), 1000ms, [&] {
        ++sent;
        if (echoes(client.get(), "request " + std::to_string(sent) + "\n")) ++echoed;
        std::this_thread::sleep_for(5ms);
    });
    CHECK(echoed == sent);
    // Sleeping between them it would spend a few milliseconds (200 round trips of tens of µs).
    INFO("ringlb CPU time over 1 s of requests 5 ms apart: ", polling.count(), " ms");
    CHECK(polling > 200ms);

    // Quiet: after the window the worker sleeps until the next completion or timer.
    std::this_thread::sleep_for(100ms);
    const auto quiet = cpu_over(ringlb.pid(), 1000ms, [] { std::this_thread::sleep_for(50ms); });
    INFO("ringlb CPU time over 1 s without requests: ", quiet.count(), " ms");
    CHECK(quiet < 100ms);

    CHECK(echoes(client.get(), "after the quiet\n"));
    client.reset();
    CHECK_CLEAN_EXIT(ringlb);
}
