#include "ringlb/app/runtime.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "ringlb/admin/admin_server.hpp"
#include "ringlb/admin/metrics.hpp"
#include "ringlb/app/privileges.hpp"
#include "ringlb/app/server.hpp"
#include "ringlb/dns/resolver.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/engine/factory.hpp"
#include "ringlb/health/active.hpp"
#include "ringlb/health/passive.hpp"

namespace ringlb::app {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kControlRound = std::chrono::milliseconds(250);
constexpr size_t kMaxListedSessions = 10000;
// After the shutdown deadline, sessions are closed; this long is left for their requests to end.
constexpr auto kCloseGrace = std::chrono::seconds(2);

std::string join(const std::vector<std::string>& items, const char* separator = ",") {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
    return out;
}

std::string format_age(std::chrono::milliseconds age) {
    const auto seconds = age.count() / 1000;
    if (seconds < 60) return std::to_string(seconds) + "." + std::to_string(age.count() % 1000 / 100) + "s";
    if (seconds < 3600) return std::to_string(seconds / 60) + "m" + std::to_string(seconds % 60) + "s";
    return std::to_string(seconds / 3600) + "h" + std::to_string(seconds / 60 % 60) + "m";
}

// The control thread's own engine: epoll always. Its traffic is a few admin and metrics
// connections and health checks, and epoll also works where io_uring is refused.
std::unique_ptr<engine::Engine> make_control_engine() {
    engine::EngineOptions options;
    options.buffer_size = 4096;
    options.buffer_count = 64;
    return engine::make_engine(config::EngineChoice::Epoll, options).engine;
}

// Writes `text` to `path` so that a crash leaves either the old or the new file, never half of
// one: a temporary file, fsync, rename; the previous file is kept as path.bak.
std::string write_atomically(const std::string& path, const std::string& text) {
    const std::string temp = path + ".tmp";
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return "cannot create " + temp + ": " + std::strerror(errno);
    size_t written = 0;
    while (written < text.size()) {
        const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const std::string error = std::strerror(errno);
            ::close(fd);
            ::unlink(temp.c_str());
            return "cannot write " + temp + ": " + error;  // NOLINT(performance-inefficient-string-concatenation): error path
        }
        written += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(temp.c_str());
        return "cannot write " + temp + ": " + std::strerror(errno);
    }
    if (::access(path.c_str(), F_OK) == 0 && ::link(path.c_str(), (path + ".bak").c_str()) != 0) {
        if (errno == EEXIST) {
            ::unlink((path + ".bak").c_str());
            if (::link(path.c_str(), (path + ".bak").c_str()) != 0)
                return "cannot keep the previous file as " + path + ".bak: " + std::strerror(errno);
        } else {
            return "cannot keep the previous file as " + path + ".bak: " + std::strerror(errno);
        }
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        ::unlink(temp.c_str());
        return "cannot rename " + temp + " to " + path + ": " + std::strerror(errno);
    }
    return {};
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
    const config::Config for_workers = expanded(config_);
    initial_plan_ = core::Forwarder::initial_plan(for_workers);
    for (const config::RuleConfig& rule : for_workers.rules) slots_.push_back({rule.id, rule});
}

Runtime::~Runtime() {
    resolver_.reset();  // first: its thread wakes the control engine
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
    workers_.clear();
}

int Runtime::run() {
    if (const int code = start_workers(); code != kExitOk) return code;
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
    return kExitOk;
}

int Runtime::start_workers() {
    const unsigned threads = config_.global.threads == 0 ? usable_cpus() : config_.global.threads;
    Logger* connection_log = config_.global.log_connections ? &log_ : nullptr;
    // Workers start one after the other, so the first one's bind error is the one reported.
    std::optional<StartReport> failure;
    std::vector<std::string> listening;
    for (unsigned i = 0; i < threads && !failure; ++i) {
        Worker::Setup setup{i, &config_.global, &initial_plan_, &log_, connection_log, &limits_, threads > 1};
        workers_.push_back(std::make_unique<Worker>(setup));
        StartReport report = workers_.back()->wait_started();
        if (report.exit_code != kExitOk) {
            failure = std::move(report);
        } else if (i == 0) {
            log_.info(report.message);  // the engine line comes first, as operators look for it
            engine_features_ = report.message;
            listening = std::move(report.listen_addresses);
        }
    }
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
    while (signals_.stop_requests.load() == 0) {
        dispatcher_->run_once(kControlRound);
        handle_signals();
        apply_dns_updates();
    }
    drain_and_stop();
}

