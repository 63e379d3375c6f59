// What the admin port shows: the snapshot every view and the metrics are made from.
#include "ringlb/app/runtime.hpp"

#include <sstream>
#include <string_view>
#include <unordered_map>

#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/admin/admin_server.hpp"
#include "ringlb/admin/metrics.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::app {

namespace {

using Clock = std::chrono::steady_clock;

std::chrono::system_clock::time_point unix_time(uint64_t seconds) {
    return std::chrono::system_clock::time_point(std::chrono::seconds(seconds));
}

constexpr size_t kMaxListedSessions = 10000;

std::string format_age(std::chrono::milliseconds age) {
    const auto seconds = age.count() / 1000;
    if (seconds < 60) return std::to_string(seconds) + "." + std::to_string(age.count() % 1000 / 100) + "s";
    if (seconds < 3600) return std::to_string(seconds / 60) + "m" + std::to_string(seconds % 60) + "s";
    return std::to_string(seconds / 3600) + "h" + std::to_string(seconds / 60 % 60) + "m";
}


// The management and metrics ports' defences, and the last reload's outcome.
void write_control_stats(std::ostream& out, const admin::Snapshot& view) {
    const admin::AdminPortCounters& admin_port = view.admin_port;
    const admin::MetricsPortCounters& metrics_port = view.metrics_port;
    const admin::ReloadStatus& reload = view.reload;
    out << "admin_refused_not_allowed " << admin_port.refused_not_allowed << "\n"
        << "admin_refused_full " << admin_port.refused_full << "\n"
        << "admin_evicted_unauthenticated " << admin_port.evicted_unauthenticated << "\n"
        << "admin_auth_timeouts " << admin_port.auth_timeouts << "\n"
        << "admin_auth_failures " << admin_port.auth_failures << "\n"
        << "metrics_refused_not_allowed " << metrics_port.refused_not_allowed << "\n"
        << "metrics_refused_per_ip " << metrics_port.refused_per_ip << "\n"
        << "metrics_refused_full " << metrics_port.refused_full << "\n"
        << "metrics_request_timeouts " << metrics_port.request_timeouts << "\n"
        << "reloads " << reload.reloads << "\n"
        << "reload_failures " << reload.failures << "\n"
        << "last_reload_successful " << (reload.last_successful ? 1 : 0) << "\n"
        << "last_reload_time " << format_utc_timestamp(unix_time(reload.last_attempt_unix)) << "\n"
        << "last_reload_success_time " << format_utc_timestamp(unix_time(reload.last_success_unix)) << "\n";
    if (!reload.last_successful) out << "last_reload_error " << escape_control(reload.last_error) << "\n";
}

}  // namespace

