#include "ringlb/admin/admin_server.hpp"

#include "ringlb/admin/token.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <variant>

#include "ringlb/net/unix_socket.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::admin {
namespace {

// Deep enough for bursts of connects (clients reconnecting together) not to overflow the accept
// queue, which would drop the SYN of an operator arriving at that moment.
constexpr int kListenBacklog = 1024;
constexpr auto kAcceptRetryDelay = std::chrono::seconds(1);
// How long the destructor waits for the engine to finish cancelled requests.
constexpr auto kShutdownGrace = std::chrono::seconds(2);
// One send request at most this large: a huge reply goes out in several pieces, each completion
// freeing the engine to serve other work in between.
constexpr size_t kMaxSendPiece = size_t{256} * 1024;
// Replies are appended to the last queued chunk up to this size, so that many small pipelined
// replies leave in one send instead of one each.
constexpr size_t kCoalesceLimit = size_t{64} * 1024;

std::string errno_text(int negative_errno) { return std::generic_category().message(-negative_errno); }

// A reply's last line must be `ok` or one `error:` line: a message with line breaks would let
// a client mistake its second half for a new reply, and one that echoes a client's control bytes
// (ESC sequences, NUL) could rewrite the operator's terminal or cut the line short.
std::string single_line(std::string_view text) { return text.empty() ? std::string("failed") : escape_control(text); }

std::string format_reply(const Reply& reply) {
    std::string text = reply.body;
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += reply.ok ? std::string("ok\n") : "error: " + single_line(reply.error) + "\n";
    return text;
}

bool is_blank(std::string_view line) {
    return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t'; });
}

// Commands that change the running forwarder: logged at info with the client, for an audit trail.
bool changes_state(CommandKind kind) {
    switch (kind) {
        case CommandKind::AddRule:
        case CommandKind::ModifyRule:
        case CommandKind::RemoveRule:
        case CommandKind::CleanSessions:
        case CommandKind::DisableServer:
        case CommandKind::EnableServer:
        case CommandKind::DrainServer:
        case CommandKind::SetWeight:
        case CommandKind::KillSession:
        case CommandKind::WriteConfig:
        case CommandKind::Reload: return true;
        default: return false;
    }
}

// The user_data value (56 bits): generation in the top 32, slot in the next 16, op in the low 8.
struct Token {
    uint32_t generation;
    uint16_t slot;
    uint8_t op;

