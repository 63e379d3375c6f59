// The runtime's lifecycle: starting the workers and the control components, the control loop,
// signals and the graceful stop.
#include "ringlb/app/runtime.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "ringlb/admin/admin_server.hpp"
#include "ringlb/admin/metrics.hpp"
#include "ringlb/app/descriptors.hpp"
#include "ringlb/app/privileges.hpp"
#include "ringlb/app/server.hpp"
#include "ringlb/dns/resolver.hpp"
#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/engine/factory.hpp"
#include "ringlb/health/active.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::app {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kControlRound = std::chrono::milliseconds(250);
// After the shutdown deadline, sessions are ended; this long is left for every worker to do it.
constexpr auto kCloseGrace = std::chrono::seconds(2);
constexpr auto kCapReportInterval = std::chrono::seconds(10);

// connections and health checks, and epoll also works where io_uring is refused.
std::unique_ptr<engine::Engine> make_control_engine() {
    engine::EngineOptions options;
    options.buffer_size = 4096;
    options.initial_buffers = 64;
    options.max_buffers = 256;
    return engine::make_engine(config::EngineChoice::Epoll, options).engine;
}


}  // namespace

Runtime::Runtime(std::string config_path, config::Config config, Logger& log,
                 std::function<void(config::Config&)> overrides)
    : config_path_(std::move(config_path)),
      config_(std::move(config)),
      log_(log),
      overrides_(std::move(overrides)),
      limits_(config_) {
    // No name is resolved yet: a rule's dns entries contribute servers once their first answer arrives.
    config::Config for_workers = expanded(config_);
    for (config::RuleConfig& rule : for_workers.rules) {
        auto shared = std::make_shared<const config::RuleConfig>(std::move(rule));
        initial_plan_.order.push_back(static_cast<uint16_t>(slots_.size()));
        initial_plan_.slots.push_back({shared, true, {}, {}});
        slots_.push_back({shared->id, shared});
    }
    // The file read at start is the first successful load.
    reload_status_.last_success_unix = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    reload_status_.last_attempt_unix = reload_status_.last_success_unix;
}

Runtime::~Runtime() {
    resolver_.reset();  // first: its thread wakes the control engine
    reload_job_.reset();  // so does the reload's (joined here); nobody waits for its reply any more
    reload_waiters_.clear();
    // Components first: they use the control engine. The metrics server is stopped and given a
    // moment for its cancelled requests to complete; the others wait for theirs themselves.
    if (metrics_server_) {
        metrics_server_->stop();
        const auto until = Clock::now() + std::chrono::seconds(2);
        while (!metrics_server_->idle() && Clock::now() < until) dispatcher_->run_once(std::chrono::milliseconds(10));
    }
    checker_.reset();
    metrics_server_.reset();
    admin_server_.reset();
    dispatcher_.reset();
    control_engine_.reset();
    for (auto& worker : workers_) worker->stop();
    // Every worker ends before any is destroyed: one still closing its sessions may hand a
    // server connection to a client queued on another (see core/server_queue.hpp).
    for (auto& worker : workers_) worker->join();
    workers_.clear();
}