admin::Snapshot Runtime::snapshot(bool with_rules) {
    admin::Snapshot snapshot;
    snapshot.version = RINGLB_VERSION;
    snapshot.engine = engine_name_;
    snapshot.features = engine_features_;
    snapshot.threads = static_cast<unsigned>(workers_.size());
    snapshot.uptime_seconds =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count());
    std::vector<uint16_t> order;
    std::unordered_map<std::string_view, uint16_t> live;  // rule id -> slot, once for all rules
    for (size_t slot = 0; with_rules && slot < slots_.size(); ++slot)
        if (slots_[slot].live) live.emplace(slots_[slot].id, static_cast<uint16_t>(slot));
    for (const config::RuleConfig& rule : config_.rules) {
        if (!with_rules) break;
        order.push_back(live.at(rule.id));
        admin::RuleSnapshot out;
        out.id = rule.id;
        out.mode = std::string(config::to_string(rule.mode));
        for (const auto& address : rule.listen) out.listen.push_back(address.to_string());
        for (const auto& pattern : rule.clients) out.clients.push_back(pattern.text());
        for (const auto& pattern : rule.deny) out.deny.push_back(pattern.text());
        out.sni = rule.sni;
        out.max_clients = rule.max_clients;
        out.max_sessions_per_ip = rule.max_sessions_per_ip;
        out.max_conn_rate_per_ip = rule.max_conn_rate_per_ip;
        out.queue_capacity = rule.queue;
        // The servers the workers have: dns entries expanded.
        const config::RuleConfig& live_rule = *slots_[order.back()].live;
        const auto checks = check_counts(live_rule);
        for (size_t i = 0; i < live_rule.servers.size(); ++i) {
            const config::ServerConfig& server = live_rule.servers[i];
            admin::ServerSnapshot server_out;
            server_out.address = server.address.to_string();
            server_out.name = server.name;
            server_out.weight = server.weight;
            server_out.backup = server.backup;
            server_out.max_connections = server.max_connections;
            server_out.checks_passed = checks[i].passed;
            server_out.checks_failed = checks[i].failed;
            server_out.went_up = checks[i].went_up;  // the workers add the changes traffic made
            server_out.went_down = checks[i].went_down;
            out.servers.push_back(std::move(server_out));
        }
        snapshot.rules.push_back(std::move(out));
    }
    // One worker at a time: each adds its counters to the same snapshot.
    on_every_worker([&](core::Forwarder& forwarder) { forwarder.collect(snapshot, order); });
    snapshot.handshakes_active = limits_.handshakes();
    snapshot.peak_sessions = limits_.peak();
    snapshot.max_sessions = config_.global.max_sessions;
    snapshot.max_handshakes = config::handshake_limit(config_.global);
    if (with_rules) snapshot.process = admin::read_process_stats();
    if (buffer_budget_) {
        snapshot.buffer_memory_cap = buffer_budget_->max_bytes();
        snapshot.buffer_memory_in_use = buffer_budget_->in_use_bytes();
        snapshot.buffer_cap_reached = buffer_budget_->cap_reached();
    }
    // The control components live on this thread: read directly.
    if (admin_server_) snapshot.admin_port = admin_server_->counters();
    if (metrics_server_) snapshot.metrics_port = metrics_server_->counters();
    snapshot.reload = reload_status_;
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
            out << "  server " << server.address << (server.name.empty() ? "" : " name=" + server.name) << " "
                << server.state << " weight=" << server.weight << (server.backup ? " backup" : "")
                << " active=" << server.active_sessions
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
    const admin::Snapshot view = snapshot(false);
    std::ostringstream out;
    out << "version " << view.version << "\n"
        << "engine " << view.engine << " (" << view.features << ")\n"
        << "threads " << view.threads << "\n"
        << "uptime_seconds " << view.uptime_seconds << "\n"
        << "accepted " << view.accepted << "\n"
        << "active_sessions " << view.active_sessions << "\n"
        << "peak_sessions " << view.peak_sessions << "\n"
        << "sessions_ended " << view.sessions_ended << "\n"
        << "accept_errors " << view.accept_errors << "\n"
        << "idle_timeouts " << view.idle_timeouts << "\n"
        << "timers_armed " << view.timers_armed << "\n"
        << "dropped_no_fd " << view.dropped_no_fd_accept + view.dropped_no_fd_server << "\n"
        << "rejected_acl " << view.rejects.acl << "\n"
        << "rejected_limit " << view.rejects.limit << "\n"
        << "rejected_limit_global " << view.rejects.global_limit << "\n"
        << "rejected_limit_per_ip " << view.rejects.per_ip_limit << "\n"
        << "rejected_limit_rate " << view.rejects.rate_limit << "\n"
        << "rejected_limit_max_clients " << view.rejects.max_clients << "\n"
        << "rejected_no_server " << view.rejects.no_server << "\n"
        << "rejected_untrusted_proxy " << view.rejects.untrusted_proxy << "\n"
        << "rejected_max_handshakes " << view.rejects.max_handshakes << "\n"
        << "rejected_client_hello " << view.rejects.client_hello << "\n"
        << "handshakes_active " << view.handshakes_active << "\n"
        << "sessions_abandoned " << view.sessions_abandoned << "\n"
        << "buffer_memory_cap " << view.buffer_memory_cap << "\n"
        << "buffer_memory_in_use " << view.buffer_memory_in_use << "\n"
        << "buffer_cap_reached " << view.buffer_cap_reached << "\n"
        << "limits_active " << limits_.active() << "\n"
        << "limits_tracked_ips " << limits_.tracked_ips() << "\n";
    for (size_t i = 0; i < view.workers.size(); ++i) {
        const admin::WorkerBuffers& w = view.workers[i];
        out << "worker " << i << " buffers_held=" << w.held << " buffers_offered=" << w.offered
            << " buffers_made=" << w.made << " buffers_idle_resident=" << w.resident_free
            << " session_peak_buffers=" << w.peak_session << " accepted=" << w.accepted
            << " pipes_in_use=" << w.pipes_in_use << " pipes_free=" << w.pipes_free << " pipes_taken=" << w.pipes_taken
            << "\n";
    }
    write_control_stats(out, view);
    return admin::Reply::success(out.str());
}

}  // namespace ringlb::app
