#include "ringlb/admin/metrics.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

#include "ringlb/admin/token.hpp"

namespace ringlb::admin {
namespace {

// ==== Prometheus text exposition format 0.0.4 =============================================

struct Label {
    std::string_view name;
    std::string_view value;
};
using Labels = std::vector<Label>;

// Label values may hold anything a config allows (rule ids, addresses); the format reserves
// backslash, double quote and newline.
void append_label_value(std::string& out, std::string_view value) {
    for (const char c : value) {
        switch (c) {
            case '\\': out += "\\\\"; break;
            case '"': out += "\\\""; break;
            case '\n': out += "\\n"; break;
            default: out += c;
        }
    }
}

// HELP text escapes only backslash and newline.
void append_help_text(std::string& out, std::string_view text) {
    for (const char c : text) {
        switch (c) {
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            default: out += c;
        }
    }
}

// Exact decimal seconds from microseconds ("0.00025", "1", "60.5"): no floating-point noise in
// bucket bounds, which Prometheus compares as strings across scrapes.
std::string seconds_text(uint64_t microseconds) {
    std::string text = std::to_string(microseconds / 1'000'000);
    const uint64_t fraction = microseconds % 1'000'000;
    if (fraction == 0) return text;
    std::string digits = std::to_string(fraction);
    digits.insert(0, 6 - digits.size(), '0');
    digits.erase(digits.find_last_not_of('0') + 1);
    return text + "." + digits;
}

// A measured quantity such as CPU seconds, with `places` decimals.
std::string decimal_text(double value, int places) {
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", places, value);
    return text;
}

// Every reason a client was closed at once, split by the limit that refused it.
std::vector<std::pair<std::string_view, uint64_t>> reject_causes(const RejectCounts& rejects) {
    return {{"global_limit", rejects.global_limit}, {"per_ip_limit", rejects.per_ip_limit},
            {"rate_limit", rejects.rate_limit},     {"max_clients", rejects.max_clients},
            {"acl", rejects.acl},                   {"no_server", rejects.no_server}};
}

class Exposition {
public:
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        append_help_text(out_, help);
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    void sample(std::string_view name, const Labels& labels, std::string_view value) {
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            for (size_t i = 0; i < labels.size(); ++i) {
                if (i > 0) out_ += ',';
                out_ += labels[i].name;
                out_ += "=\"";
                append_label_value(out_, labels[i].value);
                out_ += '"';
            }
            out_ += '}';
        }
        out_ += ' ';
        out_ += value;
        out_ += '\n';
    }
    void sample(std::string_view name, const Labels& labels, uint64_t value) {
        sample(name, labels, std::to_string(value));
    }

