#pragma once
// The session core: accepts clients, matches rules, applies limits, picks servers, pairs each
// client with a server connection and moves bytes both ways. It asks the engine for operations
// and reacts to their completions; it never calls an event API itself.
//
// One Forwarder per worker thread. Everything here is touched only by that thread: the control
// thread reaches it through tasks in the worker's mailbox (see app/runtime), which call the
// "control" methods below between rounds of completions.
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ringlb/admin/controller.hpp"
#include "ringlb/admin/snapshot.hpp"
#include "ringlb/balance/balancer.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/core/connection_record.hpp"
#include "ringlb/core/server_connections.hpp"
#include "ringlb/core/server_queue.hpp"
#include "ringlb/core/session.hpp"
#include "ringlb/core/session_limits.hpp"
#include "ringlb/core/slab.hpp"
#include "ringlb/core/timer_queue.hpp"
#include "ringlb/core/user_data.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/health/passive.hpp"
#include "ringlb/net/client_hello.hpp"
#include "ringlb/net/inherited_sockets.hpp"
#include "ringlb/net/socket.hpp"
#include "ringlb/util/log.hpp"
#include "ringlb/util/log_throttle.hpp"

namespace ringlb::core {

struct ForwarderStats {
    uint64_t accepted = 0;
    uint64_t accept_errors = 0;
    uint64_t rejected_no_rule = 0;
    uint64_t rejected_max_sessions = 0;
    uint64_t rejected_per_ip = 0;
    uint64_t rejected_denied = 0;       // denied by every rule that would otherwise have taken it
    uint64_t rejected_max_clients = 0;  // rule max_clients
    uint64_t rejected_rule_per_ip = 0;  // rule max_sessions_per_ip
    uint64_t rejected_rate = 0;         // rule max_conn_rate_per_ip
    uint64_t rejected_proxy_header = 0;  // accept_proxy: missing, malformed or late header
    uint64_t rejected_untrusted_proxy = 0;  // accept_proxy: a peer not in proxy_from
    uint64_t rejected_max_handshakes = 0;   // accept_proxy: max_handshakes connections await their header
    // sni/alpn: not TLS, a bad or late ClientHello, and no rule without sni/alpn to take it
    uint64_t rejected_client_hello = 0;
    uint64_t connect_failures = 0;
    uint64_t no_server_left = 0;
    uint64_t idle_timeouts = 0;
    uint64_t sessions_ended = 0;
    // Sessions whose requests had not all completed kClosingGrace after they were closed: the
    // engine took their descriptors and the slot was released.
    uint64_t sessions_abandoned = 0;
    uint32_t peak_session_buffers = 0;  // the most receive buffers one session held at once
    // Clients dropped for want of a file descriptor: at accept (a failed accept, which leaves its
    // client waiting, counts too) and for their server socket.
    uint64_t dropped_no_fd_accept = 0;
    uint64_t dropped_no_fd_server = 0;

    uint64_t rejected_total() const {
        return rejected_no_rule + rejected_max_sessions + rejected_per_ip + rejected_denied + rejected_max_clients +
               rejected_rule_per_ip + rejected_rate + rejected_proxy_header + rejected_untrusted_proxy +
               rejected_max_handshakes + rejected_client_hello;
    }
};

// A listen address could not be bound; what() names it ("bind 127.0.0.1:80: Permission denied").
class ListenError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The rules a worker serves, by slot. A slot keeps its index for the life of the process, so a
// live session's rule index never moves under it: a modified rule gets a new slot and the old one
// is retired (no new sessions; live ones finish on it). Built by the control thread, applied by
// every worker.
struct RulePlan {
    struct Slot {
        // null: retired (or never used). Shared and never changed: a plan is cheap to copy however
        // many servers its rules have.
        std::shared_ptr<const config::RuleConfig> rule;
        bool changed = false;  // new in this plan: build fresh state for it
        // With active checks: each server's state so far (a rule changed by a reload or by DNS
        // keeps its servers' verdicts); empty = every server starts DOWN.
        std::vector<bool> checked_up;
        // Servers new to the rule since its last version (slow start ramps them up); empty = none.
        std::vector<bool> joining;
    };
    std::vector<Slot> slots;
    std::vector<uint16_t> order;  // the live slots in the config file's order (rule matching order)
};

// One session as `show sessions` prints it.
struct SessionInfo {
    uint64_t id = 0;
    std::string client, listener, rule, server, state;
    uint64_t bytes_up = 0, bytes_down = 0;
    std::chrono::milliseconds age{0};
};

// Listening sockets opened elsewhere for an address (socket activation, an upgrade), served
// instead of binding it; none: bind it.
using ListenerSource = std::function<std::vector<net::InheritedListener>(const net::SocketAddress&)>;

class Forwarder final : public engine::CompletionHandler {
public:
    // Binds every listen address of the plan (throws ListenError); accepting starts with
    // start_accepting(). `limits` may be shared with other workers; with `reuse_port` each
    // worker binds its own listeners on the same addresses. `worker` numbers this worker in
    // session ids. `inherited` is asked first for every address to listen on.
    Forwarder(const config::GlobalConfig& global, const RulePlan& plan, engine::Engine& engine, Logger& log,
              SessionLimits& limits, bool reuse_port = false, unsigned worker = 0, ListenerSource inherited = {});
    // A plan with the config's rules in slots 0..n-1.
    Forwarder(const config::Config& config, engine::Engine& engine, Logger& log, SessionLimits& limits,
              bool reuse_port = false);
    ~Forwarder();
    Forwarder(const Forwarder&) = delete;
    Forwarder& operator=(const Forwarder&) = delete;