void Runtime::handle_signals() {
    if (signals_.reload.exchange(false)) {
        const admin::Reply reply = reload();
        if (!reply.ok) log_.error("reload failed, the running configuration is unchanged: ", reply.error);
    }
    if (signals_.reopen_log.exchange(false)) {
        log_.reopen();
        log_.info("log file reopened (SIGUSR1)");
    }
}

// SIGTERM/SIGINT: stop accepting at once, give live sessions up to shutdown_timeout to finish,
// then close the rest. A second signal skips the wait.
void Runtime::drain_and_stop() {
    // Waited for: once it returns, every listener is closed and new connections are refused.
    uint64_t open_sessions = 0;
    on_every_worker([&](core::Forwarder& forwarder) {
        forwarder.stop_accepting();
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
        dispatcher_->run_once(std::chrono::milliseconds(100));
        handle_signals();
    }
    if (active() > 0) {
        log_.info("closing ", active(), " session(s) still open");
        for (auto& worker : workers_)
            worker->post([](core::Forwarder& forwarder) { forwarder.close_all_sessions(core::EndCause::Shutdown); });
        const auto grace_end = Clock::now() + kCloseGrace;
        while (active() > 0 && Clock::now() < grace_end) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto& worker : workers_) worker->stop();
}

// ---- health ------------------------------------------------------------------------------

// Checks are keyed by rule id, not by slot: a rule changed by a reload or by DNS gets a new slot,
// but the checker keeps each server's state by address, so a server already UP stays UP and
// the change causes no outage.
uint32_t Runtime::health_key(const std::string& rule_id) {
    const auto [entry, added] = health_keys_.try_emplace(rule_id, static_cast<uint32_t>(health_keys_.size()));
    return entry->second;
}

const health::CheckTarget* Runtime::health_target(uint32_t key) const {
    for (const health::CheckTarget& target : health_targets_)
        if (target.rule_key == key) return &target;
    return nullptr;
}

// Whether the checker has `address` of rule `rule_id` UP right now.
bool Runtime::checked_up(const std::string& rule_id, const net::SocketAddress& address) const {
    const auto key = health_keys_.find(rule_id);
    const health::CheckTarget* target = key == health_keys_.end() ? nullptr : health_target(key->second);
    if (!target) return false;
    for (size_t i = 0; i < target->servers.size(); ++i)
        if (target->servers[i] == address) return checker_->is_up(key->second, i);
    return false;
}

void Runtime::update_health_targets() {
    std::vector<health::CheckTarget> targets;
    for (size_t slot = 0; slot < slots_.size(); ++slot) {
        const auto& rule = slots_[slot].live;
        if (!rule || !rule->health.enabled) continue;
        health::CheckTarget target;
        target.rule_key = health_key(rule->id);
        target.rule_id = rule->id;
        for (const config::ServerConfig& server : rule->servers) target.servers.push_back(server.address);
        target.check = rule->health;
        targets.push_back(std::move(target));
    }
    health_targets_ = targets;  // first: set_targets may report at once
    checker_->set_targets(std::move(targets));
}

void Runtime::on_health_report(uint32_t key, size_t server, bool up) {
    const health::CheckTarget* target = health_target(key);
    if (!target || server >= target->servers.size()) return;
    const auto slot = live_slot(target->rule_id);
    if (!slot) return;
    const auto& servers = slots_[*slot].live->servers;
    for (size_t index = 0; index < servers.size(); ++index) {
        if (servers[index].address != target->servers[server]) continue;
        for (auto& worker : workers_)
            worker->post([slot = *slot, index, up](core::Forwarder& forwarder) {
                forwarder.set_server_checked(slot, index, up);
            });
    }
}

// ---- rules: plans, reload, add/modify/remove ----------------------------------------------

core::RulePlan Runtime::plan_for(const config::Config& next, std::vector<SlotRecord>& slots) const {
    core::RulePlan plan;
    for (const SlotRecord& record : slots) plan.slots.push_back({record.live, false, {}, {}});
    std::vector<bool> keep(slots.size(), false);
    for (const config::RuleConfig& rule : next.rules) {
        const auto same_id = [&](const SlotRecord& record) { return record.live && record.id == rule.id; };
        const auto existing = std::find_if(slots.begin(), slots.end(), same_id);
        if (existing != slots.end() && config::rule_to_toml(*existing->live) == config::rule_to_toml(rule)) {
            const auto slot = static_cast<size_t>(existing - slots.begin());
            keep[slot] = true;
            plan.order.push_back(static_cast<uint16_t>(slot));
            continue;
        }
        // New or changed: a fresh slot; live sessions of the old one finish on the old rule.
        plan.order.push_back(static_cast<uint16_t>(slots.size()));
        slots.push_back({rule.id, rule});
        plan.slots.push_back({rule, true, {}, {}});
        keep.push_back(true);
    }
    for (size_t slot = 0; slot < keep.size(); ++slot) {
        if (keep[slot]) continue;
        slots[slot].live.reset();
        plan.slots[slot].rule.reset();
    }
    return plan;
}

std::vector<std::string> Runtime::restart_only_changes(const config::Config& next) const {
    std::vector<std::string> changed;
    const config::GlobalConfig& a = config_.global;
    const config::GlobalConfig& b = next.global;
    if (a.engine != b.engine) changed.push_back("global.engine");
    if (a.threads != b.threads) changed.push_back("global.threads");
    if (a.max_sessions != b.max_sessions) changed.push_back("global.max_sessions");
    if (a.max_sessions_per_ip != b.max_sessions_per_ip) changed.push_back("global.max_sessions_per_ip");
    if (a.buffer_size != b.buffer_size) changed.push_back("global.buffer_size");
    if (a.receive_buffers != b.receive_buffers) changed.push_back("global.receive_buffers");
    if (a.multishot_recv != b.multishot_recv) changed.push_back("global.multishot_recv");
    if (a.log_connections != b.log_connections || a.log_format != b.log_format || a.log_file != b.log_file)
        changed.push_back("global.log_*");
    if (a.user != b.user) changed.push_back("global.user");
    // [admin] and [metrics] listeners are bound once at start.
    const auto control_part = [&](config::Config c) {
        c.rules.clear();
        c.global = config_.global;
        c.source.clear();
        return config::to_toml(c);
    };
    if (control_part(config_) != control_part(next)) changed.push_back("[admin] or [metrics]");
    return changed;
}

std::string Runtime::apply_config(config::Config next) {
    if (next.rules.size() > UINT16_MAX) return "too many rules";
    std::vector<SlotRecord> slots = slots_;
    core::RulePlan plan = plan_for(expanded(next), slots);
    if (slots.size() > UINT16_MAX)
        return "too many rule changes since start (" + std::to_string(slots.size()) + " rule slots): restart ringlb";
    for (core::RulePlan::Slot& slot : plan.slots) {
        if (!slot.changed || !slot.rule) continue;
        if (slot.rule->health.enabled)
            for (const config::ServerConfig& server : slot.rule->servers)
                slot.checked_up.push_back(checked_up(slot.rule->id, server.address));
        // Servers the rule's previous version did not have join with slow start.
        if (const auto previous = live_slot(slot.rule->id)) {
            const auto& before = slots_[*previous].live->servers;
            for (const config::ServerConfig& server : slot.rule->servers)
                slot.joining.push_back(std::none_of(before.begin(), before.end(), [&](const config::ServerConfig& old) {
                    return old.address == server.address;
                }));
        }
    }
    for (size_t slot = slots_.size(); slot < slots.size(); ++slot) {
        const config::RuleConfig& rule = *slots[slot].live;
        limits_.set_rule_limits(static_cast<uint16_t>(slot),
                                {rule.max_clients, rule.max_sessions_per_ip, rule.max_conn_rate_per_ip});
    }
    // Worker 0 first: a listen address that cannot be bound fails there, before anything changed.
    std::string error;
    for (size_t i = 0; i < workers_.size(); ++i) {
        const bool answered = workers_[i]->call([&](core::Forwarder& forwarder) {
            try {
                forwarder.apply(plan);
            } catch (const core::ListenError& e) {
                error = e.what();
            }
        });
        if (!answered) error = "worker " + std::to_string(i) + " did not answer";
        if (!error.empty()) {
            if (i > 0) log_.error("rule change applied to ", i, " of ", workers_.size(), " workers only: ", error);
            return error;
        }
    }
    slots_ = std::move(slots);
    config_.rules = std::move(next.rules);
    log_.set_level(next.global.log_level);
    config_.global.log_level = next.global.log_level;
    config_.global.shutdown_timeout = next.global.shutdown_timeout;
    config_.global.resolvers = next.global.resolvers;
    update_health_targets();
    sync_dns_targets();
    return {};
}

config::Config Runtime::with_rules(std::vector<config::RuleConfig> rules) const {
    config::Config next = config_;
    next.rules = std::move(rules);
    return next;
}

// ---- DNS server entries ------------------------------------------------------------------

config::Config Runtime::expanded(const config::Config& written) const {
    config::Config out = written;
    for (config::RuleConfig& rule : out.rules) rule = dns::expand_rule(rule, resolved_);
    return out;
}

void Runtime::sync_dns_targets() {
    std::vector<dns::Target> targets = dns::targets_of(config_.rules);
    std::erase_if(resolved_, [&](const auto& entry) {
        return std::none_of(targets.begin(), targets.end(), [&](const dns::Target& t) { return t.endpoint == entry.first; });
    });
    if (resolver_ && resolver_servers_ != config_.global.resolvers) resolver_.reset();  // a reload changed them
    if (!resolver_ && targets.empty()) return;  // no dns entry: no resolver thread
    try {
        if (!resolver_) {
            dns::Resolver::Options options;
            options.servers = config_.global.resolvers;
            options.wake = [this] { control_engine_->wake(); };
            resolver_ = std::make_unique<dns::Resolver>(log_, std::move(options));
            resolver_servers_ = config_.global.resolvers;
        }
        resolver_->set_targets(std::move(targets));
    } catch (const std::exception& e) {
        log_.error(e.what(), "; dns entries get no new addresses");
    }
}

void Runtime::apply_dns_updates() {
    if (!resolver_) return;
    std::vector<dns::Update> updates = resolver_->take_updates();
    if (updates.empty()) return;
    std::vector<std::string> changes;
    for (dns::Update& update : updates) {
        std::vector<std::string> texts;
        for (const net::SocketAddress& address : update.addresses) texts.push_back(address.to_string());
        changes.push_back(update.endpoint.to_string() + " resolves to " + join(texts, " "));
        resolved_[update.endpoint] = std::move(update.addresses);
    }
    // A rule whose expansion changed gets a new slot: its live sessions finish on the old one (the
    // servers that left are drained), new sessions see the new set. Rules without a changed name
    // expand to the same text and keep their slot and state.
    if (std::string error = apply_config(config_); !error.empty()) {
        log_.error("dns: the new addresses could not be applied: ", error);
        return;
    }
    for (const std::string& change : changes) log_.info("dns: ", change);  // in effect from now on
}

config::ServerConfig* Runtime::written_server(std::string_view rule_id, const ServerRef& ref, std::string* error) {
    const auto rule = std::find_if(config_.rules.begin(), config_.rules.end(),
                                   [&](const config::RuleConfig& r) { return r.id == rule_id; });
    const net::SocketAddress& running = slots_[ref.slot].live->servers[ref.index].address;
    std::vector<size_t> origin;
    const auto same_server = [&](const config::RuleConfig& expanded) {
        return ref.index < expanded.servers.size() && expanded.servers[ref.index].address == running;
    };
    // Always true unless applying the latest addresses failed and the workers still have older ones.
    const bool found = rule != config_.rules.end() && same_server(dns::expand_rule(*rule, resolved_, &origin));
    if (!found) {
        *error = "rule \"" + std::string(rule_id) + "\" is being updated; try again";
        return nullptr;
    }
    config::ServerConfig& entry = rule->servers[origin[ref.index]];
    if (entry.is_dns()) {
        *error = "server " + running.to_string() + " comes from dns entry " + entry.dns_endpoint() +
                 ", whose addresses share its weight: change it with modify rule";
        return nullptr;
    }
    return &entry;
}

admin::Reply Runtime::reload() {
    config::Config next;
    try {
        next = config::load_config_file(config_path_);
    } catch (const config::ConfigError& e) {
        return admin::Reply::failure("reload: " + std::string(e.what()));
    }
    if (overrides_) overrides_(next);
    const std::vector<std::string> needs_restart = restart_only_changes(next);
    const size_t before = config_.rules.size();
    if (std::string error = apply_config(std::move(next)); !error.empty())
        return admin::Reply::failure("reload: " + error);
    std::string body = "reloaded " + config_path_ + ": " + std::to_string(config_.rules.size()) + " rules (was " +
                       std::to_string(before) + ")\n";
    if (!needs_restart.empty())
        body += "not applied until restart: " + join(needs_restart, ", ") + "\n";
    log_.info(body.substr(0, body.size() - 1));
    return admin::Reply::success(body);
}

admin::Reply Runtime::add_rule(std::string_view inline_table) {
    config::RuleConfig rule;
    try {
        rule = config::parse_rule_inline(inline_table, "add rule");
    } catch (const config::ConfigError& e) {
        return admin::Reply::failure(e.what());
    }
    if (live_slot(rule.id)) return admin::Reply::failure("add rule: rule \"" + rule.id + "\" exists (use modify rule)");
    std::vector<config::RuleConfig> rules = config_.rules;
    rules.push_back(rule);
    config::Config next;
    try {
        next = config::parse_config(config::to_toml(with_rules(std::move(rules))), "add rule");
    } catch (const config::ConfigError& e) {
        return admin::Reply::failure(e.what());
    }
    next.global = config_.global;
    if (std::string error = apply_config(std::move(next)); !error.empty()) return admin::Reply::failure("add rule: " + error);
    log_.info("rule ", rule.id, " added by the operator");
    return admin::Reply::success();
}

admin::Reply Runtime::modify_rule(std::string_view inline_table) {
    config::RuleConfig rule;
    try {
        rule = config::parse_rule_inline(inline_table, "modify rule");
    } catch (const config::ConfigError& e) {
        return admin::Reply::failure(e.what());
    }
    std::vector<config::RuleConfig> rules = config_.rules;
    auto same = std::find_if(rules.begin(), rules.end(), [&](const config::RuleConfig& r) { return r.id == rule.id; });
    if (same == rules.end()) return admin::Reply::failure("modify rule: no rule \"" + rule.id + "\" (use add rule)");
    *same = rule;
    config::Config next;
    try {
        next = config::parse_config(config::to_toml(with_rules(std::move(rules))), "modify rule");
    } catch (const config::ConfigError& e) {
        return admin::Reply::failure(e.what());
    }
    next.global = config_.global;
    if (std::string error = apply_config(std::move(next)); !error.empty())
        return admin::Reply::failure("modify rule: " + error);
    log_.info("rule ", rule.id, " modified by the operator; live sessions keep the previous version");
    return admin::Reply::success();
}

admin::Reply Runtime::remove_rule(std::string_view rule_id) {
    std::vector<config::RuleConfig> rules = config_.rules;
    const auto removed = std::erase_if(rules, [&](const config::RuleConfig& r) { return r.id == rule_id; });
    if (removed == 0) return admin::Reply::failure("remove rule: no rule \"" + std::string(rule_id) + "\"");
    if (rules.empty()) return admin::Reply::failure("remove rule: \"" + std::string(rule_id) + "\" is the last rule");
    if (std::string error = apply_config(with_rules(std::move(rules))); !error.empty())
        return admin::Reply::failure("remove rule: " + error);
    log_.info("rule ", rule_id, " removed by the operator; its live sessions go on");
    return admin::Reply::success();
}

admin::Reply Runtime::clean_sessions(std::string_view rule_id) {
    std::vector<uint16_t> retired;
    for (size_t slot = 0; slot < slots_.size(); ++slot)
        if (slots_[slot].id == rule_id && !slots_[slot].live) retired.push_back(static_cast<uint16_t>(slot));
    if (retired.empty() && !live_slot(rule_id))
        return admin::Reply::failure("clean sessions: no rule \"" + std::string(rule_id) + "\"");
    size_t closed = 0;
    on_every_worker([&](core::Forwarder& forwarder) { closed += forwarder.close_sessions_in(retired); });
    return admin::Reply::success("closed " + std::to_string(closed) + " session(s) of earlier versions of rule " +
                                 std::string(rule_id) + "\n");
}

// ---- servers -----------------------------------------------------------------------------

std::optional<uint16_t> Runtime::live_slot(std::string_view rule_id) const {
    for (size_t slot = 0; slot < slots_.size(); ++slot)
        if (slots_[slot].live && slots_[slot].id == rule_id) return static_cast<uint16_t>(slot);
    return std::nullopt;
}

std::optional<Runtime::ServerRef> Runtime::find_server(std::string_view rule_id, std::string_view server,
                                                        std::string* error) const {
    const auto slot = live_slot(rule_id);
    if (!slot) {
        *error = "no rule \"" + std::string(rule_id) + "\"";
        return std::nullopt;
    }
    const auto address = net::SocketAddress::parse(server);
    if (!address) {
        *error = "bad server address \"" + std::string(server) + "\": " + net::SocketAddress::parse_error(server);
        return std::nullopt;
    }
    const auto& servers = slots_[*slot].live->servers;
    for (size_t i = 0; i < servers.size(); ++i)
        if (servers[i].address == *address) return ServerRef{*slot, i};
    *error = "rule \"" + std::string(rule_id) + "\" has no server " + address->to_string();
    return std::nullopt;
}

admin::Reply Runtime::set_server_state(std::string_view rule_id, std::string_view server,
                                       admin::ServerAdminState state,
                                       std::optional<std::chrono::milliseconds> duration) {
    std::string error;
    const auto ref = find_server(rule_id, server, &error);
    if (!ref) return admin::Reply::failure(error);
    std::optional<Clock::time_point> until;
    if (duration) until = Clock::now() + *duration;
    if (!on_every_worker([&](core::Forwarder& forwarder) {
            forwarder.set_server_admin(ref->slot, ref->index, state, until);
        }))
        return admin::Reply::failure("a worker did not answer");
    static constexpr const char* kWords[] = {"enabled", "disabled", "draining"};
    log_.info("server ", rule_id, "/", server, " ", kWords[static_cast<int>(state)], " by the operator",
              duration ? " for " + health::format_duration(*duration) : std::string());
    return admin::Reply::success();
}

admin::Reply Runtime::set_weight(std::string_view rule_id, std::string_view server, unsigned weight) {
    std::string error;
    const auto ref = find_server(rule_id, server, &error);
    if (!ref) return admin::Reply::failure(error);
    if (weight > 1000) return admin::Reply::failure("weight must be 0..1000");
    config::ServerConfig* written = written_server(rule_id, *ref, &error);
    if (!written) return admin::Reply::failure(error);
    if (!on_every_worker([&](core::Forwarder& forwarder) { forwarder.set_server_weight(ref->slot, ref->index, weight); }))
        return admin::Reply::failure("a worker did not answer");
    // The running config follows, so `dump rules` writes the weight and a reload compares with it.
    slots_[ref->slot].live->servers[ref->index].weight = weight;
    written->weight = weight;
    log_.info("server ", rule_id, "/", server, " weight set to ", weight, " by the operator");
    return admin::Reply::success();
}

admin::Reply Runtime::kill_session(uint64_t session_id) {
    const unsigned worker = core::Forwarder::worker_of(session_id);
    if (worker >= workers_.size()) return admin::Reply::failure("no session " + std::to_string(session_id));
    bool killed = false;
    if (!workers_[worker]->call([&](core::Forwarder& forwarder) { killed = forwarder.kill_session(session_id); }))
        return admin::Reply::failure("the worker did not answer");
    if (!killed) return admin::Reply::failure("no session " + std::to_string(session_id));
    return admin::Reply::success();
}

bool Runtime::on_every_worker(const std::function<void(core::Forwarder&)>& task) {
    bool all = true;
    for (auto& worker : workers_) all = worker->call(task) && all;
    return all;
}

// ---- views -------------------------------------------------------------------------------

admin::Snapshot Runtime::snapshot() {
    admin::Snapshot snapshot;
    snapshot.version = RINGLB_VERSION;
    snapshot.engine = engine_name_;
    snapshot.features = engine_features_;
    snapshot.threads = static_cast<unsigned>(workers_.size());
    snapshot.uptime_seconds =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count());
    std::vector<uint16_t> order;
    for (const config::RuleConfig& rule : config_.rules) {
        order.push_back(*live_slot(rule.id));
        admin::RuleSnapshot out;
        out.id = rule.id;
        out.mode = std::string(config::to_string(rule.mode));
        for (const auto& address : rule.listen) out.listen.push_back(address.to_string());
        for (const auto& pattern : rule.clients) out.clients.push_back(pattern.text());
        for (const auto& pattern : rule.deny) out.deny.push_back(pattern.text());
        out.max_clients = rule.max_clients;
        out.max_sessions_per_ip = rule.max_sessions_per_ip;
        out.max_conn_rate_per_ip = rule.max_conn_rate_per_ip;
        // The servers the workers have: dns entries expanded.
        for (const config::ServerConfig& server : slots_[order.back()].live->servers) {
            admin::ServerSnapshot server_out;
            server_out.address = server.address.to_string();
            server_out.weight = server.weight;
            server_out.backup = server.backup;
            out.servers.push_back(std::move(server_out));
        }
        snapshot.rules.push_back(std::move(out));
    }
    // One worker at a time: each adds its counters to the same snapshot.
    on_every_worker([&](core::Forwarder& forwarder) { forwarder.collect(snapshot, order); });
    return snapshot;
}