    uint64_t pack() const { return (uint64_t{generation} << 24) | (uint64_t{slot} << 8) | op; }
    static Token unpack(uint64_t value) {
        return Token{static_cast<uint32_t>(value >> 24), static_cast<uint16_t>(value >> 8),
                     static_cast<uint8_t>(value)};
    }
};

// The listener's requests use a slot no connection can have.
constexpr uint16_t kListenerSlot = 0xFFFF;

// How often IPs whose failed tokens are old enough are forgotten.
constexpr auto kThrottleCleanupPeriod = std::chrono::seconds(1);

// Told (best effort) to clients closed by the limits on unauthenticated connections.
constexpr std::string_view kEvictedNotice = "error: closed to make room: too many unauthenticated admin connections\n";
constexpr std::string_view kAuthTimeoutNotice = "error: closed: not authenticated in time\n";

std::string milliseconds_text(std::chrono::milliseconds duration) { return std::to_string(duration.count()) + " ms"; }

// Best effort, never blocking: tell a human why the connection ends (the fd closes after).
void send_notice(int fd, std::string_view notice) {
    [[maybe_unused]] const ssize_t sent = ::send(fd, notice.data(), notice.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

// Whether a whole line already waits in the socket. Only peeked (MSG_PEEK): the engine's receive
// still gets every byte; nothing is pending on the fd yet, so this cannot race with it. It lets
// eviction tell a client that came to talk from one that trickles, before the first receive
// completes (a burst of connects in the same round must not push that client out).
bool has_whole_line_queued(int fd) {
    char peeked[1024];
    const ssize_t n = ::recv(fd, peeked, sizeof peeked, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 && std::string_view(peeked, static_cast<size_t>(n)).find('\n') != std::string_view::npos;
}

}  // namespace

// ---- construction and teardown -------------------------------------------------------------

AdminServer::AdminServer(engine::Dispatcher& dispatcher, const config::AdminConfig& config, Controller& controller,
                         Logger& log, std::string version_text, AdminLimits limits)
    : dispatcher_(dispatcher),
      engine_(dispatcher.engine()),
      controller_(controller),
      log_(log),
      version_text_(std::move(version_text)),
      limits_(limits),
      allow_(config.allow),
      token_(config.token),
      connections_(std::min<size_t>(2 * limits.max_connections, kListenerSlot)),
      throttle_(limits.auth_backoff),
      not_allowed_log_(log, LogLevel::Warn, "admin connections refused (not in [admin] allow)", limits.log_interval),
      full_log_(log, LogLevel::Warn, "admin connections refused (every slot in use)", limits.log_interval),
      evicted_log_(log, LogLevel::Warn, "unauthenticated admin connections closed to make room",
                   limits.log_interval),
      auth_timeout_log_(log, LogLevel::Warn, "admin connections closed for not authenticating in time",
                        limits.log_interval),
      auth_failure_log_(log, LogLevel::Warn, "failed admin authentication attempts", limits.log_interval) {
    if (!config.listen.enabled) throw std::invalid_argument("admin server: [admin] listen is not enabled");
    bind_listener(config.listen);
    // Registered only once nothing below can throw: the dispatcher would keep a dangling pointer.
    try {
        channel_ = dispatcher_.add(*this);
    } catch (...) {
        if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
        throw;
    }
    arm_accept();
    log_.debug("admin: listening on ", listen_text_, token_.empty() ? "" : " (token required)");
}

AdminServer::~AdminServer() {
    shutting_down_ = true;
    if (accept_armed_) {
        net::stop_listening(listener_.get());
        engine_.cancel(listener_.get());
    }
    for (Connection& connection : connections_)
        if (connection.open) begin_close(connection);
    wait_for_pending_requests();
    if (listener_) {
        engine_.forget(listener_.get());
        listener_.reset();
    }
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
    dispatcher_.remove(channel_);
}

// The engine may still write into a connection's buffers or report on its fd until each
// cancelled request has completed, and those completions carry this server's channel: drive the
// engine until they are in. Completions for other components are routed to them as usual.
void AdminServer::wait_for_pending_requests() {
    auto pending = [&] {
        return accept_armed_ || std::any_of(connections_.begin(), connections_.end(),
                                            [](const Connection& c) { return c.recv_pending || c.send_pending; });
    };
    const auto deadline = Clock::now() + kShutdownGrace;
    while (pending() && Clock::now() < deadline) engine_.poll(std::chrono::milliseconds(10), dispatcher_);
    if (!pending()) return;
    log_.error("admin: requests still pending ",
               std::chrono::duration_cast<std::chrono::seconds>(kShutdownGrace).count(),
               " s after cancelling them; closing their sockets anyway");
    for (Connection& connection : connections_) {
        if (!connection.fd) continue;
        engine_.forget(connection.fd.get());
        connection.fd.reset();
    }
}

void AdminServer::bind_listener(const config::ControlListen& listen) {
    if (listen.unix_path.empty()) {
        listener_ = net::listen_tcp(listen.address, kListenBacklog);
        listen_text_ = net::local_address(listener_.get()).to_string();  // the real port, also for port 0
    } else {
        listener_ = net::listen_unix(listen.unix_path, kListenBacklog);
        unix_path_ = listen.unix_path;
        listen_text_ = "unix:" + unix_path_;
    }
}

std::string AdminServer::listen_address() const { return listen_text_; }

size_t AdminServer::connection_count() const {
    return static_cast<size_t>(
        std::count_if(connections_.begin(), connections_.end(), [](const Connection& c) { return c.open; }));
}

// ---- user_data -----------------------------------------------------------------------------

engine::UserData AdminServer::tag(const Connection& connection, Op op) const {
    const Token token{connection.generation, static_cast<uint16_t>(slot_of(connection)), static_cast<uint8_t>(op)};
    return engine::Dispatcher::tag(channel_, token.pack());
}

uint32_t AdminServer::slot_of(const Connection& connection) const {
    return static_cast<uint32_t>(&connection - connections_.data());
}

void AdminServer::on_completion(const engine::Completion& completion) {
    const Token token = Token::unpack(engine::Dispatcher::value_of(completion.user_data));
    if (static_cast<Op>(token.op) == Op::Accept) {
        on_accept(completion);
        return;
    }
    Connection* connection = token.slot < connections_.size() ? &connections_[token.slot] : nullptr;
    if (connection == nullptr || !connection->open || connection->generation != token.generation) {
        // A slot is reused only once its requests have all completed, so this cannot happen;
        // if it ever does, at least give the buffer back.
        if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
        log_.error("admin: completion for a connection that is gone (slot ", token.slot, ")");
        return;
    }
    if (static_cast<Op>(token.op) == Op::Recv)
        on_recv(*connection, completion);
    else
        on_send(*connection, completion);
}

// ---- accepting -----------------------------------------------------------------------------

void AdminServer::arm_accept() {
    try {
        engine_.accept(listener_.get(),
                       engine::Dispatcher::tag(channel_, Token{0, kListenerSlot, uint8_t(Op::Accept)}.pack()));
        accept_armed_ = true;
        accept_retry_at_.reset();
    } catch (const std::exception& error) {
        // Never let this escape the constructor or a completion: retry from on_tick instead.
        log_.error("admin: cannot accept on ", listen_text_, ": ", error.what(), "; trying again shortly");
        accept_retry_at_ = Clock::now() + kAcceptRetryDelay;
    }
}

void AdminServer::on_accept(const engine::Completion& completion) {
    if (!completion.more) accept_armed_ = false;
    if (completion.result < 0) {
        if (shutting_down_) return;
        log_.warn("admin: accept on ", listen_text_, ": ", errno_text(completion.result));
        if (!completion.more) accept_retry_at_ = Clock::now() + kAcceptRetryDelay;
        return;
    }
    net::UniqueFd fd(completion.result);
    if (shutting_down_) return;  // closes it
    if (!completion.more) arm_accept();
    admit(std::move(fd));
}

void AdminServer::admit(net::UniqueFd fd) {
    const auto now = Clock::now();
    std::string peer = "unix";
    net::IpKey ip{};  // unix socket clients share one key
    if (unix_path_.empty()) {
        const net::SocketAddress address = net::peer_address(fd.get());
        if (address.family() == 0) return;  // reset before we could look: nothing to serve
        peer = address.to_string();
        ip = net::IpKey::of(address);
        if (!peer_allowed(address)) {
            ++counters_.refused_not_allowed;
            not_allowed_log_.event(now, "admin: refused connection from ", peer, ": not in [admin] allow");
            return;
        }
    }
    // Every newcomer starts unauthenticated when a token is set.
    const bool has_room =
        token_.empty() ? live_count() < limits_.max_connections : make_room_for_unauthenticated(now);
    Connection* connection = has_room ? free_slot() : nullptr;
    if (connection == nullptr) {
        ++counters_.refused_full;
        full_log_.event(now, "admin: refused connection from ", peer, ": no admin slot free (", live_count(),
                        " connections, ", unauthenticated_count(), " not authenticated yet)");
        send_notice(fd.get(), "error: too many admin connections\n");
        return;
    }
    connection->fd = std::move(fd);
    connection->peer = std::move(peer);
    connection->ip = ip;
    connection->open = true;
    connection->authenticated = token_.empty();
    connection->line_waiting = !connection->authenticated && has_whole_line_queued(connection->fd.get());
    connection->opened_at = now;
    connection->last_activity = now;
    log_.debug("admin: connection from ", connection->peer);
    arm_recv(*connection);
}

bool AdminServer::peer_allowed(const net::SocketAddress& peer) const {
    return std::any_of(allow_.begin(), allow_.end(), [&](const net::ClientPattern& p) { return p.matches(peer); });
}

AdminServer::Connection* AdminServer::free_slot() {
    const auto it = std::find_if(connections_.begin(), connections_.end(), [](const Connection& c) { return !c.open; });
    return it == connections_.end() ? nullptr : &*it;
}

// Connections that count against the limits: open and not on their way out.
size_t AdminServer::live_count() const {
    return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(),
                                             [](const Connection& c) { return c.open && !c.closing; }));
}

size_t AdminServer::unauthenticated_count() const {
    return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(), [](const Connection& c) {
        return c.open && !c.closing && !c.authenticated;
    }));
}

