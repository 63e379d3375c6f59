#pragma once
// The running forwarder as a whole: the worker threads, and the control thread (the thread that
// calls run()) with the management port, the metrics endpoint, active health checks, signals,
// reloads and the graceful stop. The control thread owns the authoritative config; workers get
// changes as rule plans and commands through their mailboxes, so no forwarding state is shared.
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ringlb/admin/controller.hpp"
#include "ringlb/admin/snapshot.hpp"
#include "ringlb/app/descriptors.hpp"
#include "ringlb/app/service_notifier.hpp"
#include "ringlb/app/signals.hpp"
#include "ringlb/app/upgrade.hpp"
#include "ringlb/app/worker.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/core/session_limits.hpp"
#include "ringlb/dns/expand.hpp"
#include "ringlb/net/inherited_sockets.hpp"
#include "ringlb/net/listen_lock.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::engine {
class Engine;
class Dispatcher;
class BufferBudget;
}  // namespace ringlb::engine
namespace ringlb::admin {
class AdminServer;
class MetricsServer;
}  // namespace ringlb::admin
#include "ringlb/health/active.hpp"
namespace ringlb::dns {
class Resolver;
}

namespace ringlb::app {

class Runtime final : public admin::Controller {
public:
    // `config_path` is re-read on reload; `overrides` re-applies command-line flags to each
    // config read (they win over the file).
    Runtime(std::string config_path, config::Config config, Logger& log,
            std::function<void(config::Config&)> overrides = {});
    ~Runtime() override;

    // Starts everything, serves until stopped, returns the process exit code.
    int run();

    // admin::Controller
    admin::Reply show_rules() override;
    admin::Reply show_sessions(std::string_view rule_id) override;
    admin::Reply show_stats() override;
    admin::Reply add_rule(std::string_view inline_table) override;
    admin::Reply modify_rule(std::string_view inline_table) override;
    admin::Reply remove_rule(std::string_view rule_id) override;
    admin::Reply clean_sessions(std::string_view rule_id) override;
    admin::Reply set_server_state(std::string_view rule_id, std::string_view server, admin::ServerAdminState state,
                                  std::optional<std::chrono::milliseconds> duration) override;
    admin::Reply set_weight(std::string_view rule_id, std::string_view server, unsigned weight) override;
    admin::Reply kill_session(uint64_t session_id) override;
    admin::Reply show_config() override;
    admin::Reply write_config() override;
    void reload(admin::ReplyCallback done) override;

    // Everything the views and the metrics show. Without `with_rules`, only the totals: cheap
    // whatever the number of servers (show stats).
    admin::Snapshot snapshot(bool with_rules = true);

private:
    struct SlotRecord {
        std::string id;                          // the rule id this slot was made for
        std::shared_ptr<const config::RuleConfig> live;  // null once retired; shared with the plans
    };
    // A configuration file read and checked off the control thread, for a reload.
    struct LoadedConfig {
        std::optional<config::Config> config;  // nullopt: `error` says why
        std::string error;
        // `config` expanded with the address sets of resolved_version (see expanded()), so that
        // the control thread need not do it when no set changed meanwhile.
        std::optional<config::Config> for_workers;
        uint64_t resolved_version = 0;
    };
    // One reading of the file under way, and the replies waiting for its outcome.
    struct ReloadJob {
        std::future<LoadedConfig> result;
        std::vector<admin::ReplyCallback> waiters;
        std::jthread thread;  // last: joined before the rest is destroyed
    };
    struct ServerRef {
        uint16_t slot = 0;
        size_t index = 0;
    };

    // Socket activation: the listeners the service manager passed (LISTEN_FDS), for the workers
    // to serve instead of binding (runtime_inherited.cpp).
    void take_activated_listeners();
    // After the workers started: closes the inherited sockets no listen address matched.
    void release_inherited_listeners();
    // Upgrades (runtime_upgrade.cpp, see app/upgrade.hpp). In a new process: takes what the old
    // one passed on (throws when it is unusable), and reports ready once serving.
    void take_handover();
    void report_upgraded();
    // In the old process: starts the new one, and each control round sees whether it is ready.
    void begin_upgrade();
    void check_upgrade();
    // The admin and metrics ports: closed while a new process starts, so that it can bind them.
    void open_control_ports();
    void close_control_ports();
    int start_workers();
    void start_control_components();
    void control_loop();
    std::optional<size_t> failed_worker() const;  // the first worker whose loop failed
    void report_open_files_limit() const;
    uint64_t splice_pipes_wanted() const;
    void handle_signals();
    void start_reload_job();
    // On the control thread: applies a finished reading and answers those waiting for it.
    void finish_reload_if_done();
    admin::Reply apply_reloaded(LoadedConfig loaded);
    void drain_and_stop();
    void report_buffer_cap();
    // The service manager (sd_notify): the status line, and the watchdog fed only while every
    // worker's loop turns (runtime_service.cpp).
    std::string service_status() const;
    void service_tick();
    void feed_watchdog(std::chrono::steady_clock::time_point now);
    std::chrono::milliseconds loop_round(std::chrono::milliseconds normal) const;