    // One histogram series: cumulative _bucket lines (le in seconds, then +Inf), _sum, _count.
    void histogram(std::string_view name, const Labels& labels, const Histogram& histogram) {
        const std::string base(name);
        Labels with_le = labels;
        with_le.push_back({"le", {}});
        uint64_t cumulative = 0;
        for (size_t i = 0; i < Histogram::kBoundsUs.size(); ++i) {
            cumulative += histogram.buckets[i];
            const std::string bound = seconds_text(Histogram::kBoundsUs[i]);
            with_le.back().value = bound;
            sample(base + "_bucket", with_le, cumulative);
        }
        with_le.back().value = "+Inf";
        sample(base + "_bucket", with_le, histogram.count);  // includes samples above the last bound
        sample(base + "_sum", labels, seconds_text(histogram.sum_us));
        sample(base + "_count", labels, histogram.count);
    }

    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

void render_process(Exposition& out, const Snapshot& snapshot) {
    out.family("ringlb_info", "gauge", "Version, engine and worker threads of this ringlb (always 1).");
    const std::string threads = std::to_string(snapshot.threads);
    out.sample("ringlb_info",
               {{"version", snapshot.version}, {"engine", snapshot.engine}, {"features", snapshot.features},
                {"threads", threads}},
               uint64_t{1});
    out.family("ringlb_uptime_seconds", "gauge", "Seconds since ringlb started.");
    out.sample("ringlb_uptime_seconds", {}, snapshot.uptime_seconds);
    out.family("ringlb_accepted_total", "counter", "Client connections accepted.");
    out.sample("ringlb_accepted_total", {}, snapshot.accepted);
    out.family("ringlb_sessions_active", "gauge", "Sessions open now.");
    out.sample("ringlb_sessions_active", {}, snapshot.active_sessions);
    out.family("ringlb_sessions_ended_total", "counter", "Sessions that have ended.");
    out.sample("ringlb_sessions_ended_total", {}, snapshot.sessions_ended);
    out.family("ringlb_rejects_total", "counter", "Client connections closed at once, by reason.");
    out.sample("ringlb_rejects_total", {{"reason", "acl"}}, snapshot.rejects.acl);
    out.sample("ringlb_rejects_total", {{"reason", "limit"}}, snapshot.rejects.limit);
    out.sample("ringlb_rejects_total", {{"reason", "no_server"}}, snapshot.rejects.no_server);
    out.sample("ringlb_rejects_total", {{"reason", "untrusted_proxy"}}, snapshot.rejects.untrusted_proxy);
    out.sample("ringlb_rejects_total", {{"reason", "max_handshakes"}}, snapshot.rejects.max_handshakes);
    out.sample("ringlb_rejects_total", {{"reason", "client_hello"}}, snapshot.rejects.client_hello);
    out.family("ringlb_rejects_by_cause_total", "counter",
               "Client connections closed at once, with limit rejects split by the limit that refused them.");
    for (const auto& [cause, count] : reject_causes(snapshot.rejects))
        out.sample("ringlb_rejects_by_cause_total", {{"cause", cause}}, count);
    out.sample("ringlb_rejects_by_cause_total", {{"cause", "untrusted_proxy"}}, snapshot.rejects.untrusted_proxy);
    out.sample("ringlb_rejects_by_cause_total", {{"cause", "max_handshakes"}}, snapshot.rejects.max_handshakes);
    out.sample("ringlb_rejects_by_cause_total", {{"cause", "client_hello"}}, snapshot.rejects.client_hello);
    out.family("ringlb_sessions_peak", "gauge", "The most sessions open at once since start, handshakes included.");
    out.sample("ringlb_sessions_peak", {}, snapshot.peak_sessions);
    out.family("ringlb_max_sessions", "gauge", "[global] max_sessions in force.");
    out.sample("ringlb_max_sessions", {}, uint64_t{snapshot.max_sessions});
    out.family("ringlb_max_handshakes", "gauge", "Connections that may wait for their PROXY header or ClientHello at once.");
    out.sample("ringlb_max_handshakes", {}, uint64_t{snapshot.max_handshakes});
    out.family("ringlb_handshakes_active", "gauge", "Connections waiting for their PROXY header or ClientHello now.");
    out.sample("ringlb_handshakes_active", {}, snapshot.handshakes_active);
    out.family("ringlb_accept_errors_total", "counter", "Failed accepts (such as running out of file descriptors).");
    out.sample("ringlb_accept_errors_total", {}, snapshot.accept_errors);
    out.family("ringlb_idle_timeouts_total", "counter", "Sessions ended by their rule's idle timeout.");
    out.sample("ringlb_idle_timeouts_total", {}, snapshot.idle_timeouts);
    out.family("ringlb_timers_armed", "gauge", "Timers armed now: connect and idle timeouts of live sessions, accept retries.");
    out.sample("ringlb_timers_armed", {}, snapshot.timers_armed);
    out.family("ringlb_clients_dropped_no_fd_total", "counter",
               "Clients dropped, or left waiting by a failed accept, for want of a file descriptor, by stage.");
    out.sample("ringlb_clients_dropped_no_fd_total", {{"stage", "accept"}}, snapshot.dropped_no_fd_accept);
    out.sample("ringlb_clients_dropped_no_fd_total", {{"stage", "server_socket"}}, snapshot.dropped_no_fd_server);
    out.family("ringlb_sessions_abandoned_total", "counter",
               "Closed sessions whose requests did not complete in time; the engine took their descriptors.");
    out.sample("ringlb_sessions_abandoned_total", {}, snapshot.sessions_abandoned);
}

void render_buffers(Exposition& out, const Snapshot& snapshot) {
    out.family("ringlb_receive_buffer_bytes", "gauge", "Bytes in one receive buffer.");
    out.sample("ringlb_receive_buffer_bytes", {}, uint64_t{snapshot.buffer_size});
    out.family("ringlb_receive_buffer_memory_cap_bytes", "gauge", "max_buffer_memory in force.");
    out.sample("ringlb_receive_buffer_memory_cap_bytes", {}, snapshot.buffer_memory_cap);
    out.family("ringlb_receive_buffer_memory_bytes", "gauge",
               "Receive-buffer memory the workers have taken from the cap (held, offered or kept ready).");
    out.sample("ringlb_receive_buffer_memory_bytes", {}, snapshot.buffer_memory_in_use);
    out.family("ringlb_receive_buffer_cap_reached_total", "counter",
               "Times a worker wanted a receive buffer and the memory cap was reached.");
    out.sample("ringlb_receive_buffer_cap_reached_total", {}, snapshot.buffer_cap_reached);
    const auto per_worker = [&](const char* name, const char* help, auto field) {
        out.family(name, "gauge", help);
        for (size_t i = 0; i < snapshot.workers.size(); ++i)
            out.sample(name, {{"worker", std::to_string(i)}}, uint64_t{snapshot.workers[i].*field});
    };
    per_worker("ringlb_receive_buffers_held", "Receive buffers held by sessions (bytes not yet sent on), per worker.",
               &WorkerBuffers::held);
    per_worker("ringlb_receive_buffers_offered", "Receive buffers waiting in the kernel for bytes (io_uring), per worker.",
               &WorkerBuffers::offered);
    per_worker("ringlb_receive_buffers_made", "Receive buffers a worker's pool has made so far.", &WorkerBuffers::made);
    per_worker("ringlb_receive_buffers_idle_resident", "Free receive buffers whose pages are not given back yet.",
               &WorkerBuffers::resident_free);
    per_worker("ringlb_receive_buffers_session_peak", "The most receive buffers one session of the worker held at once.",
               &WorkerBuffers::peak_session);
    per_worker("ringlb_pipes_in_use", "Pipes holding spliced bytes in flight, per worker.", &WorkerBuffers::pipes_in_use);
    per_worker("ringlb_pipes_free", "Pipes made and ready for reuse, per worker.", &WorkerBuffers::pipes_free);
    out.family("ringlb_pipes_taken_total", "counter", "Times a direction took a pipe for bytes that arrived, per worker.");
    for (size_t i = 0; i < snapshot.workers.size(); ++i)
        out.sample("ringlb_pipes_taken_total", {{"worker", std::to_string(i)}}, snapshot.workers[i].pipes_taken);
    out.family("ringlb_splice_fallbacks_total", "counter",
               "Times bytes of a splicing direction were copied instead, for want of a pipe, by cause.");
    for (size_t cause = 0; cause < kPipeFallbackNames.size(); ++cause) {
        uint64_t total = 0;
        for (const WorkerBuffers& worker : snapshot.workers) total += worker.pipe_fallbacks[cause];
        out.sample("ringlb_splice_fallbacks_total", {{"cause", kPipeFallbackNames[cause]}}, total);
    }
    out.family("ringlb_worker_accepted_total", "counter", "Clients accepted, per worker.");
    for (size_t i = 0; i < snapshot.workers.size(); ++i)
        out.sample("ringlb_worker_accepted_total", {{"worker", std::to_string(i)}}, snapshot.workers[i].accepted);
}

// Samples of one family must be contiguous, so each family loops over every rule.
void render_rules(Exposition& out, const std::vector<RuleSnapshot>& rules) {
    out.family("ringlb_rule_sessions_active", "gauge", "Sessions open now, per rule.");
    for (const auto& rule : rules) out.sample("ringlb_rule_sessions_active", {{"rule", rule.id}}, rule.active_sessions);
    out.family("ringlb_rule_sessions_total", "counter", "Sessions started, per rule.");
    for (const auto& rule : rules) out.sample("ringlb_rule_sessions_total", {{"rule", rule.id}}, rule.total_sessions);
    out.family("ringlb_rule_bytes_total", "counter", "Bytes forwarded per rule: up is client to server, down the reverse.");
    for (const auto& rule : rules) {
        out.sample("ringlb_rule_bytes_total", {{"rule", rule.id}, {"direction", "up"}}, rule.bytes_up);
        out.sample("ringlb_rule_bytes_total", {{"rule", rule.id}, {"direction", "down"}}, rule.bytes_down);
    }
    out.family("ringlb_spliced_bytes_total", "counter",
               "Of ringlb_rule_bytes_total: bytes moved by splice (zero_copy), per rule and direction.");
    for (const auto& rule : rules) {
        out.sample("ringlb_spliced_bytes_total", {{"rule", rule.id}, {"direction", "up"}}, rule.spliced_up);
        out.sample("ringlb_spliced_bytes_total", {{"rule", rule.id}, {"direction", "down"}}, rule.spliced_down);
    }
    out.family("ringlb_rule_rejects_total", "counter", "Client connections this rule closed at once, by reason.");
    for (const auto& rule : rules) {
        out.sample("ringlb_rule_rejects_total", {{"rule", rule.id}, {"reason", "acl"}}, rule.rejects.acl);
        out.sample("ringlb_rule_rejects_total", {{"rule", rule.id}, {"reason", "limit"}}, rule.rejects.limit);
        out.sample("ringlb_rule_rejects_total", {{"rule", rule.id}, {"reason", "no_server"}}, rule.rejects.no_server);
    }
    out.family("ringlb_rule_rejects_by_cause_total", "counter",
               "Client connections this rule closed at once, with limit rejects split by limit.");
    for (const auto& rule : rules)
        for (const auto& [cause, count] : reject_causes(rule.rejects))
            out.sample("ringlb_rule_rejects_by_cause_total", {{"rule", rule.id}, {"cause", cause}}, count);
    out.family("ringlb_rule_max_clients", "gauge", "The rule's max_clients in force (0 = unlimited).");
    for (const auto& rule : rules) out.sample("ringlb_rule_max_clients", {{"rule", rule.id}}, uint64_t{rule.max_clients});
    out.family("ringlb_rule_queue_length", "gauge", "Clients waiting now for a server connection (rule key queue).");
    for (const auto& rule : rules) out.sample("ringlb_rule_queue_length", {{"rule", rule.id}}, rule.queue_length);
    out.family("ringlb_rule_queue_capacity", "gauge", "The rule's queue in force (0 = no queue).");
    for (const auto& rule : rules) out.sample("ringlb_rule_queue_capacity", {{"rule", rule.id}}, uint64_t{rule.queue_capacity});
    out.family("ringlb_rule_queue_timeouts_total", "counter", "Clients closed after waiting queue_timeout in the queue.");
    for (const auto& rule : rules) out.sample("ringlb_rule_queue_timeouts_total", {{"rule", rule.id}}, rule.queue_timeouts);
    out.family("ringlb_rule_queue_full_total", "counter", "Clients closed because every server and the queue were full.");
    for (const auto& rule : rules) out.sample("ringlb_rule_queue_full_total", {{"rule", rule.id}}, rule.queue_full);
    out.family("ringlb_rule_queue_time_seconds", "histogram", "Time clients spent in the queue, served or not.");
    for (const auto& rule : rules) out.histogram("ringlb_rule_queue_time_seconds", {{"rule", rule.id}}, rule.queue_time);
    out.family("ringlb_rule_connect_failures_total", "counter", "Failed connects to this rule's servers, by reason.");
    for (const auto& rule : rules) {
        const auto& failures = rule.connect_failures;
        out.sample("ringlb_rule_connect_failures_total", {{"rule", rule.id}, {"reason", "refused"}}, failures.refused);
        out.sample("ringlb_rule_connect_failures_total", {{"rule", rule.id}, {"reason", "timeout"}}, failures.timeout);
        out.sample("ringlb_rule_connect_failures_total", {{"rule", rule.id}, {"reason", "other"}}, failures.other);
    }
    out.family("ringlb_rule_sni_sessions_total", "counter",
               "Sessions started per rule and sni pattern, by the pattern the ClientHello's server name matched.");
    for (const auto& rule : rules)
        for (size_t i = 0; i < rule.sni.size(); ++i)
            out.sample("ringlb_rule_sni_sessions_total", {{"rule", rule.id}, {"sni", rule.sni[i]}},
                       i < rule.sni_sessions.size() ? rule.sni_sessions[i] : uint64_t{0});
    out.family("ringlb_connect_time_seconds", "histogram", "Time to connect to a server, successful connects only.");
    for (const auto& rule : rules) out.histogram("ringlb_connect_time_seconds", {{"rule", rule.id}}, rule.connect_time);
    out.family("ringlb_session_duration_seconds", "histogram", "Lifetime of ended sessions.");
    for (const auto& rule : rules)
        out.histogram("ringlb_session_duration_seconds", {{"rule", rule.id}}, rule.session_duration);
}

// The state words a server can be in; each gets a sample so that a change shows as 1 -> 0.
constexpr std::string_view kServerStates[] = {"up", "down", "disabled", "draining"};

void render_server_states(Exposition& out, const RuleSnapshot& rule, const ServerSnapshot& server) {
    const bool known = std::find(std::begin(kServerStates), std::end(kServerStates), server.state) !=
                       std::end(kServerStates);
    for (const std::string_view state : kServerStates)
        out.sample("ringlb_server_state", {{"rule", rule.id}, {"server", server.label()}, {"state", state}},
                   uint64_t{state == server.state});
    if (!known)  // a state word added later still shows up rather than vanishing
        out.sample("ringlb_server_state", {{"rule", rule.id}, {"server", server.label()}, {"state", server.state}},
                   uint64_t{1});
}

// Calls `emit(rule, server, labels)` for every server of every rule.
template <typename Emit>
void for_each_server(const std::vector<RuleSnapshot>& rules, Emit emit) {
    for (const auto& rule : rules)
        for (const auto& server : rule.servers)
            emit(rule, server, Labels{{"rule", rule.id}, {"server", server.label()}});
}

// Labels plus one more pair (views: the caller's strings must outlive the result).
Labels with(Labels labels, std::string_view name, std::string_view value) {
    labels.push_back({name, value});
    return labels;
}

void render_server_health(Exposition& out, const std::vector<RuleSnapshot>& rules) {
    out.family("ringlb_server_max_connections", "gauge", "The server's max_connections in force (0 = unlimited).");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_max_connections", labels, uint64_t{server.max_connections});
    });
    out.family("ringlb_server_checks_total", "counter", "Active health checks of the server, by result.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_checks_total", with(labels, "result", "pass"), server.checks_passed);
        out.sample("ringlb_server_checks_total", with(labels, "result", "fail"), server.checks_failed);
    });
    out.family("ringlb_server_transitions_total", "counter",
               "Times the server went up or down: by active checks, and by traffic as each worker saw it.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_transitions_total", with(labels, "to", "up"), server.went_up);
        out.sample("ringlb_server_transitions_total", with(labels, "to", "down"), server.went_down);
    });
}

