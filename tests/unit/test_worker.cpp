// A worker thread and its control calls: a task the caller gave up on never runs later (it could
// write through references to the caller's locals), a task that has started is waited for, and a
// worker whose loop fails says so. Also the RINGLB_FAULT hooks that drive such failures.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>

#include "ringlb/app/faults.hpp"
#include "ringlb/app/worker.hpp"
#include "ringlb/core/session_limits.hpp"

using namespace ringlb;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// One worker on the epoll engine serving a rule on a free loopback port.
struct RunningWorker {
    config::Config config;
    core::RulePlan plan;
    Logger log{LogLevel::Error};
    core::SessionLimits limits{config};
    app::FaultHooks faults;
    std::unique_ptr<app::Worker> worker;

    explicit RunningWorker(const std::string& fault = "") : config(make_config()), plan(core::Forwarder::initial_plan(config)) {
        if (!fault.empty()) faults = app::parse_fault_hooks(fault);
        app::Worker::Setup setup;
        setup.global = &config.global;
        setup.plan = &plan;
        setup.log = &log;
        setup.limits = &limits;
        setup.faults = &faults;
        worker = std::make_unique<app::Worker>(setup);
        REQUIRE(worker->wait_started().exit_code == 0);
        worker->go(true);
        if (!faults.any()) REQUIRE(worker->call([](core::Forwarder&) {}, 5s));  // its loop is running
    }
    static config::Config make_config() {
        config::Config config;
        config.source = "test";
        config.global.engine = config::EngineChoice::Epoll;
        config::RuleConfig rule;
        rule.id = "web";
        rule.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
        rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:1"), 1});
        config.rules.push_back(rule);
        return config;
    }
};

}  // namespace

TEST_CASE("worker call: a task still queued when the caller gives up never runs") {
    RunningWorker running;
    app::Worker& worker = *running.worker;
    // Keep the worker busy so the next task waits in its mailbox past the caller's timeout.
    worker.post([](core::Forwarder&) { std::this_thread::sleep_for(400ms); });
    std::this_thread::sleep_for(50ms);
    auto ran = std::make_shared<std::atomic<bool>>(false);
    {
        int callers_local = 0;
        const bool answered = worker.call(
            [ran, &callers_local](core::Forwarder&) {
                callers_local = 42;  // would write into a dead stack frame if it ran now
                ran->store(true);
            },
            50ms);
        CHECK_FALSE(answered);
        CHECK(callers_local == 0);
    }
    std::this_thread::sleep_for(600ms);  // the worker is long past its busy task
    CHECK_FALSE(ran->load());
    // And the worker still answers.
    bool later = false;
    CHECK(worker.call([&](core::Forwarder&) { later = true; }, 2s));
    CHECK(later);
}

TEST_CASE("worker call: a task that has started is waited for to its end, even past the timeout") {
    RunningWorker running;
    int result = 0;
    const auto started = Clock::now();
    const bool answered = running.worker->call(
        [&](core::Forwarder&) {
            std::this_thread::sleep_for(300ms);
            result = 7;
        },
        50ms);
    CHECK(answered);
    CHECK(result == 7);
    CHECK(Clock::now() - started >= 300ms);
}

TEST_CASE("worker: an engine whose poll fails ends the loop and is reported as a failure") {
    RunningWorker running("engine-poll-fails-after:3");
    const auto deadline = Clock::now() + 5s;
    while (!running.worker->failed() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    REQUIRE(running.worker->failed());
    CHECK(running.worker->failure() == "epoll_wait (RINGLB_FAULT): Bad file descriptor");
    CHECK(running.worker->active_sessions() == 0);
    CHECK_FALSE(running.worker->call([](core::Forwarder&) {}, 1s));  // it has ended: nothing runs
}

TEST_CASE("fault hooks: parsed from RINGLB_FAULT and applied to the right worker's engine options") {
    const app::FaultHooks hooks = app::parse_fault_hooks("engine-poll-fails-after:50@1,uring-unavailable@2,completion-queue:16");
    for (unsigned worker = 0; worker < 3; ++worker) {
        CAPTURE(worker);
        engine::EngineOptions options;
        hooks.apply(worker, options);
        CHECK(options.fail_poll_after == (worker == 1 ? 50u : 0u));
        CHECK(options.refuse_uring == (worker == 2));
        CHECK(options.queue_depth == 16);
        CHECK(options.completion_queue_entries == 16);
    }
    engine::EngineOptions every;
    app::parse_fault_hooks("engine-poll-fails-after:7").apply(5, every);
    CHECK(every.fail_poll_after == 7);
    CHECK_FALSE(app::parse_fault_hooks("").any());
    CHECK(app::parse_fault_hooks("worker-stall:1500@1").stall_for(1) == 1500);
    CHECK(app::parse_fault_hooks("worker-stall:1500@1").stall_for(0) == 0);
    CHECK(app::parse_fault_hooks("worker-stall:30").stall_for(3) == 30);
    CHECK(app::parse_fault_hooks("pipe-trim:60000").pipe_trim_ms == 60000);
    CHECK(app::parse_fault_hooks("").pipe_trim_ms == 0);
    engine::EngineOptions refused;
    app::parse_fault_hooks("splice-refused").apply(0, refused);
    CHECK(refused.refuse_splice);
    CHECK_FALSE(every.refuse_splice);

    for (const char* bad : {"engine-poll-fails-after", "engine-poll-fails-after:0", "engine-poll-fails-after:x",
                            "uring-unavailable", "uring-unavailable:3@1", "completion-queue:12", "completion-queue:0",
                            "completion-queue:8192", "completion-queue:8@1", "nonsense", "engine-poll-fails-after:5@",
                            "worker-stall", "worker-stall:0", "worker-stall:x@1",
                            "pipe-trim", "pipe-trim:0", "pipe-trim:10@1", "splice-refused:1", "splice-refused@0"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(app::parse_fault_hooks(bad), std::invalid_argument);
    }
}