// A newcomer will be unauthenticated: when such connections already hold their share of the
// slots, or when every slot is taken, the oldest of them goes. Authenticated clients are never
// closed for a newcomer. False when none may go: the newcomer is refused.
bool AdminServer::make_room_for_unauthenticated(Clock::time_point now) {
    const size_t share = std::max<size_t>(limits_.max_unauthenticated, 1);
    if (unauthenticated_count() < share && live_count() < limits_.max_connections) return true;
    Connection* victim = eviction_candidate();
    if (victim == nullptr) return false;
    ++counters_.evicted_unauthenticated;
    evicted_log_.event(now, "admin: closed unauthenticated connection from ", victim->peer,
                       " to make room for a new one (", share, " unauthenticated at most)");
    close_with_notice(*victim, kEvictedNotice);
    return true;
}

// The oldest unauthenticated connection, preferring those without a whole line to be handled: a
// client whose line arrived with its connect (`ringlb ctl`), or whose `auth` line waits out the
// back-off (an operator on a guesser's address), goes last. Clients that trickle bytes never
// have a whole line, so however many there are and however fast they reconnect, they only push
// each other out.
AdminServer::Connection* AdminServer::eviction_candidate() {
    Connection* oldest_idle = nullptr;
    Connection* oldest_waiting = nullptr;
    for (Connection& connection : connections_) {
        if (!connection.open || connection.closing || connection.authenticated) continue;
        const bool line_pending = connection.line_waiting || connection.held_until;
        Connection*& oldest = line_pending ? oldest_waiting : oldest_idle;
        if (oldest == nullptr || connection.opened_at < oldest->opened_at) oldest = &connection;
    }
    return oldest_idle != nullptr ? oldest_idle : oldest_waiting;
}

