#pragma once
// A point-in-time view of the whole forwarder, summed over the worker threads: what `show stats`
// and the metrics endpoint print. Plain values, gathered by asking each worker on its own thread.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ringlb/admin/process_stats.hpp"

namespace ringlb::admin {

// Cumulative-bucket histogram in microseconds (Prometheus style: count of samples <= bound).
struct Histogram {
    // Past a minute up to an hour: session durations reach the idle timeout's range (300 s by
    // default), and a scrape must tell a 2-minute session from a 50-minute one.
    static constexpr std::array<uint64_t, 16> kBoundsUs{
        100,     250,      500,       1000,      2500,       5000,      10000,     50000,
        250000,  1000000,  10000000,  60000000,  120000000,  300000000, 900000000, 3600000000};
    std::array<uint64_t, kBoundsUs.size()> buckets{};  // buckets[i]: samples <= kBoundsUs[i] (not cumulative)
    uint64_t count = 0;
    uint64_t sum_us = 0;

    void add(uint64_t us) {
        for (size_t i = 0; i < kBoundsUs.size(); ++i)
            if (us <= kBoundsUs[i]) {
                ++buckets[i];
                break;
            }
        ++count;
        sum_us += us;
    }
    void merge(const Histogram& other) {
        for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += other.buckets[i];
        count += other.count;
        sum_us += other.sum_us;
    }
};

struct ServerSnapshot {
    std::string address;  // as in the config
    std::string name;     // empty when the config gives none
    // What the `server` label of the metrics shows: the name when there is one.
    const std::string& label() const { return name.empty() ? address : name; }
    std::string state;    // "up", "down", "disabled", "draining"
    unsigned weight = 0;
    bool backup = false;
    uint64_t active_sessions = 0;
    uint64_t total_sessions = 0;
    uint64_t connect_failures = 0;
    uint64_t bytes_up = 0;    // client -> server
    uint64_t bytes_down = 0;  // server -> client
    uint32_t max_connections = 0;  // configured; 0 = unlimited
    // Active checks of this address (kept across reloads, as the checker keeps them).
    uint64_t checks_passed = 0;
    uint64_t checks_failed = 0;
    // State changes: by active checks, and by traffic (passive health, counted by each worker
    // that saw the server fail or recover).
    uint64_t went_up = 0;
    uint64_t went_down = 0;
    bool has_histograms = false;  // the rule's server_histograms is on
    Histogram connect_time;
    Histogram session_duration;
};

struct RejectCounts {
    // The limit that refused a client (see count_limit).
    enum class Limit : uint8_t { Global, PerIp, Rate, MaxClients };

    uint64_t acl = 0;        // no rule takes the client, or denied
    uint64_t limit = 0;      // max_sessions, per-IP, max_clients, rate
    uint64_t no_server = 0;  // every server down or failed
    // Before any rule is known (global counts only): a peer not in proxy_from, and a connection
    // over max_handshakes.
    uint64_t untrusted_proxy = 0;
    uint64_t max_handshakes = 0;
    // Not TLS, a bad or late ClientHello on a listener with sni/alpn rules, and no other rule.
    uint64_t client_hello = 0;
    // `limit` split by the limit that refused: they add up to it.
    uint64_t global_limit = 0;  // max_sessions (or no session slot left)
    uint64_t per_ip_limit = 0;  // max_sessions_per_ip, global or the rule's
    uint64_t rate_limit = 0;    // max_conn_rate_per_ip
    uint64_t max_clients = 0;   // the rule's max_clients

