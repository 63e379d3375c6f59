// Rule changes: plans over rule slots, reload, the admin verbs that add, modify and remove
// rules, and writing the running configuration back.
#include "ringlb/app/runtime.hpp"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "ringlb/app/config_writer.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::app {

namespace {

uint64_t unix_time_now() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

core::RulePlan Runtime::plan_for(const config::Config& next, std::vector<SlotRecord>& slots) const {
    core::RulePlan plan;
    for (const SlotRecord& record : slots) plan.slots.push_back({record.live, false, {}, {}});
    std::vector<bool> keep(slots.size(), false);
    // Linear in the number of rules. Keyed by the shared rules' own ids: `slots` grows below,
    // and a short id kept inside a SlotRecord moves with it.
    std::unordered_map<std::string_view, size_t> live_by_id;
    for (size_t slot = 0; slot < slots.size(); ++slot)
        if (slots[slot].live) live_by_id.emplace(slots[slot].live->id, slot);
    for (const config::RuleConfig& rule : next.rules) {
        const auto existing = live_by_id.find(rule.id);
        if (existing != live_by_id.end() && *slots[existing->second].live == rule) {
            const size_t slot = existing->second;
            keep[slot] = true;
            plan.order.push_back(static_cast<uint16_t>(slot));
            continue;
        }
        // New or changed: a fresh slot; live sessions of the old one finish on the old rule.
        plan.order.push_back(static_cast<uint16_t>(slots.size()));
        auto shared = std::make_shared<const config::RuleConfig>(rule);
        slots.push_back({rule.id, shared});
        plan.slots.push_back({std::move(shared), true, {}, {}});
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
    if (a.max_handshakes != b.max_handshakes) changed.push_back("global.max_handshakes");
    if (a.buffer_size != b.buffer_size) changed.push_back("global.buffer_size");
    if (a.receive_buffers != b.receive_buffers) changed.push_back("global.receive_buffers");
    if (a.max_buffer_memory != b.max_buffer_memory) changed.push_back("global.max_buffer_memory");
    if (a.multishot_recv != b.multishot_recv) changed.push_back("global.multishot_recv");
    if (a.max_pipes != b.max_pipes) changed.push_back("global.max_pipes");
    if (a.busy_poll != b.busy_poll) changed.push_back("global.busy_poll_us");
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
    const config::Config for_workers = expanded(next);
    return apply_config(std::move(next), for_workers);
}

std::string Runtime::apply_config(config::Config next, const config::Config& for_workers) {
    if (next.rules.size() > UINT16_MAX) return "too many rules";
    std::vector<SlotRecord> slots = slots_;
    core::RulePlan plan = plan_for(for_workers, slots);
    if (slots.size() > UINT16_MAX)
        return "too many rule changes since start (" + std::to_string(slots.size()) + " rule slots): restart ringlb";
    std::unordered_map<std::string_view, size_t> running;  // rule id -> its slot before this change
    for (size_t slot = 0; slot < slots_.size(); ++slot)
        if (slots_[slot].live) running.emplace(slots_[slot].id, slot);
    for (core::RulePlan::Slot& slot : plan.slots) {
        if (!slot.changed || !slot.rule) continue;
        if (slot.rule->health.enabled) slot.checked_up = checked_up(*slot.rule);
        // Servers the rule's previous version did not have join with slow start.
        if (const auto previous = running.find(slot.rule->id); previous != running.end()) {
            std::unordered_set<net::SocketAddress, net::SocketAddressHash> before;
            for (const config::ServerConfig& server : slots_[previous->second].live->servers) before.insert(server.address);
            for (const config::ServerConfig& server : slot.rule->servers)
                slot.joining.push_back(!before.contains(server.address));
        }
    }
    for (size_t slot = slots_.size(); slot < slots.size(); ++slot) {
        const config::RuleConfig& rule = *slots[slot].live;
        limits_.set_rule_limits(static_cast<uint16_t>(slot),
                                {rule.max_clients, rule.max_sessions_per_ip, rule.max_conn_rate_per_ip});
    }
    std::vector<net::SocketAddress> claimed;
    try {
        claimed = claim_listen_addresses(for_workers);
    } catch (const std::exception& e) {  // ListenClaimed, or the claim could not be made
        return e.what();
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
            for (const net::SocketAddress& address : claimed) listen_claims_.erase(address);
            return error;
        }
    }
    slots_ = std::move(slots);
    drop_listen_claims_unused_by(for_workers);
    config_.rules = std::move(next.rules);
    log_.set_level(next.global.log_level);
    config_.global.log_level = next.global.log_level;
    config_.global.shutdown_timeout = next.global.shutdown_timeout;
    config_.global.resolvers = next.global.resolvers;
    update_health_targets();
    sync_dns_targets();
    return {};
}

std::vector<net::SocketAddress> Runtime::claim_listen_addresses(const config::Config& config) {
    std::vector<net::SocketAddress> claimed;
    try {
        for (const config::RuleConfig& rule : config.rules) {
            for (const net::SocketAddress& address : rule.listen) {
                if (listen_claims_.contains(address)) continue;
                listen_claims_.emplace(address, net::ListenLock::claim(address));
                claimed.push_back(address);
            }
        }
    } catch (...) {
        for (const net::SocketAddress& address : claimed) listen_claims_.erase(address);
        throw;
    }
    return claimed;
}

void Runtime::drop_listen_claims_unused_by(const config::Config& config) {
    std::unordered_set<net::SocketAddress, net::SocketAddressHash> used;
    for (const config::RuleConfig& rule : config.rules) used.insert(rule.listen.begin(), rule.listen.end());
    std::erase_if(listen_claims_, [&](const auto& claim) { return !used.contains(claim.first); });
}

config::Config Runtime::with_rules(std::vector<config::RuleConfig> rules) const {
    config::Config next = config_;
    next.rules = std::move(rules);
    return next;
}

// ---- reload: the file is read and checked on a thread of its own, then applied here ----

void Runtime::reload(admin::ReplyCallback done) {
    // A request made while a reading is under way gets the next one: the file may have changed
    // after that reading began.
    reload_waiters_.push_back(std::move(done));
    if (!reload_job_) start_reload_job();
}

void Runtime::start_reload_job() {
    reload_status_.reloads++;
    reload_status_.last_attempt_unix = unix_time_now();
    notifier_.reloading();
    auto job = std::make_unique<ReloadJob>();
    job->waiters = std::exchange(reload_waiters_, {});
    std::promise<LoadedConfig> promise;
    job->result = promise.get_future();
    engine::Engine* wake = control_engine_.get();
    job->thread = std::jthread([path = config_path_, overrides = overrides_, resolved = resolved_,
                                version = resolved_version_, promise = std::move(promise), wake]() mutable {
        LoadedConfig loaded;
        try {
            loaded.config = config::load_config_file(path);
            if (overrides) overrides(*loaded.config);
            loaded.for_workers = expanded_with(*loaded.config, resolved);
            loaded.resolved_version = version;
        } catch (const std::exception& e) {  // ConfigError with every problem, or e.g. bad_alloc
            loaded.config.reset();
            loaded.error = e.what();
        }
        promise.set_value(std::move(loaded));
        if (wake) wake->wake();  // the control loop applies it at once
    });
    reload_job_ = std::move(job);
}

void Runtime::finish_reload_if_done() {
    if (!reload_job_ || reload_job_->result.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
    const std::unique_ptr<ReloadJob> job = std::move(reload_job_);
    const admin::Reply reply = apply_reloaded(job->result.get());
    notifier_.ready((reply.ok ? "reloaded: " : "reload failed: ") + service_status());
    for (const admin::ReplyCallback& done : job->waiters) done(reply);
    if (!reload_job_ && !reload_waiters_.empty()) start_reload_job();
}

admin::Reply Runtime::apply_reloaded(LoadedConfig loaded) {
    if (!loaded.config) return reload_failed(loaded.error);
    config::Config next = std::move(*loaded.config);
    for (const config::ConfigIssue& warning : next.warnings) log_.warn("config: ", warning.to_string());
    // A name that resolved differently while the file was read: expand again with the new sets.
    if (loaded.resolved_version != resolved_version_) loaded.for_workers = expanded(next);
    const std::vector<std::string> needs_restart = restart_only_changes(next);
    const size_t before = config_.rules.size();
    if (std::string error = apply_config(std::move(next), *loaded.for_workers); !error.empty())
        return reload_failed(error);
    reload_status_.last_successful = true;
    reload_status_.last_success_unix = reload_status_.last_attempt_unix;
    reload_status_.last_error.clear();
    std::string body = "reloaded " + config_path_ + ": " + std::to_string(config_.rules.size()) + " rules (was " +
                       std::to_string(before) + ")\n";
    if (!needs_restart.empty())
        body += "not applied until restart: " + join(needs_restart, ", ") + "\n";
    log_.info(body.substr(0, body.size() - 1));
    return admin::Reply::success(body);
}

admin::Reply Runtime::reload_failed(const std::string& message) {
    reload_status_.failures++;
    reload_status_.last_successful = false;
    reload_status_.last_error = message;
    log_.error("reload failed, the running configuration is unchanged: ", message);
    return admin::Reply::failure("reload: " + message);
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
    const bool every_rule = rule_id.empty();
    std::vector<uint16_t> retired;
    for (size_t slot = 0; slot < slots_.size(); ++slot)
        if (!slots_[slot].live && (every_rule || slots_[slot].id == rule_id))
            retired.push_back(static_cast<uint16_t>(slot));
    if (!every_rule && retired.empty() && !live_slot(rule_id))
        return admin::Reply::failure("clean sessions: no rule \"" + std::string(rule_id) + "\"");
    size_t closed = 0;
    on_every_worker([&](core::Forwarder& forwarder) { closed += forwarder.close_sessions_in(retired); });
    const std::string whose = every_rule ? std::string("every rule") : "rule " + std::string(rule_id);
    return admin::Reply::success("closed " + std::to_string(closed) + " session(s) of earlier versions of " + whose +
                                 "\n");
}

admin::Reply Runtime::show_config() {
    config::Config shown = config_;
    // Secrets stay off terminals and out of pasted output; the file keeps them.
    constexpr std::string_view kHidden = "(hidden)";
    if (!shown.admin.token.empty()) shown.admin.token = kHidden;
    if (!shown.metrics.token.empty()) shown.metrics.token = kHidden;
    return admin::Reply::success(config::to_toml(shown));
}

admin::Reply Runtime::write_config() {
    const ConfigWriteResult result = write_config_file(config_path_, config::to_toml(config_));
    if (!result.ok()) return admin::Reply::failure("write config: " + result.error);
    const std::string kept = result.backup.empty() ? "" : " (previous file kept as " + result.backup + ")";
    log_.info("running configuration written to ", config_path_, kept);
    return admin::Reply::success("written to " + config_path_ + kept + "\n");
}

}  // namespace ringlb::app
