#pragma once
// The management port: a line-based text protocol on TCP or a unix socket, served by the control
// thread's engine next to the other control components. Each line is one command; each reply is
// zero or more body lines followed by `ok`, or by `error: <message>` as its last line.
//
// It never blocks: replies are queued and sent in pieces as send completions arrive, and a client
// whose unsent output passes a limit is not read from until it drains, so a client that never
// reads costs at most one reply plus that limit.
//
// With a token, clients that have not authenticated are kept to a small share of the slots and a
// short deadline, and failed tokens slow further attempts from their IP (see AdminLimits and
// AuthThrottle); refusals, evictions and failures are counted and logged at a limited rate.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/admin/auth_throttle.hpp"
#include "ringlb/admin/command.hpp"
#include "ringlb/admin/controller.hpp"
#include "ringlb/admin/snapshot.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/net/socket.hpp"
#include "ringlb/util/log.hpp"
#include "ringlb/util/throttled_log.hpp"

namespace ringlb::admin {

// Bounds on what one admin client may cost; the defaults suit production, tests shrink them.
struct AdminLimits {
    size_t max_connections = 64;            // more are closed right after accept
    size_t max_line_bytes = 4096;           // longer lines get an error and are skipped
    size_t max_unsent_bytes = size_t{1024} * 1024;  // above it the client is not read from until it drains
    std::chrono::milliseconds idle_timeout = std::chrono::minutes(5);
    unsigned max_auth_failures = 3;  // wrong tokens before the connection is closed
    // With a token: connections not authenticated yet may hold this many of the slots at most;
    // when they do, the oldest of them is closed to make room for a newcomer, so that clients
    // that never authenticate cannot keep an operator out (even one on the same address).
    size_t max_unauthenticated = 16;
    // With a token: a connection not authenticated this long after it was accepted is closed,
    // whatever it sends meanwhile.
    std::chrono::milliseconds auth_timeout = std::chrono::seconds(5);
    AuthBackoff auth_backoff;  // how failed tokens slow further attempts from that IP
    std::chrono::milliseconds log_interval = std::chrono::seconds(10);  // floods: one summary line per interval
};

class AdminServer final : public engine::Component {
public:
    // Binds config.listen at once (throws net::SystemError naming the address or path, or
    // std::invalid_argument when the listener is not enabled) and starts accepting through the
    // dispatcher's engine. TCP clients must match one of config.allow (an empty list admits no
    // TCP client); unix socket clients are governed by the socket file's mode (0660).
    // The dispatcher and its engine must outlive the server; all of it runs on the thread that
    // runs the dispatcher, which is also the thread that must destroy the server.
    AdminServer(engine::Dispatcher& dispatcher, const config::AdminConfig& config, Controller& controller, Logger& log,
                std::string version_text, AdminLimits limits = {});
    // Closes the listener and every connection, waiting (briefly) for the engine to finish their
    // pending requests, and removes the unix socket file it created.
    ~AdminServer() override;

    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    void on_completion(const engine::Completion& completion) override;
    std::optional<Clock::time_point> on_tick(Clock::time_point now) override;

    // Where it listens, in the form `ringlb ctl` accepts: "127.0.0.1:9900" (with the real port
    // when the config asked for port 0) or "unix:/run/ringlb.sock".
    std::string listen_address() const;
    // Admin connections open now, including those still closing.
    size_t connection_count() const;
    // Refusals, evictions and authentication failures since start.
    const AdminPortCounters& counters() const { return counters_; }

private:
    enum class Op : uint8_t { Accept = 1, Recv = 2, Send = 3 };