    void count_limit(Limit which) {
        ++limit;
        switch (which) {
            case Limit::Global: ++global_limit; break;
            case Limit::PerIp: ++per_ip_limit; break;
            case Limit::Rate: ++rate_limit; break;
            case Limit::MaxClients: ++max_clients; break;
        }
    }
    void merge(const RejectCounts& other) {
        acl += other.acl;
        limit += other.limit;
        global_limit += other.global_limit;
        per_ip_limit += other.per_ip_limit;
        rate_limit += other.rate_limit;
        max_clients += other.max_clients;
        no_server += other.no_server;
        untrusted_proxy += other.untrusted_proxy;
        max_handshakes += other.max_handshakes;
        client_hello += other.client_hello;
    }
};

struct ConnectFailureCounts {
    uint64_t refused = 0;
    uint64_t timeout = 0;
    uint64_t other = 0;
};

struct RuleSnapshot {
    std::string id;
    std::string mode;  // long name
    std::vector<std::string> listen;
    std::vector<std::string> clients;
    std::vector<std::string> deny;
    std::vector<std::string> sni;           // the rule's server-name patterns
    std::vector<uint64_t> sni_sessions;     // per pattern: sessions whose ClientHello name it matched
    uint32_t max_clients = 0;
    uint32_t max_sessions_per_ip = 0;
    uint32_t max_conn_rate_per_ip = 0;
    uint64_t active_sessions = 0;
    uint64_t total_sessions = 0;
    uint64_t bytes_up = 0;
    uint64_t bytes_down = 0;
    uint64_t spliced_up = 0;  // of bytes_up and bytes_down: moved by splice (zero_copy)
    uint64_t spliced_down = 0;
    RejectCounts rejects;
    ConnectFailureCounts connect_failures;
    Histogram connect_time;      // successful connects
    Histogram session_duration;  // ended sessions
    // The queue (rule key `queue`): shared by the workers, so its length is not summed.
    uint32_t queue_capacity = 0;
    uint64_t queue_length = 0;
    uint64_t queue_timeouts = 0;
    uint64_t queue_full = 0;
    Histogram queue_time;  // clients that left the queue, served or not
    std::vector<ServerSnapshot> servers;
};

// One worker's receive buffers.
struct WorkerBuffers {
    uint32_t held = 0;           // by sessions: bytes received and not yet sent on
    uint32_t offered = 0;        // waiting in the kernel for bytes to arrive (io_uring)
    uint32_t made = 0;           // buffers the worker's pool has made so far
    uint32_t resident_free = 0;  // free buffers whose pages are not given back yet
    uint32_t peak_session = 0;   // the most buffers one session of this worker held at once
    uint64_t accepted = 0;       // clients this worker accepted since start
    // The splice path's pipes (zero_copy).
    uint32_t pipes_in_use = 0;  // holding bytes in flight
    uint32_t pipes_free = 0;    // made and ready for reuse
    uint64_t pipes_taken = 0;   // times a direction took one for bytes that arrived
    // Times bytes were copied because no pipe could be had, by cause (kPipeFallbackNames order).
    std::array<uint64_t, 5> pipe_fallbacks{};
};
constexpr std::array<const char*, 5> kPipeFallbackNames = {"pool_empty", "refused", "shrunk", "resize_failed",
                                                         "unsupported"};

// The management port's defences at work (counted since start).
struct AdminPortCounters {
    uint64_t refused_not_allowed = 0;      // peer not in [admin] allow
    uint64_t refused_full = 0;             // no slot free: held by authenticated clients, or by
                                           // unauthenticated ones too young to be closed
    uint64_t evicted_unauthenticated = 0;  // the oldest unauthenticated one made room for a newcomer
    uint64_t auth_timeouts = 0;            // not authenticated in time
    uint64_t auth_failures = 0;            // wrong tokens
};

// The metrics endpoint's refusals (counted since start).
struct MetricsPortCounters {
    uint64_t refused_not_allowed = 0;  // peer not in [metrics] allow
    uint64_t refused_per_ip = 0;       // that IP already had its share of connections
    uint64_t refused_full = 0;         // every connection slot in use
    uint64_t request_timeouts = 0;     // no complete request head in time
};

// Outcome of re-reading the configuration file (SIGHUP or `reload`). Times are seconds since the
// Unix epoch; the start counts as the first successful load.
struct ReloadStatus {
    uint64_t reloads = 0;
    uint64_t failures = 0;
    bool last_successful = true;
    uint64_t last_attempt_unix = 0;
    uint64_t last_success_unix = 0;
    std::string last_error;  // of the last failed reload, "" when the last one succeeded
};

struct Snapshot {
    std::string version;
    std::string engine;    // "uring" / "epoll"
    std::string features;  // the engine line's bracket
    unsigned threads = 0;
    uint64_t uptime_seconds = 0;
    uint64_t accepted = 0;
    uint64_t active_sessions = 0;
    uint64_t peak_sessions = 0;  // the most open at once since start (handshakes included)
    uint32_t max_sessions = 0;   // configured limits, so saturation can be graphed
    uint32_t max_handshakes = 0;
    uint64_t sessions_ended = 0;
    uint64_t handshakes_active = 0;  // connections waiting for their PROXY header now
    uint64_t accept_errors = 0;
    uint64_t idle_timeouts = 0;
    uint64_t timers_armed = 0;  // connect and idle timers of live sessions, accept retries
    uint64_t dropped_no_fd_accept = 0;  // clients dropped for want of a descriptor (see ForwarderStats)
    uint64_t dropped_no_fd_server = 0;
    RejectCounts rejects;  // including clients no rule took (acl)
    uint64_t sessions_abandoned = 0;  // closed sessions whose requests had to be handed to the engine
    uint32_t buffer_size = 0;               // bytes per receive buffer
    uint64_t buffer_memory_cap = 0;         // max_buffer_memory in force
    uint64_t buffer_memory_in_use = 0;      // taken from it by the workers' pools now
    uint64_t buffer_cap_reached = 0;        // times a pool found the cap reached
    std::vector<WorkerBuffers> workers;     // in worker order
    std::vector<RuleSnapshot> rules;
    AdminPortCounters admin_port;
    MetricsPortCounters metrics_port;
    ReloadStatus reload;
    std::optional<ProcessStats> process;  // nullopt when /proc could not be read
};

}  // namespace ringlb::admin