int Runtime::run() {
    if (const char* faults = std::getenv("RINGLB_FAULT"); faults && *faults) {
        try {
            faults_ = parse_fault_hooks(faults);
        } catch (const std::invalid_argument& e) {
            log_.error(e.what());
            return kExitBadConfig;
        }
    }
    try {
        take_handover();
        take_activated_listeners();
    } catch (const std::exception& e) {
        log_.error(e.what());
        return kExitRuntimeFailure;
    }
    open_files_ = raise_open_files_limit();
    try {
        claim_listen_addresses(config_);
        drop_listen_claims_unused_by(config_);  // claims passed on by an upgrade's old process
    } catch (const std::exception& e) {
        log_.error(e.what());
        return kExitBadConfig;
    }
    notifier_ = ServiceNotifier::from_environment(log_);
    const int started = start_workers();
    release_inherited_listeners();
    if (started != kExitOk) return started;
    if (faults_.any()) log_.warn("RINGLB_FAULT=", faults_.text, ": test fault hooks are active");
    report_open_files_limit();
    try {
        start_control_components();
        // Everything is bound: from here on root is not needed.
        if (!config_.global.user.empty()) drop_privileges(config_.global.user, log_);
    } catch (const std::exception& e) {
        log_.error(e.what());
        for (auto& worker : workers_) worker->stop();
        return kExitBadConfig;
    }
    // Last: operators and scripts take "ready" to mean every listener, admin port included, is up.
    log_.info("ready: listening on ", join(listening_, " "), "; ", config_.rules.size(), " rule",
              config_.rules.size() == 1 ? "" : "s", ", ", workers_.size(), " worker thread",
              workers_.size() == 1 ? "" : "s", " (", config_.source, ")");
    report_upgraded();  // first: MAINPID= goes to the service manager before READY=1
    notifier_.ready("ready: " + service_status());
    if (const auto interval = notifier_.watchdog_interval()) {
        turn_watch_.emplace(*interval, Clock::now());
        log_.info("watchdog: pinging the service manager every ", (*interval / 2).count() / 1000,
                  " ms while every worker turns");
    }
    {
        SignalWatcher watcher(signals_, log_, [this] { control_engine_->wake(); });
        control_loop();
    }
    core::ForwarderStats total;
    for (auto& worker : workers_) {
        worker->join();
        const core::ForwarderStats& s = worker->final_stats();
        total.accepted += s.accepted;
        total.sessions_ended += s.sessions_ended;
        total.connect_failures += s.connect_failures;
        total.rejected_no_rule += s.rejected_total();
    }
    log_.info("stopped: ", total.accepted, " accepted, ", total.sessions_ended, " sessions ended, ",
              total.connect_failures, " connect failures, ", total.rejected_no_rule, " rejected");
    if (const auto failed = failed_worker()) {
        // A supervisor restarts a process that exits non-zero; one that lingers half-dead it does not.
        log_.error("exiting with status ", kExitRuntimeFailure, ": worker ", *failed,
                   " failed: ", workers_[*failed]->failure());
        return kExitRuntimeFailure;
    }
    return kExitOk;
}

int Runtime::start_workers() {
    const uint64_t physical = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    buffer_budget_ = std::make_shared<engine::BufferBudget>(config::buffer_memory_cap(config_.global, physical));
    const unsigned threads = config_.global.threads == 0 ? usable_cpus() : config_.global.threads;
    Logger* connection_log = config_.global.log_connections ? &log_ : nullptr;
    // Workers start one after the other, so the first one's bind error is the one reported.
    std::optional<StartReport> failure;
    std::vector<std::string> listening;
    std::string first_engine;
    for (unsigned i = 0; i < threads && !failure; ++i) {
        const Worker::Setup setup{.index = i,
                                  .global = &config_.global,
                                  .plan = &initial_plan_,
                                  .log = &log_,
                                  .connection_log = connection_log,
                                  .limits = &limits_,
                                  .buffer_budget = buffer_budget_,
                                  .reuse_port = threads > 1,
                                  .faults = &faults_,
                                  .descriptor_ceiling = data_path_descriptor_ceiling(open_files_.soft),
                                  .inherited = [this, i, threads](const net::SocketAddress& address) {
                                      return inherited_.take(address, i, threads);
                                  },
                                  .round = loop_round(std::chrono::milliseconds(250))};
        workers_.push_back(std::make_unique<Worker>(setup));
        StartReport report = workers_.back()->wait_started();
        if (report.exit_code != kExitOk) {
            failure = std::move(report);
        } else if (i == 0) {
            log_.info(report.message);  // the engine line comes first, as operators look for it
            engine_features_ = report.message;
            first_engine = report.engine;
            listening = std::move(report.listen_addresses);
        } else if (report.engine != first_engine) {
            // With "auto" each worker chooses alone: one that fell back must not go unnoticed.
            log_.warn("worker ", i, " runs a different engine than worker 0 (", first_engine, "): ", report.message);
        }
    }
    // A server connection freed on one worker may go to a client queued on another: posted to it.
    // Set before any worker serves; workers_ does not change while they do.
    if (!failure)
        limits_.server_queues().set_deliver([this](core::QueueGrant grant) {
            const unsigned worker = core::Forwarder::worker_of(grant.session_id);
            if (worker >= workers_.size()) {  // never: ids name existing workers; nothing may leak
                core::ServerConnections::give_back(*grant.count);
                return;
            }
            workers_[worker]->post([grant = std::move(grant)](core::Forwarder& forwarder) { forwarder.on_queue_grant(grant); });
        });
    for (auto& worker : workers_) worker->go(!failure);
    if (failure) {
        for (auto& worker : workers_) worker->join();
        log_.error(failure->message);
        return failure->exit_code;
    }
    // "engine=uring (features...)": keep the name and the bracket apart for stats and metrics.
    const auto space = engine_features_.find(' ');
    engine_name_ = engine_features_.substr(7, space == std::string::npos ? std::string::npos : space - 7);
    engine_features_ = space == std::string::npos ? "" : engine_features_.substr(space + 1);
    if (engine_features_.size() >= 2 && engine_features_.front() == '(') 
        engine_features_ = engine_features_.substr(1, engine_features_.size() - 2);
    listening_ = std::move(listening);
    return kExitOk;
}