// Only for rules whose server_histograms is on: a rule of thousands of servers would otherwise
// make every scrape megabytes long.
void render_server_histograms(Exposition& out, const std::vector<RuleSnapshot>& rules) {
    out.family("ringlb_server_connect_time_seconds", "histogram", "Time to connect to the server, successful connects only.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        if (server.has_histograms) out.histogram("ringlb_server_connect_time_seconds", labels, server.connect_time);
    });
    out.family("ringlb_server_session_duration_seconds", "histogram", "Lifetime of ended sessions that reached the server.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        if (server.has_histograms) out.histogram("ringlb_server_session_duration_seconds", labels, server.session_duration);
    });
}

// The families Prometheus client libraries export for any process, under their usual names.
void render_os_process(Exposition& out, const std::optional<ProcessStats>& process) {
    if (!process) return;
    out.family("process_cpu_seconds_total", "counter", "CPU time ringlb has used, user and system, in seconds.");
    out.sample("process_cpu_seconds_total", {}, decimal_text(process->cpu_seconds, 2));
    out.family("process_resident_memory_bytes", "gauge", "Memory ringlb holds in RAM, in bytes.");
    out.sample("process_resident_memory_bytes", {}, process->resident_bytes);
    out.family("process_virtual_memory_bytes", "gauge", "Address space ringlb has mapped, in bytes.");
    out.sample("process_virtual_memory_bytes", {}, process->virtual_bytes);
    out.family("process_open_fds", "gauge", "Descriptors ringlb has open.");
    out.sample("process_open_fds", {}, process->open_fds);
    out.family("process_max_fds", "gauge", "The most descriptors ringlb may open (its soft RLIMIT_NOFILE).");
    out.sample("process_max_fds", {}, process->max_fds);
    out.family("process_start_time_seconds", "gauge", "When ringlb started, in seconds since the Unix epoch.");
    out.sample("process_start_time_seconds", {}, decimal_text(process->start_time_unix, 2));
}