    static RulePlan initial_plan(const config::Config& config);

    void start_accepting();
    // Serves until `stop` turns true (checked at least every 250 ms).
    void run(const std::atomic<bool>& stop);
    // One round: wait up to max_wait for completions, handle them, fire due timers.
    void run_once(std::chrono::milliseconds max_wait);

    void on_batch_start() override { now_ = Clock::now(); }
    void on_completion(const engine::Completion& completion) override;

    const ForwarderStats& stats() const { return stats_; }
    uint32_t active_sessions() const { return sessions_.in_use(); }
    size_t armed_timers() const { return timers_.size(); }
    std::vector<std::string> listen_addresses() const;
    // The descriptors of the listeners in service, to pass on to a new process (an upgrade), each
    // with whether the service manager holds its socket too (socket activation).
    std::vector<std::pair<int, bool>> listening_descriptors() const;

    // Session descriptors (accepted clients, server sockets) numbered `ceiling` or above are
    // closed at once and their clients dropped, so the descriptors above it stay free for the
    // control thread (see app/descriptors.hpp). Default: no ceiling.
    void set_descriptor_ceiling(int ceiling) { descriptor_ceiling_ = ceiling; }
    // Test hook (RINGLB_FAULT pipe-trim): how often free pipes are trimmed.
    void set_pipe_trim_interval(std::chrono::milliseconds interval) { pipe_trim_interval_ = interval; }

    // Connection records (log_connections) go to `sink` as pre-formatted lines; null = off.
    void set_connection_log(Logger* sink, config::LogFormat format) {
        connection_log_ = sink;
        connection_log_format_ = format;
    }

    // ---- control: called on this worker's thread, from mailbox tasks ----------------------

    // Switches to `plan`: binds new listen addresses, closes dropped ones, builds changed rules.
    // Live sessions keep their rule and server. Throws ListenError when a new address cannot be
    // bound (nothing is changed then).
    void apply(const RulePlan& plan);
    // Stops accepting on every listener (graceful stop); sessions go on. With `hand_over`, another
    // process goes on accepting on the same sockets: they are only closed here, never shut down
    // (which would refuse the clients queued on them).
    void stop_accepting(bool hand_over = false);
    // Closes every session (with `cause`); their slots are released as their requests complete.
    // Every ending ringlb decides follows one rule: FINs when the session is quiescent (see
    // is_quiescent), a reset for each peer still mid-stream otherwise.
    void close_all_sessions(EndCause cause);
    // At once (a fatal error, the end of a stop's deadline): ends every session as
    // close_all_sessions() does and releases it now; descriptors with requests still pending go
    // to the engine, which closes them once the kernel is done with them. The destructor calls it
    // for whatever is left.
    void abort_all_sessions(EndCause cause);

    // The rule slot and server index for a server address text of a live rule; nullopt if none.
    std::optional<size_t> find_server(uint16_t rule, std::string_view address) const;
    // Disabled until `until` (nullopt: until enabled), draining, or enabled again.
    void set_server_admin(uint16_t rule, size_t server, admin::ServerAdminState state,
                          std::optional<Clock::time_point> until);
    void set_server_weight(uint16_t rule, size_t server, unsigned weight);
    // Active health checks' verdict for a server.
    void set_server_checked(uint16_t rule, size_t server, bool up);