void Runtime::start_control_components() {
    control_engine_ = make_control_engine();
    dispatcher_ = std::make_unique<engine::Dispatcher>(*control_engine_);
    checker_ = std::make_unique<health::ActiveChecker>(
        *dispatcher_, log_, [this](uint32_t slot, size_t server, bool up, const std::string&) {
            on_health_report(slot, server, up);
        });
    update_health_targets();
    sync_dns_targets();
    open_control_ports();
}

void Runtime::open_control_ports() {
    if (config_.admin.listen.enabled) {
        admin_server_ = std::make_unique<admin::AdminServer>(*dispatcher_, config_.admin, *this, log_,
                                                             std::string("ringlb ") + RINGLB_VERSION);
        log_.info("admin port on ", config_.admin.listen.to_string());
    }
    if (config_.metrics.listen.enabled) {
        metrics_server_ = std::make_unique<admin::MetricsServer>(*dispatcher_, config_.metrics,
                                                                 [this] { return snapshot(); }, log_);
        log_.info("metrics on http://", config_.metrics.listen.to_string(), "/metrics");
    }
}

// ---- the control loop and the stop -------------------------------------------------------

void Runtime::control_loop() {
    while (signals_.stop_requests.load() == 0 && !handed_over_) {
        dispatcher_->run_once(loop_round(kControlRound));
        if (const auto failed = failed_worker()) {
            // Its sessions are gone already; the others are closed at once, no draining.
            notifier_.stopping("stopping: worker " + std::to_string(*failed) + " failed");
            for (auto& worker : workers_) worker->stop();
            return;
        }
        handle_signals();
        check_upgrade();
        finish_reload_if_done();
        apply_dns_updates();
        report_buffer_cap();
        service_tick();
    }
    drain_and_stop();
}

// At most one line per kCapReportInterval: how often workers found the receive-buffer memory cap
// reached since the last line (each time a session that holds buffers had to wait).
void Runtime::report_buffer_cap() {
    const uint64_t reached = buffer_budget_->cap_reached();
    const auto now = Clock::now();
    if (reached == cap_reached_reported_ || now - cap_reported_at_ < kCapReportInterval) return;
    log_.warn("receive buffer memory cap of ", buffer_budget_->max_bytes() / (uint64_t{1024} * 1024), " MiB reached ",
              reached - cap_reached_reported_, " time(s) since the last report: sessions that hold buffers wait "
              "for them; raise [global] max_buffer_memory if this persists");
    cap_reached_reported_ = reached;
    cap_reported_at_ = now;
}