void render_servers(Exposition& out, const std::vector<RuleSnapshot>& rules) {
    out.family("ringlb_server_up", "gauge", "1 when the server is up, else 0.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_up", labels, uint64_t{server.state == "up"});
    });
    out.family("ringlb_server_state", "gauge", "1 for the server's current state (up, down, disabled, draining).");
    for (const auto& rule : rules)
        for (const auto& server : rule.servers) render_server_states(out, rule, server);
    out.family("ringlb_server_weight", "gauge", "Configured weight of the server (0 takes no new sessions).");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_weight", labels, uint64_t{server.weight});
    });
    out.family("ringlb_server_sessions_active", "gauge", "Sessions open now to the server.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_sessions_active", labels, server.active_sessions);
    });
    out.family("ringlb_server_sessions_total", "counter", "Sessions forwarded to the server.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_sessions_total", labels, server.total_sessions);
    });
    out.family("ringlb_server_connect_failures_total", "counter", "Failed connects to the server.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        out.sample("ringlb_server_connect_failures_total", labels, server.connect_failures);
    });
    out.family("ringlb_server_bytes_total", "counter", "Bytes forwarded through the server: up is client to server.");
    for_each_server(rules, [&](const RuleSnapshot&, const ServerSnapshot& server, const Labels& labels) {
        Labels with_direction = labels;
        with_direction.push_back({"direction", "up"});
        out.sample("ringlb_server_bytes_total", with_direction, server.bytes_up);
        with_direction.back().value = "down";
        out.sample("ringlb_server_bytes_total", with_direction, server.bytes_down);
    });
    render_server_health(out, rules);
    render_server_histograms(out, rules);
}