    // Turns `next` into a plan over the current slots and applies it everywhere; on success
    // `config_` becomes `next`. Returns an error message or "" on success.
    std::string apply_config(config::Config next);
    std::string apply_config(config::Config next, const config::Config& for_workers);  // for_workers = expanded(next)
    core::RulePlan plan_for(const config::Config& next, std::vector<SlotRecord>& slots) const;
    void update_health_targets();
    void on_health_report(uint32_t key, size_t server, bool up);
    uint32_t health_key(const std::string& rule_id);
    const health::CheckTarget* health_target(uint32_t key) const;
    std::vector<bool> checked_up(const config::RuleConfig& rule) const;
    // For each server of `rule`, its check results and state changes (zeros without checks).
    std::vector<health::ActiveChecker::Counts> check_counts(const config::RuleConfig& rule) const;
    // Calls visit(index in rule.servers, rule key, index in the checker's target) for each
    // server of `rule` the checker checks.
    template <typename Visit>
    void for_each_checked(const config::RuleConfig& rule, Visit visit) const;
    std::vector<std::string> restart_only_changes(const config::Config& next) const;
    // One ringlb per listen address (see net/listen_lock.hpp). Claims the addresses of `config`
    // this process does not hold yet and returns them (throws ListenClaimed); drops the claims
    // of addresses no rule of `config` listens on.
    std::vector<net::SocketAddress> claim_listen_addresses(const config::Config& config);
    void drop_listen_claims_unused_by(const config::Config& config);
    // Reload outcome, for show stats and the metrics; the message is logged too.
    admin::Reply reload_failed(const std::string& message);

    std::optional<uint16_t> live_slot(std::string_view rule_id) const;
    std::optional<ServerRef> find_server(std::string_view rule_id, std::string_view server, std::string* error) const;
    // Runs `task` on every worker in turn and waits; false when one did not answer.
    bool on_every_worker(const std::function<void(core::Forwarder&)>& task);
    config::Config with_rules(std::vector<config::RuleConfig> rules) const;

    // DNS server entries. config_ keeps the rules as written (dns entries included: what
    // `write config` writes and admin commands edit); the workers, the slots and the health checks
    // get them expanded with the latest address sets (see dns/expand.hpp).
    config::Config expanded(const config::Config& written) const;
    static config::Config expanded_with(const config::Config& written, const dns::AddressSets& resolved);
    // Starts, restarts (new [global] resolvers) or retargets the resolver after a config change.
    void sync_dns_targets();
    // On the control thread: takes the resolver's changed sets and applies the rules they change.
    void apply_dns_updates();
    // The written entry a running server comes from, for `set weight`; null (with *error) when
    // it comes from a dns entry, whose addresses share the entry's settings.
    config::ServerConfig* written_server(std::string_view rule_id, const ServerRef& ref, std::string* error);

    std::string config_path_;
    config::Config config_;
    Logger& log_;
    std::function<void(config::Config&)> overrides_;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    admin::ReloadStatus reload_status_;

    FaultHooks faults_;  // test hooks from RINGLB_FAULT, read once in run()
    DescriptorLimit open_files_;  // raised once in run()
    core::SessionLimits limits_;
    std::shared_ptr<engine::BufferBudget> buffer_budget_;  // max_buffer_memory, shared by the workers' engines
    uint64_t cap_reached_reported_ = 0;
    std::chrono::steady_clock::time_point cap_reported_at_{};
    std::unordered_map<net::SocketAddress, net::ListenLock, net::SocketAddressHash> listen_claims_;
    net::InheritedListeners inherited_;  // until the workers have taken theirs
    OwnCommand own_command_;              // read in run(): what an upgrade starts
    std::optional<UpgradeChild> upgrade_;  // the new process of an upgrade under way
    bool handed_over_ = false;            // a new process serves: this one drains and exits
    net::UniqueFd upgrade_report_;        // a new process: where it says "ready" to the old one
    std::vector<SlotRecord> slots_;  // by rule slot, never shrinking (see core::RulePlan)
    core::RulePlan initial_plan_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::string> listening_;  // for the "ready" line
    std::string engine_name_;
    std::string engine_features_;

    ServiceNotifier notifier_{log_};  // from NOTIFY_SOCKET, read once in run()
    std::optional<TurnWatch> turn_watch_;  // with WATCHDOG_USEC, from "ready" on
    std::optional<size_t> stuck_worker_;   // the worker that stopped the watchdog pings
    std::chrono::steady_clock::time_point next_ping_{};
    std::chrono::steady_clock::time_point next_status_{};

    SignalFlags signals_;
    std::unique_ptr<engine::Engine> control_engine_;
    std::unique_ptr<engine::Dispatcher> dispatcher_;
    std::unique_ptr<admin::AdminServer> admin_server_;
    std::unique_ptr<admin::MetricsServer> metrics_server_;
    std::unique_ptr<health::ActiveChecker> checker_;
    std::map<std::string, uint32_t> health_keys_;      // rule id -> the checker's key for it
    std::vector<health::CheckTarget> health_targets_;  // what the checker was last given
    std::unique_ptr<dns::Resolver> resolver_;          // only while some rule has a dns entry
    std::vector<net::SocketAddress> resolver_servers_;  // the [global] resolvers resolver_ asks
    dns::AddressSets resolved_;                         // latest good set per dns entry
    uint64_t resolved_version_ = 0;                     // counts changes of resolved_
    std::atomic<bool> control_stop_{false};
    std::unique_ptr<ReloadJob> reload_job_;              // the reading under way, if any
    std::vector<admin::ReplyCallback> reload_waiters_;  // asked while it ran: they get the next reading
};

}  // namespace ringlb::app
