#include "ringlb/app/worker.hpp"

#include "ringlb/app/server.hpp"
#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/engine/factory.hpp"

namespace ringlb::app {

namespace {

constexpr uint32_t kMaxPipeCapacity = 1024 * 1024;

engine::EngineOptions engine_options(const Worker::Setup& setup) {
    engine::EngineOptions options;
    options.buffer_size = std::min<uint32_t>(options.buffer_size, setup.global->buffer_size);
    options.initial_buffers = setup.global->receive_buffers;
    // One worker may take the whole process's cap, up to what 16-bit buffer ids can name. Without
    // a shared budget (a worker on its own) the engine has one of its own, of that many buffers.
    const uint64_t cap_buffers = setup.buffer_budget ? setup.buffer_budget->max_bytes() / options.buffer_size
                                                     : engine::BufferPool::kMaxBuffers;
    options.max_buffers = static_cast<uint32_t>(
        std::min<uint64_t>(engine::BufferPool::kMaxBuffers, std::max<uint64_t>(1, cap_buffers)));
    options.budget = setup.buffer_budget;
    options.multishot_recv = setup.global->multishot_recv;
    options.max_pipes = setup.global->max_pipes;
    // The bytes in flight per direction, but at most the kernel's default pipe-max-size: root may
    // make larger pipes, and their pages are outside max_buffer_memory.
    options.pipe_capacity = std::min<uint32_t>(setup.global->buffer_size, kMaxPipeCapacity);
    options.pipe_descriptor_ceiling = setup.descriptor_ceiling;
    if (setup.faults) setup.faults->apply(setup.index, options);
    return options;
}

StartReport start_failure(int exit_code, std::string message) {
    StartReport report;
    report.exit_code = exit_code;
    report.message = std::move(message);
    return report;
}

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

// A control task that throws is reported; it must not end the worker and its sessions. False
// when there was no forwarder to run it on (the worker has ended).
bool Worker::run_task(const std::function<void(core::Forwarder&)>& task) {
    core::Forwarder* forwarder = forwarder_.load();
    if (!forwarder) return false;
    try {
        task(*forwarder);
    } catch (const std::exception& e) {
        log_->error("worker ", index_, ": control task failed: ", e.what());
    }
    return true;
}

void Worker::post(std::function<void(core::Forwarder&)> task) {
    mailbox_.post([this, task = std::move(task)] { run_task(task); });
    wake();
}

// A called task may use whatever its caller lent it (its locals, by reference), so it runs only
// while the caller waits: the caller and the task share this record, and whichever comes first
// decides. A caller that gives up on a task still queued cancels it for good; a task already
// running is waited for, however long it takes (tasks do not block).
struct Worker::CallState {
    enum class Stage { Queued, Running, Ran, NotRun, Abandoned };
    std::mutex mutex;
    std::condition_variable changed;
    Stage stage = Stage::Queued;
};

bool Worker::call(const std::function<void(core::Forwarder&)>& task, std::chrono::milliseconds timeout) {
    using Stage = CallState::Stage;
    if (ended_.load()) return false;
    auto state = std::make_shared<CallState>();
    mailbox_.post([this, &task, state] {
        {
            std::lock_guard lock(state->mutex);
            if (state->stage == Stage::Abandoned) return;  // the caller and what it lent are gone
            state->stage = Stage::Running;
        }
        const bool ran = run_task(task);
        {
            std::lock_guard lock(state->mutex);
            state->stage = ran ? Stage::Ran : Stage::NotRun;
        }
        state->changed.notify_all();
    });
    wake();
    std::unique_lock lock(state->mutex);
    const auto finished = [&] { return state->stage == Stage::Ran || state->stage == Stage::NotRun; };
    if (!state->changed.wait_for(lock, timeout, finished)) {
        if (state->stage == Stage::Queued) {
            state->stage = Stage::Abandoned;
            return false;
        }
        log_->warn("worker ", index_, ": a control task is taking longer than ", timeout.count(), " ms");
        state->changed.wait(lock, finished);
    }
    return state->stage == Stage::Ran;
}

void Worker::run(Setup setup) {
    std::unique_ptr<engine::Engine> engine;
    std::unique_ptr<core::Forwarder> forwarder;
    try {
        auto selection = engine::make_engine(setup.global->engine, engine_options(setup));
        engine = std::move(selection.engine);
        const std::string engine_name(engine->name());
        forwarder = std::make_unique<core::Forwarder>(*setup.global, *setup.plan, *engine, *setup.log, *setup.limits,
                                                      setup.reuse_port, setup.index, setup.inherited);
        if (setup.connection_log) forwarder->set_connection_log(setup.connection_log, setup.global->log_format);
        forwarder->set_descriptor_ceiling(setup.descriptor_ceiling);
        if (setup.faults && setup.faults->pipe_trim_ms != 0)
            forwarder->set_pipe_trim_interval(std::chrono::milliseconds(setup.faults->pipe_trim_ms));
        started_.set_value({kExitOk, std::move(selection.description), engine_name, forwarder->listen_addresses()});
    } catch (const engine::EngineUnavailable& e) {
        started_.set_value(start_failure(kExitRuntimeFailure, std::string("engine=uring requested but cannot run: ") + e.what()));
        ended_.store(true);
        return;
    } catch (const core::ListenError& e) {
        started_.set_value(start_failure(kExitBadConfig, e.what()));
        ended_.store(true);
        return;
    } catch (const std::exception& e) {
        started_.set_value(start_failure(kExitRuntimeFailure, "worker " + std::to_string(setup.index) + ": " + e.what()));
        ended_.store(true);
        return;
    }
    if (go_.get_future().get()) {
        forwarder_.store(forwarder.get());
        set_engine(engine.get());
        try {
            serve(*forwarder, setup);
        } catch (const std::exception& e) {
            // Its sessions are gone with it: the control thread sees this and stops ringlb.
            setup.log->error("worker ", setup.index, " failed: ", e.what(), "; ringlb stops");
            // Before anything else: its peers must not take a cut stream for a complete one.
            forwarder->abort_all_sessions(core::EndCause::Error);
            {
                std::lock_guard lock(failure_mutex_);
                failure_ = e.what();
            }
            failed_.store(true);
        }
        // A stop whose deadline passed: what close_all_sessions() could not see end goes now.
        forwarder->abort_all_sessions(core::EndCause::Shutdown);
        set_engine(nullptr);
        active_.store(0);
    }
    final_stats_ = forwarder->stats();
    forwarder_.store(nullptr);
    ended_.store(true);
    mailbox_.run_pending();  // nobody waits forever on a task posted at the very end
}

std::string Worker::failure() const {
    std::lock_guard lock(failure_mutex_);
    return failure_;
}

void Worker::serve(core::Forwarder& forwarder, const Setup& setup) {
    forwarder.start_accepting();
    const uint32_t stall_ms = setup.faults ? setup.faults->stall_for(setup.index) : 0;
    const auto stall_at = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    bool stalled = false;
    while (!stop_.load(std::memory_order_relaxed)) {
        forwarder.run_once(setup.round);
        mailbox_.run_pending();
        active_.store(forwarder.active_sessions(), std::memory_order_relaxed);
        turns_.fetch_add(1, std::memory_order_relaxed);
        if (stall_ms != 0 && !stalled && std::chrono::steady_clock::now() >= stall_at) {
            stalled = true;  // test hook (RINGLB_FAULT worker-stall): a worker stuck in its loop
            std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
        }
    }
}

}  // namespace ringlb::app