// The management and metrics ports' defences, and the outcome of configuration reloads.
void render_control(Exposition& out, const Snapshot& snapshot) {
    const AdminPortCounters& admin_port = snapshot.admin_port;
    out.family("ringlb_admin_connections_refused_total", "counter",
               "Management port connections closed at once, by reason (allow: peer not allowed; full: no slot "
               "free).");
    out.sample("ringlb_admin_connections_refused_total", {{"reason", "allow"}}, admin_port.refused_not_allowed);
    out.sample("ringlb_admin_connections_refused_total", {{"reason", "full"}}, admin_port.refused_full);
    out.family("ringlb_admin_unauthenticated_evicted_total", "counter",
               "Unauthenticated management connections closed to make room for a newcomer.");
    out.sample("ringlb_admin_unauthenticated_evicted_total", {}, admin_port.evicted_unauthenticated);
    out.family("ringlb_admin_auth_timeouts_total", "counter",
               "Management connections closed for not authenticating in time.");
    out.sample("ringlb_admin_auth_timeouts_total", {}, admin_port.auth_timeouts);
    out.family("ringlb_admin_auth_failures_total", "counter", "Wrong tokens given to the management port.");
    out.sample("ringlb_admin_auth_failures_total", {}, admin_port.auth_failures);

    const MetricsPortCounters& metrics_port = snapshot.metrics_port;
    out.family("ringlb_metrics_connections_refused_total", "counter",
               "Metrics endpoint connections closed at once, by reason (allow, per_ip, full).");
    out.sample("ringlb_metrics_connections_refused_total", {{"reason", "allow"}}, metrics_port.refused_not_allowed);
    out.sample("ringlb_metrics_connections_refused_total", {{"reason", "per_ip"}}, metrics_port.refused_per_ip);
    out.sample("ringlb_metrics_connections_refused_total", {{"reason", "full"}}, metrics_port.refused_full);
    out.family("ringlb_metrics_request_timeouts_total", "counter",
               "Metrics endpoint connections closed without a complete request in time.");
    out.sample("ringlb_metrics_request_timeouts_total", {}, metrics_port.request_timeouts);

    const ReloadStatus& reload = snapshot.reload;
    out.family("ringlb_config_reloads_total", "counter", "Reloads of the configuration file (SIGHUP or reload).");
    out.sample("ringlb_config_reloads_total", {}, reload.reloads);
    out.family("ringlb_config_reload_failures_total", "counter",
               "Reloads that failed; the running configuration stayed as it was.");
    out.sample("ringlb_config_reload_failures_total", {}, reload.failures);
    out.family("ringlb_config_last_reload_successful", "gauge", "1 when the last reload (or the start) succeeded.");
    out.sample("ringlb_config_last_reload_successful", {}, uint64_t{reload.last_successful});
    out.family("ringlb_config_last_reload_timestamp_seconds", "gauge",
               "Unix time of the last reload attempt (or of the start).");
    out.sample("ringlb_config_last_reload_timestamp_seconds", {}, reload.last_attempt_unix);
    out.family("ringlb_config_last_reload_success_timestamp_seconds", "gauge",
               "Unix time of the last successful reload (or of the start).");
    out.sample("ringlb_config_last_reload_success_timestamp_seconds", {}, reload.last_success_unix);
}

// ==== HTTP =================================================================================

// Deep enough that a burst of connects (a reconnect flood) does not overflow the kernel's
// accept queue before the control thread has closed the surplus, which would drop a scraper's SYN.
constexpr int kListenBacklog = 1024;
constexpr uint32_t kSendPiece = 64 * 1024;   // bytes per send request: large bodies go in pieces
constexpr uint32_t kDrainRead = 16 * 1024;
constexpr size_t kMaxDrainBytes = size_t{64} * 1024;  // a client still sending this much after the reply is cut off
constexpr auto kDrainTime = std::chrono::seconds(2);
constexpr auto kAcceptRetryDelay = std::chrono::seconds(1);

std::string errno_text(int error_number) { return std::generic_category().message(error_number); }

// Where the request head ends (just past its blank line), or npos while incomplete.
size_t head_end(std::string_view data) {
    const size_t crlf = data.find("\r\n\r\n");
    const size_t lf = data.find("\n\n");  // tolerated: hand-typed requests (nc) send bare LFs
    const size_t crlf_end = crlf == std::string_view::npos ? crlf : crlf + 4;
    const size_t lf_end = lf == std::string_view::npos ? lf : lf + 2;
    return std::min(crlf_end, lf_end);
}

// RFC 9110 token characters (method names, header field names).
bool is_token(std::string_view text) {
    if (text.empty()) return false;
    constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
    return std::all_of(text.begin(), text.end(), [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               kSpecials.find(c) != std::string_view::npos;
    });
}

bool is_origin_form_target(std::string_view target) {
    if (target.empty() || target.front() != '/') return false;
    return std::all_of(target.begin(), target.end(),
                       [](char c) { return static_cast<unsigned char>(c) > 0x20 && c != 0x7f; });
}

struct RequestLine {
    std::string_view method;
    std::string_view path;  // without the query string
};

// Splits the head into lines without their CR; every line after the first must be a header.
std::vector<std::string_view> head_lines(std::string_view head) {
    std::vector<std::string_view> lines;
    while (!head.empty()) {
        const size_t newline = head.find('\n');
        std::string_view line = head.substr(0, newline);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        lines.push_back(line);
        if (newline == std::string_view::npos) break;
        head.remove_prefix(newline + 1);
    }
    while (!lines.empty() && lines.back().empty()) lines.pop_back();
    // RFC 9112 lets a server ignore empty lines before the request line.
    while (!lines.empty() && lines.front().empty()) lines.erase(lines.begin());
    return lines;
}