// After the engine line (operators and tests look for it first).
void Runtime::report_open_files_limit() const {
    if (!open_files_.error.empty()) log_.warn("open file limit ", open_files_.soft, " kept: ", open_files_.error);
    else if (open_files_.soft != open_files_.found)
        log_.info("open file limit raised from ", open_files_.found, " to ", open_files_.soft);
    const uint64_t pipes = splice_pipes_wanted();
    const uint64_t needed = descriptors_needed(config_.global.max_sessions, pipes, open_files_.soft);
    if (open_files_.soft >= needed) return;
    const int ceiling = data_path_descriptor_ceiling(open_files_.soft);
    const std::string for_pipes =
        pipes == 0 ? "" : ", 2 per pipe of the splice path (" + std::to_string(pipes) + " = max_pipes x workers; closed "
                                                                "first when descriptors run short)";
    log_.warn("open file limit ", open_files_.soft, " is below the ", needed, " that max_sessions = ",
              config_.global.max_sessions, " needs (2 per session", for_pipes, ", ",
              descriptor_reserve(open_files_.soft),
              " kept for the admin and metrics ports, 64 for listeners and engines): clients are dropped once "
              "descriptor ", ceiling, " is reached; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
              "max_sessions");
}

// The pipes the workers may hold when a rule splices: none when no rule does.
uint64_t Runtime::splice_pipes_wanted() const {
    const bool splices = std::any_of(config_.rules.begin(), config_.rules.end(),
                                     [](const config::RuleConfig& rule) { return rule.zero_copy != config::ZeroCopy::Off; });
    return splices ? uint64_t{config_.global.max_pipes} * workers_.size() : 0;
}

std::optional<size_t> Runtime::failed_worker() const {
    for (size_t i = 0; i < workers_.size(); ++i)
        if (workers_[i]->failed()) return i;
    return std::nullopt;
}

void Runtime::handle_signals() {
    // The outcome is logged either way (see reload_failed); nobody waits for the reply.
    if (signals_.reload.exchange(false)) reload([](const admin::Reply&) {});
    if (signals_.reopen_log.exchange(false)) {
        log_.reopen();
        log_.info("log file reopened (SIGUSR1)");
    }
    if (signals_.upgrade.exchange(false)) {
        if (handed_over_) log_.warn("upgrade: this process has handed over already; signal the new one");
        else begin_upgrade();
    }
}

// SIGTERM/SIGINT: stop accepting at once, give live sessions up to shutdown_timeout to finish,
// then close the rest. A second signal skips the wait.
void Runtime::drain_and_stop() {
    // Waited for: once it returns, every listener is closed and new connections are refused
    // (after an upgrade: left to the new process, which goes on accepting on the same sockets).
    if (handed_over_) {
        notifier_ = ServiceNotifier(log_);  // the new process speaks to the service manager now
    } else {
        notifier_.stopping("stopping: " + service_status());
    }
    uint64_t open_sessions = 0;
    on_every_worker([&](core::Forwarder& forwarder) {
        forwarder.stop_accepting(handed_over_);
        open_sessions += forwarder.active_sessions();
    });
    const auto active = [this] {
        uint64_t sum = 0;
        for (const auto& worker : workers_) sum += worker->active_sessions();
        return sum;
    };
    const auto deadline = Clock::now() + config_.global.shutdown_timeout;
    if (open_sessions > 0)
        log_.info("waiting up to ", health::format_duration(config_.global.shutdown_timeout), " for ",
                  open_sessions, " session(s) to finish");
    // Keep the control thread serving (admin, metrics) while sessions drain.
    while ((open_sessions > 0 || active() > 0) && Clock::now() < deadline && signals_.stop_requests.load() < 2) {
        open_sessions = 0;  // from now on the workers' own counts, refreshed every round
        dispatcher_->run_once(loop_round(std::chrono::milliseconds(100)));
        handle_signals();
        finish_reload_if_done();
        service_tick();
    }
    if (active() > 0) {
        log_.info("closing ", active(), " session(s) still open");
        // At once, and truthfully: FINs for quiescent sessions, resets for those cut mid-stream.
        for (auto& worker : workers_)
            worker->post([](core::Forwarder& forwarder) { forwarder.abort_all_sessions(core::EndCause::Shutdown); });
        const auto grace_end = Clock::now() + kCloseGrace;
        while (active() > 0 && Clock::now() < grace_end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& worker : workers_) worker->stop();
}

}  // namespace ringlb::app