void AdminServer::close_with_notice(Connection& connection, std::string_view notice) {
    // Only when nothing else is on its way out, so that the notice cannot land inside a reply.
    if (!connection.send_pending && connection.output.empty())
        send_notice(connection.fd.get(), notice);
    begin_close(connection);
}

// ---- receiving and handling lines ----------------------------------------------------------

void AdminServer::arm_recv(Connection& connection) {
    connection.recv_pending = true;
    engine_.recv(connection.fd.get(), engine_.buffer_size(), tag(connection, Op::Recv));
}

void AdminServer::on_recv(Connection& connection, const engine::Completion& completion) {
    connection.recv_pending = false;
    connection.line_waiting = false;  // from now on the input itself says what arrived
    if (completion.has_buffer) {
        // Copied out at once: an engine buffer is shared by every component and must not wait
        // on a slow admin client.
        const auto* bytes = reinterpret_cast<const char*>(engine_.buffer_data(completion.buffer_id));
        connection.input.append(bytes, static_cast<size_t>(std::max(completion.result, 0)));
        engine_.release_buffer(completion.buffer_id);
    }
    if (connection.closing) {
        release_if_quiet(connection);
        return;
    }
    if (completion.result < 0) {
        log_.debug("admin: ", connection.peer, ": receive failed: ", errno_text(completion.result));
        begin_close(connection);
        return;
    }
    connection.last_activity = Clock::now();
    // 0: the client finished sending (e.g. `echo show stats | nc`): answer what it sent, then close.
    if (completion.result == 0) connection.peer_finished = true;
    after_io(connection);
}

// Handles whatever complete lines the output limit allows, then decides what to do next.
void AdminServer::after_io(Connection& connection) {
    handle_input(connection);
    send_more(connection);
    if (connection.closing) return;
    if (connection.close_when_flushed && !connection.awaiting_reply && connection.unsent_bytes == 0 &&
        !connection.send_pending) {
        begin_close(connection);
        return;
    }
    if (wants_input(connection)) arm_recv(connection);
}

bool AdminServer::wants_input(const Connection& connection) const {
    return !connection.recv_pending && !connection.peer_finished && may_handle_more(connection);
}

bool AdminServer::may_handle_more(const Connection& connection) const {
    return !connection.closing && !connection.close_when_flushed && !connection.awaiting_reply &&
           !connection.held_until &&
           connection.unsent_bytes < limits_.max_unsent_bytes;
}