bool is_header_line(std::string_view line) {
    const size_t colon = line.find(':');
    return colon != std::string_view::npos && is_token(line.substr(0, colon));
}

// "GET /metrics HTTP/1.1" and well-formed header lines, or nullopt (a 400).
std::optional<RequestLine> parse_request(std::string_view head) {
    const std::vector<std::string_view> lines = head_lines(head);
    if (lines.empty()) return std::nullopt;
    const std::string_view first = lines.front();
    const size_t space1 = first.find(' ');
    const size_t space2 = space1 == std::string_view::npos ? space1 : first.find(' ', space1 + 1);
    if (space2 == std::string_view::npos) return std::nullopt;
    const std::string_view method = first.substr(0, space1);
    const std::string_view target = first.substr(space1 + 1, space2 - space1 - 1);
    const std::string_view version = first.substr(space2 + 1);
    if (!is_token(method) || !is_origin_form_target(target)) return std::nullopt;
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return std::nullopt;
    if (!std::all_of(lines.begin() + 1, lines.end(), is_header_line)) return std::nullopt;
    return RequestLine{method, target.substr(0, target.find('?'))};
}

// The token of an "Authorization: Bearer <token>" header line (header names are
// case-insensitive); "" when there is none.
std::string_view bearer_token(std::string_view head) {
    constexpr std::string_view kName = "authorization:";
    constexpr std::string_view kScheme = "bearer ";
    size_t line_start = head.find('\n');
    while (line_start != std::string_view::npos) {
        const std::string_view rest = head.substr(line_start + 1);
        const std::string_view line = rest.substr(0, rest.find('\n'));
        const auto starts_with_ci = [](std::string_view text, std::string_view prefix) {
            if (text.size() < prefix.size()) return false;
            for (size_t i = 0; i < prefix.size(); ++i)
                if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
            return true;
        };
        if (starts_with_ci(line, kName)) {
            std::string_view value = line.substr(kName.size());
            while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
            while (!value.empty() && (value.back() == '\r' || value.back() == ' ')) value.remove_suffix(1);
            return starts_with_ci(value, kScheme) ? value.substr(kScheme.size()) : std::string_view();
        }
        line_start = head.find('\n', line_start + 1);
    }
    return {};
}

std::string http_response(std::string_view status, std::string_view body,
                          std::string_view content_type = "text/plain; charset=utf-8", std::string_view extra_headers = {}) {
    std::string response = "HTTP/1.1 ";
    response += status;
    response += "\r\nContent-Type: ";
    response += content_type;
    response += "\r\nContent-Length: ";
    response += std::to_string(body.size());
    response += "\r\nConnection: close\r\n";
    response += extra_headers;
    response += "\r\n";
    response += body;
    return response;
}

}  // namespace

std::string render_prometheus(const Snapshot& snapshot) {
    Exposition out;
    render_process(out, snapshot);
    render_buffers(out, snapshot);
    render_rules(out, snapshot.rules);
    render_servers(out, snapshot.rules);
    render_control(out, snapshot);
    render_os_process(out, snapshot.process);
    return out.take();
}

// ==== MetricsServer ========================================================================
//
// user_data value: op in bits 0..7, connection slot in 8..23, generation in 24..55.

MetricsServer::MetricsServer(engine::Dispatcher& dispatcher, const config::MetricsConfig& config,
                             std::function<Snapshot()> snapshot, Logger& log, MetricsLimits limits)
    : dispatcher_(dispatcher),
      allow_(config.allow),
      token_(config.token),
      unix_path_(config.listen.unix_path),
      snapshot_(std::move(snapshot)),
      log_(log),
      limits_(limits),
      connections_(std::min<size_t>(limits.max_connections, 0xFFFF)),  // the slot has 16 bits in a tag
      not_allowed_log_(log, LogLevel::Info, "metrics connections refused (not in [metrics] allow)",
                       limits.log_interval),
      refused_log_(log, LogLevel::Warn, "metrics connections refused (per-IP share or every slot in use)",
                   limits.log_interval),
      timeout_log_(log, LogLevel::Info, "metrics connections closed without a complete request in time",
                   limits.log_interval) {
    if (unix_path_.empty()) {
        listen_fd_ = net::listen_tcp(config.listen.address, kListenBacklog);
        bound_address_ = net::local_address(listen_fd_.get());
    } else {
        listen_fd_ = net::listen_unix(unix_path_, kListenBacklog);
    }
    channel_ = dispatcher_.add(*this);
    arm_accept();
    log_.debug("metrics: serving GET /metrics on ", unix_path_.empty() ? bound_address_.to_string() : "unix:" + unix_path_);
}

MetricsServer::~MetricsServer() {
    // Best effort for an owner that did not wait for idle(): nothing may stay open.
    for (Connection& connection : connections_)
        if (connection.fd) finish_close(connection);
    if (listen_fd_) {
        engine().forget(listen_fd_.get());
        close_listener();
    }
    dispatcher_.remove(channel_);
}

engine::UserData MetricsServer::tag(Op op, uint32_t slot, uint32_t generation) const {
    const uint64_t value = uint64_t{static_cast<uint8_t>(op)} | (uint64_t{slot & 0xFFFF} << 8) |
                           (uint64_t{generation} << 24);
    return engine::Dispatcher::tag(channel_, value);
}

size_t MetricsServer::open_connections() const {
    return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(),
                                             [](const Connection& connection) { return bool(connection.fd); }));
}

void MetricsServer::stop() {
    if (stopping_) return;
    stopping_ = true;
    accept_retry_at_.reset();
    if (listen_fd_) {
        net::stop_listening(listen_fd_.get());  // the port is free at once, even under io_uring
        if (accept_pending_) engine().cancel(listen_fd_.get());
        close_listener_when_quiet();
    }
    for (Connection& connection : connections_)
        if (connection.fd) close_connection(connection);
}

