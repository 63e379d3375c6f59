#pragma once
// One forwarding thread: its own engine (created on the thread itself, as an io_uring set up with
// SINGLE_ISSUER only accepts submissions from the thread that created it), its own Forwarder and
// a mailbox through which the control thread reaches it.
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ringlb/app/faults.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/mailbox.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::app {

// How a worker's start went: the engine line on success, or why it could not start.
struct StartReport {
    int exit_code = 0;
    std::string message;
    std::string engine;  // "uring" or "epoll", on success
    std::vector<std::string> listen_addresses;
};

class Worker {
public:
    struct Setup {
        unsigned index = 0;
        const config::GlobalConfig* global = nullptr;
        const core::RulePlan* plan = nullptr;
        Logger* log = nullptr;
        Logger* connection_log = nullptr;  // null: log_connections off
        core::SessionLimits* limits = nullptr;
        std::shared_ptr<engine::BufferBudget> buffer_budget;  // shared by every worker's engine
        bool reuse_port = false;
        const FaultHooks* faults = nullptr;  // test hooks (RINGLB_FAULT); null = none
        int descriptor_ceiling = INT_MAX;    // see Forwarder::set_descriptor_ceiling
        // Listening sockets opened elsewhere (socket activation, an upgrade), asked before binding.
        core::ListenerSource inherited;
        // The longest an idle loop waits before it turns again (the watchdog wants it short).
        std::chrono::milliseconds round = std::chrono::milliseconds(250);
    };

    explicit Worker(const Setup& setup);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    StartReport wait_started() { return started_.get_future().get(); }
    // After every worker started: serve (true) or give up (false).
    void go(bool serve) { go_.set_value(serve); }
    // Leaves the loop at the next round; sessions still open are then ended at once
    // (Forwarder::abort_all_sessions: FINs for quiescent ones, resets for the rest).
    void stop();
    void join();

    // Runs `task` on the worker's thread with its Forwarder and waits for it; false when the
    // worker has ended, or did not start the task within `timeout` (then the task never runs).
    // A task that has started is waited for to its end: no task outlives what it captures.
    bool call(const std::function<void(core::Forwarder&)>& task,
              std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // Runs `task` on the worker's thread without waiting.
    void post(std::function<void(core::Forwarder&)> task);

    // Sessions open at the end of the last round (read by the control thread while draining).
    uint32_t active_sessions() const { return active_.load(std::memory_order_relaxed); }
    // Whether the loop ended by a failure (its engine broke, or the core threw) instead of by
    // stop(); failure() says why. The control thread checks this every round.
    bool failed() const { return failed_.load(); }
    std::string failure() const;
    const core::ForwarderStats& final_stats() const { return final_stats_; }  // after join()
    // Rounds of the loop so far: the control thread's watchdog sees a stuck worker by it.
    uint64_t turns() const { return turns_.load(std::memory_order_relaxed); }

private:
    struct CallState;

    void run(Setup setup);
    bool run_task(const std::function<void(core::Forwarder&)>& task);
    void wake();
    void set_engine(engine::Engine* engine);
    void serve(core::Forwarder& forwarder, const Setup& setup);

    unsigned index_;
    Logger* log_;
    std::promise<StartReport> started_;
    std::promise<bool> go_;
    core::Mailbox mailbox_;
    std::mutex engine_mutex_;
    engine::Engine* engine_ = nullptr;  // for wake(); set while the loop runs, under engine_mutex_
    std::atomic<core::Forwarder*> forwarder_{nullptr};
    std::atomic<bool> stop_{false};
    std::atomic<bool> ended_{false};
    std::atomic<uint32_t> active_{0};
    std::atomic<uint64_t> turns_{0};
    std::atomic<bool> failed_{false};
    mutable std::mutex failure_mutex_;
    std::string failure_;  // under failure_mutex_
    core::ForwarderStats final_stats_;
    std::thread thread_;  // last: it starts running once everything above exists
};

}  // namespace ringlb::app