// Handles complete lines in order until the input runs out or the unsent output reaches its
// limit; lines held back then wait in `input` until sends make room again.
void AdminServer::handle_input(Connection& connection) {
    std::string& input = connection.input;
    size_t consumed = 0;
    bool input_exhausted = false;
    while (may_handle_more(connection)) {
        if (connection.skipping_long_line && !skip_rest_of_long_line(connection, consumed)) {
            input_exhausted = true;
            break;
        }
        const size_t newline = input.find('\n', consumed);
        if (newline == std::string::npos) {
            // One byte more than the limit may still be the '\r' of a "\r\n" that is on its way.
            if (input.size() - consumed > limits_.max_line_bytes + 1) {
                queue_output(connection, line_too_long_reply());
                connection.skipping_long_line = true;
                consumed = input.size();
            }
            input_exhausted = true;
            break;
        }
        if (held_by_backoff(connection)) break;  // the line stays in `input` until its wait is over
        std::string_view line(input.data() + consumed, newline - consumed);
        consumed = newline + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > limits_.max_line_bytes)
            queue_output(connection, line_too_long_reply());
        else
            handle_line(connection, line);
    }
    input.erase(0, consumed);
    if (input_exhausted && connection.peer_finished) finish_input(connection);
}

// Before an unauthenticated client's next line is looked at: true when it must wait first,
// because its IP sent wrong tokens recently (see AuthThrottle). on_tick lets it go when the wait
// is over. Every such line waits, not only `auth` ones, so that no reply tells a guesser early
// whether a held token was right.
bool AdminServer::held_by_backoff(Connection& connection) {
    if (connection.authenticated) return false;
    if (connection.backoff_served) {
        connection.backoff_served = false;
        return false;
    }
    const auto now = Clock::now();
    const std::chrono::milliseconds delay = throttle_.delay_for(connection.ip, now);
    if (delay.count() <= 0) return false;
    connection.held_until = now + delay;
    return true;
}

// Drops input up to the end of an over-long line. False while that end has not arrived yet.
bool AdminServer::skip_rest_of_long_line(Connection& connection, size_t& consumed) {
    const size_t newline = connection.input.find('\n', consumed);
    if (newline == std::string::npos) {
        consumed = connection.input.size();
        return false;
    }
    consumed = newline + 1;
    connection.skipping_long_line = false;
    return true;
}

// After the client's end of input: a last line without '\n' still counts, as with most
// line-based tools; then the connection closes once the replies are out.
void AdminServer::finish_input(Connection& connection) {
    if (!connection.input.empty() && !connection.skipping_long_line && held_by_backoff(connection)) return;
    std::string line = std::exchange(connection.input, {});
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (connection.skipping_long_line) {
        // the over-long line was already answered
    } else if (line.size() > limits_.max_line_bytes) {
        queue_output(connection, line_too_long_reply());
    } else {
        handle_line(connection, line);
    }
    connection.close_when_flushed = true;
}

std::string AdminServer::line_too_long_reply() const {
    return "error: line longer than " + std::to_string(limits_.max_line_bytes) + " bytes\n";
}

void AdminServer::handle_line(Connection& connection, std::string_view line) {
    if (is_blank(line)) return;  // an empty line (a stray Enter) is not a command
    const ParseResult parsed = parse_command(line);
    const Command* command = std::get_if<Command>(&parsed);
    const bool may_run =
        connection.authenticated ||
        (command != nullptr && (command->kind == CommandKind::Auth || command->kind == CommandKind::Quit));
    Reply reply;
    if (!may_run)
        reply = Reply::failure("authentication required");
    else if (command == nullptr)
        reply = Reply::failure(std::get<CommandError>(parsed).message);
    else if (command->kind == CommandKind::Reload)
        return start_reload(connection, line);
    else
        reply = execute(connection, *command, line);
    queue_output(connection, format_reply(reply));
}

// ---- commands ------------------------------------------------------------------------------

Reply AdminServer::execute(Connection& connection, const Command& command, std::string_view line) {
    switch (command.kind) {
        case CommandKind::Auth: return authenticate(connection, command.text);
        case CommandKind::Quit: connection.close_when_flushed = true; return Reply::success();
        case CommandKind::Help: return Reply::success(help_text());
        case CommandKind::Version: return Reply::success(version_text_);
        default: break;
    }
    if (changes_state(command.kind)) log_.info("admin: ", connection.peer, ": ", line);
    return call_controller(command);
}

Reply AdminServer::authenticate(Connection& connection, std::string_view token) {
    if (token_.empty() || tokens_equal(token, token_)) {
        connection.authenticated = true;
        return Reply::success();
    }
    const auto now = Clock::now();
    ++connection.auth_failures;
    ++counters_.auth_failures;
    throttle_.note_failure(connection.ip, now);
    auth_failure_log_.event(now, "admin: ", connection.peer, ": authentication failed (", connection.auth_failures,
                            " of ", limits_.max_auth_failures, " attempts on this connection)");
    if (connection.auth_failures >= limits_.max_auth_failures) connection.close_when_flushed = true;
    return Reply::failure("authentication failed");
}