bool MetricsServer::idle() const { return stopping_ && !listen_fd_ && open_connections() == 0; }

// ---- accepting ----------------------------------------------------------------------------

void MetricsServer::arm_accept() {
    accept_pending_ = true;
    engine().accept(listen_fd_.get(), tag(Op::Accept));
}

void MetricsServer::on_accept(const engine::Completion& completion) {
    if (!completion.more) accept_pending_ = false;
    if (completion.result >= 0) {
        admit(net::UniqueFd(completion.result));
    } else if (completion.result != -ECANCELED && !stopping_) {
        log_.warn("metrics: accept on ", bound_address_.to_string(), " failed: ", errno_text(-completion.result),
                  completion.more ? "" : "; accepting again shortly");
        if (!completion.more) accept_retry_at_ = Clock::now() + kAcceptRetryDelay;
        return;
    }
    if (stopping_) {
        close_listener_when_quiet();
    } else if (!accept_pending_) {
        arm_accept();  // the kernel ended the repeating accept without an error: ask again
    }
}

void MetricsServer::close_listener_when_quiet() {
    if (accept_pending_ || !listen_fd_) return;
    engine().forget(listen_fd_.get());
    close_listener();
}

void MetricsServer::close_listener() {
    listen_fd_.reset();
    // Our socket file: a stale one would only make the next start remove it first.
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

bool MetricsServer::allowed(const net::SocketAddress& peer) const {
    return std::any_of(allow_.begin(), allow_.end(), [&](const net::ClientPattern& p) { return p.matches(peer); });
}

size_t MetricsServer::connections_from(const net::IpKey& ip) const {
    return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(),
                                             [&](const Connection& connection) { return connection.ip == ip; }));
}

void MetricsServer::admit(net::UniqueFd fd) {
    if (stopping_) return;  // accepted while the cancel was on its way: fd closes here
    const auto now = Clock::now();
    std::optional<net::IpKey> ip;  // unix socket: the socket file's permissions decide who gets here
    if (unix_path_.empty()) {
        const net::SocketAddress peer = net::peer_address(fd.get());
        if (peer.family() != AF_INET && peer.family() != AF_INET6) return;  // reset before we looked
        if (!allowed(peer)) {
            ++counters_.refused_not_allowed;
            not_allowed_log_.event(now, "metrics: closed a connection from ", peer.to_string(), " (not in allow)");
            return;
        }
        ip = net::IpKey::of(peer);
        if (connections_from(*ip) >= limits_.max_connections_per_ip) {
            ++counters_.refused_per_ip;
            refused_log_.event(now, "metrics: closed a connection from ", peer.to_string(), ": that IP already has ",
                               limits_.max_connections_per_ip, " connections open");
            return;
        }
    }
    const auto free_slot = std::find_if(connections_.begin(), connections_.end(),
                                        [](const Connection& connection) { return !connection.fd; });
    if (free_slot == connections_.end()) {
        ++counters_.refused_full;
        refused_log_.event(now, "metrics: closed a connection: already ", connections_.size(), " open");
        return;
    }
    Connection& connection = *free_slot;
    connection.fd = std::move(fd);
    connection.ip = ip;
    connection.phase = Phase::ReadingHead;
    connection.deadline = now + limits_.connection_timeout;
    connection.head_deadline = now + limits_.head_timeout;
    receive(connection, static_cast<uint32_t>(free_slot - connections_.begin()), kMaxRequestHead + 1);
}

// ---- one connection -----------------------------------------------------------------------

void MetricsServer::on_completion(const engine::Completion& completion) {
    const uint64_t value = engine::Dispatcher::value_of(completion.user_data);
    const auto op = static_cast<Op>(value & 0xFF);
    if (op == Op::Accept) return on_accept(completion);
    const auto slot = static_cast<uint32_t>((value >> 8) & 0xFFFF);
    const auto generation = static_cast<uint32_t>(value >> 24);
    if (slot >= connections_.size() || connections_[slot].generation != generation || !connections_[slot].fd) {
        // Cannot happen (a slot is reused only after its last completion); never leak a buffer.
        if (completion.has_buffer) engine().release_buffer(completion.buffer_id);
        log_.error("metrics: completion for a closed connection (slot ", slot, ")");
        return;
    }
    on_connection_completion(connections_[slot], slot, op, completion);
}

void MetricsServer::on_connection_completion(Connection& connection, uint32_t slot, Op op,
                                             const engine::Completion& completion) {
    connection.request_pending = false;
    if (completion.has_buffer) {
        if (connection.phase == Phase::ReadingHead && completion.result > 0)
            connection.head.append(reinterpret_cast<const char*>(engine().buffer_data(completion.buffer_id)),
                                   static_cast<size_t>(completion.result));
        engine().release_buffer(completion.buffer_id);  // copied (or discarded): give it back at once
    }
    if (connection.phase == Phase::Closing) return finish_close(connection);
    switch (op) {
        case Op::Recv:
            if (completion.result <= 0) return close_connection(connection);  // EOF, reset or error
            if (connection.phase == Phase::Draining) return on_drained(connection, slot, completion.result);
            return on_head_bytes(connection, slot);
        case Op::Send: return on_sent(connection, slot, completion.result);
        case Op::Shutdown:
            if (completion.result < 0) return close_connection(connection);
            connection.phase = Phase::Draining;
            connection.deadline = std::min(connection.deadline, Clock::now() + kDrainTime);
            return receive(connection, slot, kDrainRead);
        case Op::Accept: break;  // routed to on_accept
    }
}

