// [global] busy_poll_us against the real binary: with busy polling on, sessions are served byte
// for byte, the worker keeps polling (never goes to sleep) while requests come faster than the
// window, and goes back to sleeping (spends no CPU) once they stop: busy polling never outlives
// the work.
#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
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

// Times each thread of process `pid` went to sleep of its own accord (voluntary_ctxt_switches of
// /proc/PID/task/TID/status), by thread id.
std::map<int, long> voluntary_switches(pid_t pid) {
    std::map<int, long> switches;
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    DIR* dir = ::opendir(tasks.c_str());
    REQUIRE(dir != nullptr);
    while (const dirent* entry = ::readdir(dir)) {
        if (entry->d_name[0] == '.') continue;
        std::ifstream status(tasks + "/" + entry->d_name + "/status");
        for (std::string line; std::getline(status, line);)
            if (line.rfind("voluntary_ctxt_switches:", 0) == 0) switches[std::atoi(entry->d_name)] = std::stol(line.substr(24));
    }
    ::closedir(dir);
    return switches;
}

// The most times any one thread of `pid` went to sleep between the two samples.
long most_sleeps_between(const std::map<int, long>& before, const std::map<int, long>& after) {
    long most = 0;
    for (const auto& [thread, count] : after) {
        const auto earlier = before.find(thread);
        most = std::max(most, count - (earlier == before.end() ? 0 : earlier->second));
    }
    return most;
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
    // A request every 5 ms, inside the 20 ms window: the worker never goes to sleep in between
    // (sleeping, it would twice per request; the control thread wakes a few times a second).
    const auto switches_before = voluntary_switches(ringlb.pid());
    cpu_over(ringlb.pid(), 1000ms, [&] {
        ++sent;
        if (echoes(client.get(), "request " + std::to_string(sent) + "\n")) ++echoed;
        std::this_thread::sleep_for(5ms);
    });
    const long sleeps = most_sleeps_between(switches_before, voluntary_switches(ringlb.pid()));
    CHECK(echoed == sent);
    INFO("requests: ", sent, ", most sleeps of one ringlb thread meanwhile: ", sleeps);
    CHECK(sent > 50);
    CHECK(sleeps < static_cast<long>(sent) / 4);

    // Quiet: after the window the worker sleeps until the next completion or timer.
    std::this_thread::sleep_for(100ms);
    const auto quiet = cpu_over(ringlb.pid(), 1000ms, [] { std::this_thread::sleep_for(50ms); });
    INFO("ringlb CPU time over 1 s without requests: ", quiet.count(), " ms");
    CHECK(quiet < 100ms);

    CHECK(echoes(client.get(), "after the quiet\n"));
    client.reset();
    CHECK_CLEAN_EXIT(ringlb);
}
