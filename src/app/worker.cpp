#include "ringlb/app/worker.hpp"

#include "ringlb/app/server.hpp"
#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/engine/factory.hpp"

namespace ringlb::app {

namespace {

engine::EngineOptions engine_options(const config::GlobalConfig& global,
                                     const std::shared_ptr<engine::BufferBudget>& budget) {
    engine::EngineOptions options;
    options.buffer_size = std::min<uint32_t>(options.buffer_size, global.buffer_size);
    options.initial_buffers = global.receive_buffers;
    // One worker may take the whole process's cap, up to what 16-bit buffer ids can name.
    options.max_buffers = static_cast<uint32_t>(
        std::min<uint64_t>(engine::BufferPool::kMaxBuffers, std::max<uint64_t>(1, budget->max_bytes() / options.buffer_size)));
    options.budget = budget;
    options.multishot_recv = global.multishot_recv;
    return options;
}

StartReport failed(int exit_code, std::string message) {
    StartReport report;
    report.exit_code = exit_code;
    report.message = std::move(message);
    return report;
}

constexpr auto kRound = std::chrono::milliseconds(250);

}  // namespace

Worker::Worker(const Setup& setup) : index_(setup.index), log_(setup.log), thread_([this, setup] { run(setup); }) {}

Worker::~Worker() {
    stop();
    join();
}

void Worker::stop() {
    stop_.store(true);
    wake();
}

// Under the lock: the worker thread clears engine_ under it before destroying the engine, so a
// wake-up from the control thread never reaches an engine being destroyed.
void Worker::wake() {
    std::lock_guard lock(engine_mutex_);
    if (engine_) engine_->wake();
}

void Worker::set_engine(engine::Engine* engine) {
    std::lock_guard lock(engine_mutex_);
    engine_ = engine;
}

void Worker::join() {
    if (thread_.joinable()) thread_.join();
}

// A control task that throws is reported; it must not end the worker and its sessions.
void Worker::run_task(const std::function<void(core::Forwarder&)>& task) {
    core::Forwarder* forwarder = forwarder_.load();
    if (!forwarder) return;
    try {
        task(*forwarder);
    } catch (const std::exception& e) {
        log_->error("worker ", index_, ": control task failed: ", e.what());
    }
}

void Worker::post(std::function<void(core::Forwarder&)> task) {
    mailbox_.post([this, task = std::move(task)] { run_task(task); });
    wake();
}

bool Worker::call(const std::function<void(core::Forwarder&)>& task, std::chrono::milliseconds timeout) {
    if (ended_.load()) return false;
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    mailbox_.post([this, task, done] {
        run_task(task);
        done->set_value();  // also when the worker has ended: the caller must not wait in vain
    });
    wake();
    return finished.wait_for(timeout) == std::future_status::ready;
}

void Worker::run(Setup setup) {
    std::unique_ptr<engine::Engine> engine;
    std::unique_ptr<core::Forwarder> forwarder;
    try {
        auto selection = engine::make_engine(setup.global->engine, engine_options(*setup.global, setup.buffer_budget));
        engine = std::move(selection.engine);
        forwarder = std::make_unique<core::Forwarder>(*setup.global, *setup.plan, *engine, *setup.log, *setup.limits,
                                                      setup.reuse_port, setup.index);
        if (setup.connection_log) forwarder->set_connection_log(setup.connection_log, setup.global->log_format);
        started_.set_value({kExitOk, std::move(selection.description), forwarder->listen_addresses()});
    } catch (const engine::EngineUnavailable& e) {
        started_.set_value(failed(kExitRuntimeFailure, std::string("engine=uring requested but cannot run: ") + e.what()));
        ended_.store(true);
        return;
    } catch (const core::ListenError& e) {
        started_.set_value(failed(kExitBadConfig, e.what()));
        ended_.store(true);
        return;
    } catch (const std::exception& e) {
        started_.set_value(failed(kExitRuntimeFailure, "worker " + std::to_string(setup.index) + ": " + e.what()));
        ended_.store(true);
        return;
    }
    if (go_.get_future().get()) {
        forwarder_.store(forwarder.get());
        set_engine(engine.get());
        try {
            serve(*forwarder);
        } catch (const std::exception& e) {
            setup.log->error("worker ", setup.index, " failed: ", e.what());
        }
        set_engine(nullptr);
    }
    final_stats_ = forwarder->stats();
    forwarder_.store(nullptr);
    ended_.store(true);
    mailbox_.run_pending();  // nobody waits forever on a task posted at the very end
}

void Worker::serve(core::Forwarder& forwarder) {
    forwarder.start_accepting();
    while (!stop_.load(std::memory_order_relaxed)) {
        forwarder.run_once(kRound);
        mailbox_.run_pending();
        active_.store(forwarder.active_sessions(), std::memory_order_relaxed);
    }
}

}  // namespace ringlb::app