Reply AdminServer::call_controller(const Command& command) {
    try {
        switch (command.kind) {
            case CommandKind::ShowRules: return controller_.show_rules();
            case CommandKind::ShowSessions: return controller_.show_sessions(command.rule);
            case CommandKind::ShowStats: return controller_.show_stats();
            case CommandKind::AddRule: return controller_.add_rule(command.text);
            case CommandKind::ModifyRule: return controller_.modify_rule(command.text);
            case CommandKind::RemoveRule: return controller_.remove_rule(command.rule);
            case CommandKind::CleanSessions: return controller_.clean_sessions(command.rule);
            case CommandKind::DisableServer:
                return controller_.set_server_state(command.rule, command.server, ServerAdminState::Disabled,
                                                    command.duration);
            case CommandKind::EnableServer:
                return controller_.set_server_state(command.rule, command.server, ServerAdminState::Enabled,
                                                    std::nullopt);
            case CommandKind::DrainServer:
                return controller_.set_server_state(command.rule, command.server, ServerAdminState::Draining,
                                                    std::nullopt);
            case CommandKind::SetWeight: return controller_.set_weight(command.rule, command.server, command.weight);
            case CommandKind::KillSession: return controller_.kill_session(command.session_id);
            case CommandKind::ShowConfig: return controller_.show_config();
            case CommandKind::WriteConfig: return controller_.write_config();
            default: return Reply::failure("internal error: command not dispatched");
        }
    } catch (const std::exception& error) {
        // A failing command must not take the control thread down with it.
        log_.error("admin: command failed: ", error.what());
        return Reply::failure(std::string("internal error: ") + error.what());
    }
}

// The reply comes once the file has been read and applied; the control thread serves other
// clients meanwhile, and this connection's later lines wait, so replies keep their order.
void AdminServer::start_reload(Connection& connection, std::string_view line) {
    log_.info("admin: ", connection.peer, ": ", line);
    connection.awaiting_reply = true;
    connection.starting_command = true;
    const uint32_t slot = slot_of(connection), generation = connection.generation;
    try {
        controller_.reload([this, slot, generation](const Reply& reply) { finish_deferred(slot, generation, reply); });
    } catch (const std::exception& error) {
        log_.error("admin: command failed: ", error.what());
        finish_deferred(slot, generation, Reply::failure(std::string("internal error: ") + error.what()));
    }
    connection.starting_command = false;
}

void AdminServer::finish_deferred(uint32_t slot, uint32_t generation, const Reply& reply) {
    Connection& connection = connections_[slot];
    // The client may have gone (and the slot been reused) meanwhile: the reply then has no reader.
    if (!connection.open || connection.closing || connection.generation != generation || !connection.awaiting_reply)
        return;
    connection.awaiting_reply = false;
    queue_output(connection, format_reply(reply));
    // Answered at once: the line handler that asked goes on and sends it.
    if (!connection.starting_command) after_io(connection);
}

// ---- sending -------------------------------------------------------------------------------

void AdminServer::queue_output(Connection& connection, std::string text) {
    if (text.empty()) return;
    connection.unsent_bytes += text.size();
    // The front chunk must not change while a send reads from it; any other chunk may grow.
    const bool back_is_in_flight = connection.send_pending && connection.output.size() == 1;
    if (!connection.output.empty() && !back_is_in_flight && connection.output.back().size() < kCoalesceLimit)
        connection.output.back() += text;
    else
        connection.output.push_back(std::move(text));
}

void AdminServer::send_more(Connection& connection) {
    if (connection.send_pending || connection.closing || connection.output.empty()) return;
    const std::string& front = connection.output.front();
    const size_t length = std::min(front.size() - connection.front_sent, kMaxSendPiece);
    connection.send_pending = true;
    engine_.send(connection.fd.get(), reinterpret_cast<const std::byte*>(front.data() + connection.front_sent),
                 static_cast<uint32_t>(length), tag(connection, Op::Send));
}