    // Adds this worker's counters to `snapshot`: rules[i] there is rule slot `slots[i]`, with
    // servers in config order already named by the caller.
    void collect(admin::Snapshot& snapshot, const std::vector<uint16_t>& slots) const;
    // Sessions of `rule` (every rule when nullopt), at most `limit`.
    std::vector<SessionInfo> list_sessions(std::optional<uint16_t> rule, size_t limit) const;
    // Closes one session by its id (as list_sessions gives it); false when it is gone.
    bool kill_session(uint64_t id);
    // Closes every session in the given rule slots; returns how many.
    size_t close_sessions_in(const std::vector<uint16_t>& rules);

    static unsigned worker_of(uint64_t session_id) { return static_cast<unsigned>(session_id >> 56); }

    // A server connection freed on some worker for a client of this worker that waits in its
    // rule's queue (see core/server_queue.hpp): it connects now, or the grant goes on to the next
    // waiter when the client is gone.
    void on_queue_grant(const QueueGrant& grant);

private:
    struct ServerAdmin {
        admin::ServerAdminState state = admin::ServerAdminState::Enabled;
        Clock::time_point until = Clock::time_point::max();  // Disabled: enabled again at this time
    };
    struct ServerTraffic {
        uint64_t bytes_up = 0;
        uint64_t bytes_down = 0;
        uint64_t spliced_up = 0;  // of those, moved by splice
        uint64_t spliced_down = 0;
    };
    struct ServerTiming {
        admin::Histogram connect_time;
        admin::Histogram session_duration;
    };
    struct Rule {
        config::RuleConfig config;
        bool retired = false;
        std::vector<balance::Server> servers;
        std::vector<ServerAdmin> admin;      // per server
        std::vector<ServerTraffic> traffic;  // per server
        std::vector<ServerTiming> timing;    // per server, empty when server_histograms is off
        std::vector<ServerConnections::Handle> connections;  // per server, shared by all workers
        std::unique_ptr<balance::Balancer> balancer;
        health::Passive health;  // connect outcomes -> servers[i].down / slow_start_weight
        uint32_t active_sessions = 0;
        uint64_t total_sessions = 0;
        admin::RejectCounts rejects;
        admin::ConnectFailureCounts connect_failures;
        admin::Histogram connect_time;
        admin::Histogram session_duration;
        std::shared_ptr<ServerQueue> queue;  // null when the rule's queue is 0
        admin::Histogram queue_time;         // time spent queued, by clients that left the queue
        uint64_t queue_timeouts = 0;
        uint64_t queue_full = 0;             // clients closed because the queue was full
        std::vector<uint64_t> sni_sessions;  // per config.sni pattern: sessions whose server name it matched
    };
    struct Listener {
        net::UniqueFd fd;
        net::SocketAddress address;
        std::vector<uint16_t> rules;  // live rule slots, in file order
        bool accept_proxy = false;    // clients must begin with a PROXY header
        std::vector<net::ClientPattern> proxy_from{};  // the peers that may send it; empty = any
        bool closing = false;         // removed: waiting for its accept request to end
        bool accept_armed = false;
        bool paused = false;          // its accept was cancelled for want of descriptors
        bool reads_hello = false;     // a rule on it routes by sni or alpn: read the ClientHello first
        bool held_elsewhere = false;  // another process listens on the same socket: never shut it down
        bool shared = false;          // other workers accept on the same socket: one accept at a time
        bool handed_over = false;     // closing, and another process accepts on it from now on
    };

    std::unique_ptr<Rule> build_rule(const RulePlan::Slot& slot) const;
    static void count_sni_match(Rule& rule, const std::string& server_name);
    void rebuild_listener_rules();
    void bind_new_listeners(bool reuse_port);
    void close_listener(uint16_t index, bool hand_over = false);
    void arm_accept(uint16_t listener);
    void pause_accepting(uint16_t listener);
    bool make_room_below_ceiling(net::UniqueFd& fd);
    bool descriptor_room_made();
    bool busy_polling() const;
    void note_descriptor_shortage(bool at_accept, const char* what, const net::SocketAddress& where,
                                  const char* reason);