void MetricsServer::on_head_bytes(Connection& connection, uint32_t slot) {
    const size_t end = head_end(connection.head);
    if (end <= kMaxRequestHead) {  // npos (no end yet) is larger than any limit
        return start_response(connection, slot, answer(std::string_view(connection.head).substr(0, end)));
    }
    if (connection.head.size() > kMaxRequestHead) {
        return start_response(connection, slot,
                              http_response("431 Request Header Fields Too Large", "request head larger than 8 KiB\n"));
    }
    receive(connection, slot, static_cast<uint32_t>(kMaxRequestHead + 1 - connection.head.size()));
}

std::string MetricsServer::answer(std::string_view head) {
    const std::optional<RequestLine> request = parse_request(head);
    if (!request) return http_response("400 Bad Request", "bad request\n");
    const std::string_view path = request->path;
    if (path != "/metrics" && path != "/healthz" && path != "/")
        return http_response("404 Not Found", "not found; try /metrics\n");
    if (request->method != "GET")
        return http_response("405 Method Not Allowed", "only GET\n", "text/plain; charset=utf-8", "Allow: GET\r\n");
    if (path == "/healthz") return http_response("200 OK", "ok\n");  // open: it tells nothing
    if (path == "/") return http_response("200 OK", "ringlb: Prometheus metrics are at /metrics\n");
    if (!token_.empty() && !tokens_equal(bearer_token(head), token_))
        return http_response("401 Unauthorized", "a bearer token is required\n", "text/plain; charset=utf-8",
                             "WWW-Authenticate: Bearer realm=\"ringlb\"\r\n");
    try {
        return http_response("200 OK", render_prometheus(snapshot_()), "text/plain; version=0.0.4");
    } catch (const std::exception& failure) {
        log_.error("metrics: cannot gather a snapshot: ", failure.what());
        return http_response("500 Internal Server Error", "snapshot failed\n");
    }
}

void MetricsServer::start_response(Connection& connection, uint32_t slot, std::string response) {
    connection.phase = Phase::Sending;
    connection.head.clear();
    connection.head.shrink_to_fit();
    connection.response = std::move(response);
    connection.sent = 0;
    send_next_piece(connection, slot);
}

void MetricsServer::send_next_piece(Connection& connection, uint32_t slot) {
    const size_t remaining = connection.response.size() - connection.sent;
    const auto length = static_cast<uint32_t>(std::min<size_t>(remaining, kSendPiece));
    connection.request_pending = true;
    engine().send(connection.fd.get(), reinterpret_cast<const std::byte*>(connection.response.data() + connection.sent),
                  length, tag(Op::Send, slot, connection.generation));
}

void MetricsServer::on_sent(Connection& connection, uint32_t slot, int32_t result) {
    if (result <= 0) return close_connection(connection);  // the client went away
    connection.sent += static_cast<size_t>(result);
    if (connection.sent < connection.response.size()) return send_next_piece(connection, slot);
    connection.response.clear();
    connection.response.shrink_to_fit();
    connection.request_pending = true;
    engine().shutdown_write(connection.fd.get(), tag(Op::Shutdown, slot, connection.generation));
}

void MetricsServer::on_drained(Connection& connection, uint32_t slot, int32_t result) {
    connection.drained += static_cast<size_t>(result);
    if (connection.drained > kMaxDrainBytes) return close_connection(connection);
    receive(connection, slot, kDrainRead);
}

void MetricsServer::receive(Connection& connection, uint32_t slot, uint32_t max_bytes) {
    connection.request_pending = true;
    engine().recv(connection.fd.get(), max_bytes, tag(Op::Recv, slot, connection.generation));
}

void MetricsServer::close_connection(Connection& connection) {
    if (connection.phase == Phase::Closing) return;  // already waiting for its cancel
    if (!connection.request_pending) return finish_close(connection);
    connection.phase = Phase::Closing;
    engine().cancel(connection.fd.get());  // its one pending request completes, then finish_close
}

void MetricsServer::finish_close(Connection& connection) {
    engine().forget(connection.fd.get());
    connection.fd.reset();
    connection.ip.reset();
    ++connection.generation;  // 32 bits: exactly fills bits 24..55 of the tag
    connection.phase = Phase::ReadingHead;
    connection.request_pending = false;
    connection.head = {};
    connection.response = {};
    connection.sent = 0;
    connection.drained = 0;
}

std::optional<MetricsServer::Clock::time_point> MetricsServer::on_tick(Clock::time_point now) {
    if (accept_retry_at_ && *accept_retry_at_ <= now && !stopping_) {
        accept_retry_at_.reset();
        arm_accept();
    }
    std::optional<Clock::time_point> next = accept_retry_at_;
    const auto keep_earliest = [&next](std::optional<Clock::time_point> due) {
        if (due && (!next || *due < *next)) next = due;
    };
    for (Connection& connection : connections_) {
        if (!connection.fd || connection.phase == Phase::Closing) continue;
        const bool reading_head = connection.phase == Phase::ReadingHead;
        const Clock::time_point deadline =
            reading_head ? std::min(connection.deadline, connection.head_deadline) : connection.deadline;
        if (deadline <= now) {
            if (reading_head) {
                ++counters_.request_timeouts;
                timeout_log_.event(now, "metrics: closed a connection without a complete request in time");
            } else {
                log_.debug("metrics: connection timed out");
            }
            close_connection(connection);
            continue;
        }
        keep_earliest(deadline);
    }
    keep_earliest(flush_throttled_logs(now));
    return next;
}

std::optional<MetricsServer::Clock::time_point> MetricsServer::flush_throttled_logs(Clock::time_point now) {
    std::optional<Clock::time_point> next;
    for (ThrottledLog* log : {&not_allowed_log_, &refused_log_, &timeout_log_})
        if (const auto due = log->flush(now); due && (!next || *due < *next)) next = due;
    return next;
}

}  // namespace ringlb::admin
