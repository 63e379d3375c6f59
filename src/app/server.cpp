#include "ringlb/app/server.hpp"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "ringlb/core/forwarder.hpp"
#include "ringlb/engine/factory.hpp"

namespace ringlb::app {

namespace {

sigset_t stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

engine::EngineOptions engine_options(const config::GlobalConfig& global) {
    engine::EngineOptions options;
    options.buffer_size = std::min<uint32_t>(options.buffer_size, global.buffer_size);
    options.buffer_count = global.receive_buffers;
    return options;
}

// How a worker's start went: the engine line on success, or why it could not start.
struct StartReport {
    int exit_code = kExitOk;
    std::string message;
    std::vector<std::string> listen_addresses;
};

StartReport failed(int exit_code, std::string message) {
    StartReport report;
    report.exit_code = exit_code;
    report.message = std::move(message);
    return report;
}

// One forwarding thread. Its engine is created on the thread itself: an io_uring set up with
// SINGLE_ISSUER only accepts submissions from the thread that created it.
class Worker {
public:
    Worker(unsigned index, const config::Config& config, Logger& log, core::SessionLimits& limits, bool reuse_port,
           const std::atomic<bool>& stop)
        : thread_([=, this, &config, &log, &limits, &stop] { run(index, config, log, limits, reuse_port, stop); }) {}

    StartReport wait_started() { return started_.get_future().get(); }
    void go(bool serve) { go_.set_value(serve); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }
    const core::ForwarderStats& stats() const { return stats_; }
    uint32_t left_open() const { return left_open_; }

private:
    void run(unsigned index, const config::Config& config, Logger& log, core::SessionLimits& limits, bool reuse_port,
             const std::atomic<bool>& stop) {
        std::unique_ptr<engine::Engine> engine;
        std::unique_ptr<core::Forwarder> forwarder;
        try {
            auto selection = engine::make_engine(config.global.engine, engine_options(config.global));
            engine = std::move(selection.engine);
            forwarder = std::make_unique<core::Forwarder>(config, *engine, log, limits, reuse_port);
            started_.set_value({kExitOk, std::move(selection.description), forwarder->listen_addresses()});
        } catch (const engine::EngineUnavailable& e) {
            started_.set_value(failed(kExitRuntimeFailure, std::string("engine=uring requested but cannot run: ") + e.what()));
            return;
        } catch (const core::ListenError& e) {
            started_.set_value(failed(kExitBadConfig, e.what()));
            return;
        } catch (const std::exception& e) {
            started_.set_value(failed(kExitRuntimeFailure, "worker " + std::to_string(index) + ": " + e.what()));
            return;
        }
        if (!go_.get_future().get()) return;
        try {
            forwarder->start_accepting();
            forwarder->run(stop);
        } catch (const std::exception& e) {
            log.error("worker ", index, " failed: ", e.what());
        }
        stats_ = forwarder->stats();
        left_open_ = forwarder->active_sessions();
    }

    std::promise<StartReport> started_;
    std::promise<bool> go_;
    core::ForwarderStats stats_;
    uint32_t left_open_ = 0;
    std::thread thread_;  // last: it starts running once everything above exists
};

// Waits for SIGINT/SIGTERM (blocked everywhere) on its own thread and raises `stop`.
class SignalWatcher {
public:
    SignalWatcher(std::atomic<bool>& stop, Logger& log)
        : thread_([&stop, &log](std::stop_token token) { watch(token, stop, log); }) {}

private:
    static void watch(const std::stop_token& token, std::atomic<bool>& stop, Logger& log) {
        const sigset_t set = stop_signals();
        const timespec poll_interval{0, 200 * 1000 * 1000};
        while (!token.stop_requested()) {
            const int signal = sigtimedwait(&set, nullptr, &poll_interval);
            if (signal > 0) {
                log.info("received ", signal == SIGINT ? "SIGINT" : "SIGTERM", ": stopping");
                stop.store(true);
                return;
            }
        }
    }

    std::jthread thread_;
};

void log_totals(Logger& log, const std::vector<std::unique_ptr<Worker>>& workers) {
    core::ForwarderStats total;
    uint32_t left_open = 0;
    for (const auto& worker : workers) {
        const core::ForwarderStats& s = worker->stats();
        total.accepted += s.accepted;
        total.sessions_ended += s.sessions_ended;
        total.connect_failures += s.connect_failures;
        total.rejected_no_rule += s.rejected_no_rule;
        total.rejected_max_sessions += s.rejected_max_sessions;
        total.rejected_per_ip += s.rejected_per_ip;
        total.rejected_denied += s.rejected_denied;
        total.rejected_max_clients += s.rejected_max_clients;
        total.rejected_rule_per_ip += s.rejected_rule_per_ip;
        total.rejected_rate += s.rejected_rate;
        left_open += worker->left_open();
    }
    log.info("stopped: ", total.accepted, " accepted, ", total.sessions_ended, " sessions ended, ", left_open,
             " still open, ", total.connect_failures, " connect failures, ",
             total.rejected_no_rule + total.rejected_max_sessions + total.rejected_per_ip + total.rejected_denied +
                 total.rejected_max_clients + total.rejected_rule_per_ip + total.rejected_rate,
             " rejected");
}

}  // namespace

void block_stop_signals() {
    const sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int serve(const config::Config& config, Logger& log) {
    const unsigned threads = config.global.threads == 0 ? usable_cpus() : config.global.threads;
    core::SessionLimits limits(config);  // global and per-rule limits, shared by all workers
    std::atomic<bool> stop{false};

    // Workers start one after the other, so the first one's bind error is the one reported.
    std::vector<std::unique_ptr<Worker>> workers;
    std::optional<StartReport> failure;
    std::vector<std::string> listening;
    for (unsigned i = 0; i < threads && !failure; ++i) {
        workers.push_back(std::make_unique<Worker>(i, config, log, limits, threads > 1, stop));
        StartReport report = workers.back()->wait_started();
        if (report.exit_code != kExitOk) {
            failure = std::move(report);
        } else if (i == 0) {
            log.info(report.message);  // the engine line comes first, as operators look for it
            listening = std::move(report.listen_addresses);
        }
    }
    for (auto& worker : workers) worker->go(!failure);
    if (failure) {
        for (auto& worker : workers) worker->join();
        log.error(failure->message);
        return failure->exit_code;
    }
    std::string addresses;
    for (const std::string& address : listening) addresses += (addresses.empty() ? "" : " ") + address;
    log.info("ready: listening on ", addresses, "; ", config.rules.size(), " rule", config.rules.size() == 1 ? "" : "s",
             ", ", workers.size(), " worker thread", workers.size() == 1 ? "" : "s", " (", config.source, ")");
    {
        SignalWatcher watcher(stop, log);
        for (auto& worker : workers) worker->join();
    }
    log_totals(log, workers);
    return kExitOk;
}

}  // namespace ringlb::app