    void on_accept(uint16_t listener, const engine::Completion& completion);
    void admit(uint16_t listener, net::UniqueFd client);
    // Matches a rule and applies the limits for a client whose address is known; the session
    // is in `slot` already when it had to send a PROXY header first.
    // The first rule of the listener that does not deny the client and whose clients match it;
    // *denied tells whether some rule's deny list matched the client.
    // `hello`: the client's ClientHello, when one was read whole; rules with sni or alpn need it.
    std::optional<uint16_t> match_rule(const Listener& listener, const net::SocketAddress& client,
                                       bool* denied = nullptr, const net::tls::ClientHello* hello = nullptr) const;
    // Matches a rule and counts the client in every limit; nullopt (with the reason in *cause)
    // when no rule takes it or a limit refuses it.
    // `handshake`: the counts of the handshake that named the client, moved to it in the same step
    // (and gone whatever the outcome: reset here).
    std::optional<uint16_t> admit_to_rule(uint16_t listener, const net::SocketAddress& client, EndCause* cause,
                                          std::optional<SessionLimits::Handshake>* handshake = nullptr,
                                          const net::tls::ClientHello* hello = nullptr);
    void start_session(uint32_t slot, Session& session, uint16_t rule);
    void on_proxy_header(uint32_t slot, Session& session, const engine::Completion& completion);
    // sni/alpn: the client's first bytes, held until its ClientHello is whole (or cannot be).
    void on_client_hello(uint32_t slot, Session& session, const engine::Completion& completion);
    void examine_client_hello(uint32_t slot, Session& session);
    // Chooses the rule once the hello is read (`hello`), or is known to be unusable (null: `why`).
    void route_by_hello(uint32_t slot, Session& session, const net::tls::ClientHello* hello, const std::string& why);
    // accept_proxy: checks the peer against proxy_from and the handshake limits, then waits for
    // its header in a new session.
    void begin_handshake(uint16_t listener, net::UniqueFd client, const net::SocketAddress& peer);
    // What a handshake from `peer` counts in the limits; nullopt: the peer may not send a header.
    static std::optional<SessionLimits::Handshake> handshake_counts(const Listener& listener,
                                                                    const net::SocketAddress& peer);
    // `is_proxy_peer`: `address` is the TCP peer of a connection on an accept_proxy listener, refused
    // before its PROXY header named the client.
    void log_rejected(uint16_t listener, const net::SocketAddress& address, EndCause cause, int client_fd,
                      bool is_proxy_peer = false);

    void connect_next_server(uint32_t slot, Session& session);
    bool start_connect(uint32_t slot, Session& session);
    int bind_source(const Rule& rule, size_t server, int fd);
    void record_connect_failure(Session& session, int result, bool binding_source = false);
    static std::unordered_set<net::SocketAddress, net::SocketAddressHash> freebind_addresses(const RulePlan& plan);
    void refresh_servers(Rule& rule, const Session& session);
    std::optional<size_t> pick_and_take(Rule& rule, Session& session);
    void give_back_connection(Rule& rule, Session& session);
    // Starts the connect to rule.servers[server], whose connection the session holds; true when
    // its source could not be bound (counted as a failed connect: the caller tries the next).
    bool connect_to(uint32_t slot, Session& session, size_t server);
    // Queue rules (forwarder_queue.cpp). Whether the client waits in its rule's queue instead of
    // taking `pick` (waiters came first) or instead of being closed (every server full); when it
    // does, a connection taken for `pick` went on to the oldest waiter.
    bool wait_in_queue(uint32_t slot, Session& session, std::optional<size_t> pick);
    bool every_usable_server_full(const Rule& rule, const Session& session) const;
    // Whether rule.servers[index] may get new sessions (not disabled or draining, not down, weight > 0).
    bool takes_new_sessions(const Rule& rule, size_t index) const;
    // The client leaves the queue unserved (its timeout, its end); false when a grant is on its
    // way to it and it must wait for that instead.
    bool leave_queue(uint32_t slot, Session& session);
    void on_queue_timeout(uint32_t slot, Session& session);
    void on_connect(uint32_t slot, Session& session, int result);
    // The PROXY header (send_proxy) and the held ClientHello bytes, before any other client byte.
    void send_preamble(uint32_t slot, Session& session);
    void on_recv(uint32_t slot, Session& session, Side source, const engine::Completion& completion);
    void queue_received(Flow& flow, const engine::Completion& completion);
    void note_end_of_stream(Session& session, Side source);
    uint32_t receive_room(const Flow& flow) const;
    ByteRate byte_rate(const Session& session, Side source) const;
    uint32_t throttled_room(uint32_t slot, Session& session, Side source, uint32_t room);
    void on_send(uint32_t slot, Session& session, Side destination, int result);
    void consume_sent(Flow& flow, uint32_t sent);
    void on_shutdown(uint32_t slot, Session& session, Side destination);
    void pump(uint32_t slot, Session& session, Side source);
    // The splice path (forwarder_splice.cpp): a direction moves socket -> pipe -> socket.
    bool wants_splice(const Session& session, const Flow& flow) const;
    void note_receive_for_splice(const Session& session, Flow& flow, uint32_t received);
    void pump_spliced(uint32_t slot, Session& session, Side source);
    void warn_once_if_splice_refused();
    void on_splice_in(uint32_t slot, Session& session, Side source, const engine::Completion& completion);
    void on_splice_out(uint32_t slot, Session& session, Side destination, int result);
    void release_pipes(Session& session);