admin::Reply Runtime::show_rules() {
    const admin::Snapshot view = snapshot();
    std::ostringstream out;
    for (const admin::RuleSnapshot& rule : view.rules) {
        out << "rule " << rule.id << " mode=" << rule.mode << " listen=" << join(rule.listen)
            << " clients=" << (rule.clients.empty() ? "*" : join(rule.clients));
        if (!rule.deny.empty()) out << " deny=" << join(rule.deny);
        out << " max_clients=" << rule.max_clients << " max_sessions_per_ip=" << rule.max_sessions_per_ip
            << " max_conn_rate_per_ip=" << rule.max_conn_rate_per_ip << " active=" << rule.active_sessions
            << " total=" << rule.total_sessions << "\n";
        for (const admin::ServerSnapshot& server : rule.servers)
            out << "  server " << server.address << " " << server.state << " weight=" << server.weight
                << (server.backup ? " backup" : "") << " active=" << server.active_sessions
                << " total=" << server.total_sessions << " failures=" << server.connect_failures << "\n";
    }
    return admin::Reply::success(out.str());
}

admin::Reply Runtime::show_sessions(std::string_view rule_id) {
    std::optional<uint16_t> slot;
    if (!rule_id.empty()) {
        slot = live_slot(rule_id);
        if (!slot) return admin::Reply::failure("show sessions: no rule \"" + std::string(rule_id) + "\"");
    }
    std::vector<core::SessionInfo> sessions;
    on_every_worker([&](core::Forwarder& forwarder) {
        if (sessions.size() >= kMaxListedSessions) return;
        auto mine = forwarder.list_sessions(slot, kMaxListedSessions - sessions.size());
        std::move(mine.begin(), mine.end(), std::back_inserter(sessions));
    });
    std::ostringstream out;
    for (const core::SessionInfo& s : sessions)
        out << "session " << s.id << " client=" << s.client << " listener=" << s.listener << " rule=" << s.rule
            << " server=" << s.server << " state=" << s.state << " up=" << s.bytes_up << " down=" << s.bytes_down
            << " age=" << format_age(s.age) << "\n";
    if (sessions.size() >= kMaxListedSessions) out << "(first " << kMaxListedSessions << " sessions shown)\n";
    return admin::Reply::success(out.str());
}