    struct Connection {
        net::UniqueFd fd;
        std::string peer;  // "127.0.0.1:41234" or "unix", for log lines
        net::IpKey ip;     // the peer's IP (all unix socket clients share one key)
        uint32_t generation = 0;
        bool open = false;                // the slot is in use (also while closing)
        bool closing = false;             // cancelled; released once nothing is pending
        bool close_when_flushed = false;  // quit, too many auth failures, or the peer finished
        bool peer_finished = false;       // end of input seen: answer what is left, then close
        bool recv_pending = false;
        bool send_pending = false;
        bool authenticated = false;
        unsigned auth_failures = 0;
        bool skipping_long_line = false;  // discarding up to the next '\n'
        bool awaiting_reply = false;      // a command answers later (reload): later lines wait for it
        bool starting_command = false;    // inside the call that may answer at once
        // A whole line had already arrived when the connection was accepted (and has not been
        // received yet): a client that came to talk, such as `ringlb ctl`.
        bool line_waiting = false;
        // A line of an unauthenticated client from an IP with recent failures waits in `input`
        // until then (nothing more is read meanwhile); `backoff_served` lets it go once.
        std::optional<Clock::time_point> held_until;
        bool backoff_served = false;
        std::string input;                // received, not yet handled
        std::deque<std::string> output;   // queued replies; front() is sent from front_sent on
        size_t front_sent = 0;
        size_t unsent_bytes = 0;
        Clock::time_point opened_at{};
        Clock::time_point last_activity{};
    };

    // ---- listener
    void bind_listener(const config::ControlListen& listen);
    void arm_accept();
    void on_accept(const engine::Completion& completion);
    void admit(net::UniqueFd fd);
    bool peer_allowed(const net::SocketAddress& peer) const;
    Connection* free_slot();
    size_t live_count() const;
    size_t unauthenticated_count() const;
    bool make_room_for_unauthenticated(Clock::time_point now);
    Connection* eviction_candidate();
    void close_with_notice(Connection& connection, std::string_view notice);

    // ---- one connection's life
    void arm_recv(Connection& connection);
    void on_recv(Connection& connection, const engine::Completion& completion);
    void on_send(Connection& connection, const engine::Completion& completion);
    void after_io(Connection& connection);
    void handle_input(Connection& connection);
    bool may_handle_more(const Connection& connection) const;
    bool skip_rest_of_long_line(Connection& connection, size_t& consumed);
    bool held_by_backoff(Connection& connection);
    void finish_input(Connection& connection);
    void handle_line(Connection& connection, std::string_view line);
    std::string line_too_long_reply() const;
    void send_more(Connection& connection);
    void queue_output(Connection& connection, std::string text);
    void begin_close(Connection& connection);
    void release_if_quiet(Connection& connection);
    bool wants_input(const Connection& connection) const;

    // ---- commands
    Reply execute(Connection& connection, const Command& command, std::string_view line);
    Reply authenticate(Connection& connection, std::string_view token);
    Reply call_controller(const Command& command);
    void start_reload(Connection& connection, std::string_view line);
    void finish_deferred(uint32_t slot, uint32_t generation, const Reply& reply);

    std::optional<Clock::time_point> check_deadlines(Connection& connection, Clock::time_point now);
    std::optional<Clock::time_point> flush_throttled_logs(Clock::time_point now);

    void wait_for_pending_requests();
    engine::UserData tag(const Connection& connection, Op op) const;
    uint32_t slot_of(const Connection& connection) const;

    engine::Dispatcher& dispatcher_;
    engine::Engine& engine_;
    Controller& controller_;
    Logger& log_;
    const std::string version_text_;
    const AdminLimits limits_;
    const std::vector<net::ClientPattern> allow_;
    const std::string token_;

    net::UniqueFd listener_;
    std::string listen_text_;
    std::string unix_path_;  // removed on destruction; empty for TCP
    uint8_t channel_ = 0;
    bool accept_armed_ = false;
    std::optional<Clock::time_point> accept_retry_at_;
    bool shutting_down_ = false;
    // Fixed size: twice limits_.max_connections, so that connections still closing (evicted
    // ones wait for their cancelled requests) never keep a newcomer out.
    std::vector<Connection> connections_;

    AuthThrottle throttle_;
    Clock::time_point next_throttle_cleanup_{};
    AdminPortCounters counters_;
    ThrottledLog not_allowed_log_;
    ThrottledLog full_log_;
    ThrottledLog evicted_log_;
    ThrottledLog auth_timeout_log_;
    ThrottledLog auth_failure_log_;
};

}  // namespace ringlb::admin