    // `abortive`: a peer failed (its reset or error is `cause`), so the ending is a cut whatever
    // else; otherwise ringlb ends the session itself and it is a cut unless quiescent.
    void close_session(uint32_t slot, Session& session, bool abortive, EndCause cause);
    void decide_ending(uint32_t slot, Session& session, bool abortive, EndCause cause);
    bool has_unread_input(const Session& session) const;
    void release_if_quiet(uint32_t slot, Session& session);
    void abandon_pending(uint32_t slot, Session& session);
    void hand_over_and_release(uint32_t slot, Session& session);
    std::chrono::milliseconds closing_grace(const Session& session) const;
    void release(uint32_t slot, Session& session);
    void log_connection(uint32_t slot, const Session& session);

    void fire_due_timers();
    void on_timer(TimerKey key);
    void arm_idle_timer(uint32_t slot, const Session& session);

    uint64_t token(uint32_t slot, Op op) const { return Token{slot, sessions_.generation(slot), op}.pack(); }
    uint64_t session_id(uint32_t slot) const {
        return (uint64_t{worker_} << 56) | (uint64_t{sessions_.generation(slot) & Token::kGenerationMask} << 32) | slot;
    }
    std::string describe(uint32_t slot, const Session& session) const;
    std::string server_name(const Session& session) const;

    engine::Engine& engine_;
    Logger& log_;
    config::GlobalConfig global_;
    bool reuse_port_;
    unsigned worker_;
    ListenerSource inherited_;
    std::vector<std::unique_ptr<Rule>> rules_;  // by slot; null once retired and empty
    std::vector<uint16_t> order_;               // live slots in config order
    bool accepting_ = false;
    std::vector<Listener> listeners_;
    Slab<Session> sessions_;
    SessionLimits& limits_;
    TimerQueue timers_;
    ForwarderStats stats_;
    // PROXY headers in progress, by slot: bytes received so far (accept_proxy) and the header
    // being sent (send_proxy). Only sessions in their first moments have an entry, so the session
    // slot itself stays small.
    std::unordered_map<uint32_t, std::string> proxy_in_;
    std::unordered_map<uint32_t, std::string> proxy_out_;
    // Sessions on accept_proxy listeners, by slot: the TCP peer (the client is the address its
    // header named) and, until the header is read, the handshake's counts in the limits.
    struct Proxied {
        net::SocketAddress peer;
        std::optional<SessionLimits::Handshake> handshake;
        bool header_read = false;
    };
    std::unordered_map<uint32_t, Proxied> proxied_;
    // Sessions on listeners with sni/alpn rules, by slot: the client's first bytes, held until a
    // rule is chosen and then sent to the server first, byte for byte.
    struct HeldHello {
        std::string bytes;
        size_t wanted = 0;  // parse again once this many bytes are held
        // Without accept_proxy: the handshake's counts in the limits until a rule takes the client.
        std::optional<SessionLimits::Handshake> handshake;
        std::string server_name;  // from the hello, for the connection log
    };
    std::unordered_map<uint32_t, HeldHello> hellos_;
    Logger* connection_log_ = nullptr;
    config::LogFormat connection_log_format_ = config::LogFormat::Text;
    Clock::time_point now_ = Clock::now();  // taken once per batch of completions
    int descriptor_ceiling_ = INT_MAX;
    Clock::time_point next_pipe_trim_{};
    std::chrono::milliseconds pipe_trim_interval_{std::chrono::seconds(2)};  // see fire_due_timers()
    bool descriptors_freed_ = false;  // see descriptor_room_made()
    bool splice_refusal_reported_ = false;  // see warn_once_if_splice_refused()
    uint64_t completions_handled_ = 0;
    Clock::time_point busy_until_{};  // see busy_polling()
    uint32_t source_port_cursor_ = 0;  // where the next connect starts in a source port range
    LogThrottle descriptor_shortages_{std::chrono::seconds(10)};
};

}  // namespace ringlb::core