void AdminServer::on_send(Connection& connection, const engine::Completion& completion) {
    connection.send_pending = false;
    if (connection.closing) {
        release_if_quiet(connection);
        return;
    }
    if (completion.result <= 0) {
        // 0 bytes for a non-empty send cannot make progress: treat it as the peer being gone.
        log_.debug("admin: ", connection.peer, ": send failed: ",
                   completion.result < 0 ? errno_text(completion.result) : std::string("no progress"));
        begin_close(connection);
        return;
    }
    const auto sent = static_cast<size_t>(completion.result);
    connection.front_sent += sent;
    connection.unsent_bytes -= sent;
    connection.last_activity = Clock::now();
    if (connection.front_sent == connection.output.front().size()) {
        connection.output.pop_front();
        connection.front_sent = 0;
    }
    after_io(connection);  // may resume lines held back while the output was over its limit
}

// ---- closing -------------------------------------------------------------------------------

// The fd is closed only once no request is pending on it: the engine may still use the fd or
// the output buffer until each cancelled request has completed.
void AdminServer::begin_close(Connection& connection) {
    if (connection.closing) return;
    connection.closing = true;
    if (connection.recv_pending || connection.send_pending) engine_.cancel(connection.fd.get());
    release_if_quiet(connection);
}

void AdminServer::release_if_quiet(Connection& connection) {
    if (connection.recv_pending || connection.send_pending) return;
    if (connection.fd) {
        engine_.forget(connection.fd.get());
        connection.fd.reset();
    }
    log_.debug("admin: connection from ", connection.peer, " closed");
    const uint32_t next_generation = connection.generation + 1;
    connection = Connection{};
    connection.generation = next_generation;
}

// ---- timers --------------------------------------------------------------------------------

std::optional<engine::Component::Clock::time_point> AdminServer::on_tick(Clock::time_point now) {
    if (shutting_down_) return std::nullopt;
    if (accept_retry_at_ && *accept_retry_at_ <= now) arm_accept();
    std::optional<Clock::time_point> next = accept_retry_at_;
    const auto keep_earliest = [&next](std::optional<Clock::time_point> due) {
        if (due && (!next || *due < *next)) next = due;
    };
    for (Connection& connection : connections_) keep_earliest(check_deadlines(connection, now));
    if (throttle_.tracked_ips() > 0 && now >= next_throttle_cleanup_) {
        throttle_.forget_expired(now);
        next_throttle_cleanup_ = now + kThrottleCleanupPeriod;
    }
    keep_earliest(flush_throttled_logs(now));
    return next;
}

// Ends a held line's wait, and closes a connection past its authentication deadline or idle for
// too long. Returns when this connection next needs a look.
std::optional<engine::Component::Clock::time_point> AdminServer::check_deadlines(Connection& connection,
                                                                                  Clock::time_point now) {
    if (!connection.open || connection.closing) return std::nullopt;
    if (!connection.authenticated && connection.opened_at + limits_.auth_timeout <= now) {
        ++counters_.auth_timeouts;
        auth_timeout_log_.event(now, "admin: closed connection from ", connection.peer, ": not authenticated within ",
                                milliseconds_text(limits_.auth_timeout));
        close_with_notice(connection, kAuthTimeoutNotice);
        return std::nullopt;
    }
    if (connection.held_until && *connection.held_until <= now) {
        connection.held_until.reset();
        connection.backoff_served = true;
        after_io(connection);  // handles the held line (and maybe holds the next one)
        if (!connection.open || connection.closing) return std::nullopt;
    }
    const auto idle_deadline = connection.last_activity + limits_.idle_timeout;
    if (idle_deadline <= now) {
        log_.info("admin: closing idle connection from ", connection.peer);
        begin_close(connection);
        return std::nullopt;
    }
    Clock::time_point due = idle_deadline;
    if (!connection.authenticated) due = std::min(due, connection.opened_at + limits_.auth_timeout);
    if (connection.held_until) due = std::min(due, *connection.held_until);
    return due;
}

std::optional<engine::Component::Clock::time_point> AdminServer::flush_throttled_logs(Clock::time_point now) {
    std::optional<Clock::time_point> next;
    for (ThrottledLog* log : {&not_allowed_log_, &full_log_, &evicted_log_, &auth_timeout_log_, &auth_failure_log_})
        if (const auto due = log->flush(now); due && (!next || *due < *next)) next = due;
    return next;
}

}  // namespace ringlb::admin