admin::Reply Runtime::show_stats() {
    const admin::Snapshot view = snapshot();
    std::ostringstream out;
    out << "version " << view.version << "\n"
        << "engine " << view.engine << " (" << view.features << ")\n"
        << "threads " << view.threads << "\n"
        << "uptime_seconds " << view.uptime_seconds << "\n"
        << "accepted " << view.accepted << "\n"
        << "active_sessions " << view.active_sessions << "\n"
        << "sessions_ended " << view.sessions_ended << "\n"
        << "accept_errors " << view.accept_errors << "\n"
        << "idle_timeouts " << view.idle_timeouts << "\n"
        << "rejected_acl " << view.rejects.acl << "\n"
        << "rejected_limit " << view.rejects.limit << "\n"
        << "rejected_no_server " << view.rejects.no_server << "\n"
        << "limits_active " << limits_.active() << "\n"
        << "limits_tracked_ips " << limits_.tracked_ips() << "\n";
    return admin::Reply::success(out.str());
}

admin::Reply Runtime::dump_rules() {
    const std::string text = config::to_toml(config_);
    if (std::string error = write_atomically(config_path_, text); !error.empty())
        return admin::Reply::failure("dump rules: " + error);
    log_.info("running configuration written to ", config_path_, " (previous kept as ", config_path_, ".bak)");
    return admin::Reply::success("written to " + config_path_ + "\n");
}

}  // namespace ringlb::app
