#include "ringlb/core/forwarder.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ringlb::core {

namespace {

constexpr auto kMaxPollWait = std::chrono::milliseconds(250);
// After an accept error (EMFILE and friends) accepting pauses this long instead of spinning.
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);

Op recv_op(Side source) { return source == Side::Client ? Op::RecvClient : Op::RecvServer; }
Op send_op(Side destination) { return destination == Side::Client ? Op::SendClient : Op::SendServer; }
Op shutdown_op(Side destination) { return destination == Side::Client ? Op::ShutdownClient : Op::ShutdownServer; }

std::string errno_text(int negative_errno) { return std::strerror(-negative_errno); }

template <typename Rep, typename Period>
long long as_ms(std::chrono::duration<Rep, Period> d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

Forwarder::Forwarder(const config::Config& config, engine::Engine& engine, Logger& log, SessionLimits& limits,
                     bool reuse_port)
    : engine_(engine), log_(log), global_(config.global), sessions_(config.global.max_sessions), limits_(limits) {
    build_rules(config);
    bind_listeners(reuse_port);
}

Forwarder::~Forwarder() {
    for (Listener& listener : listeners_)
        if (listener.fd) net::stop_listening(listener.fd.get());
}

void Forwarder::build_rules(const config::Config& config) {
    for (const config::RuleConfig& rule_config : config.rules) {
        Rule rule;
        rule.config = rule_config;
        for (const config::ServerConfig& server : rule_config.servers) {
            balance::Server entry{server.address, server.weight};
            entry.backup = server.backup;
            entry.max_connections = server.max_connections;
            rule.servers.push_back(entry);
        }
        rule.balancer = balance::make_balancer(rule_config.mode);
        rule.health = health::Passive(
            rule_config.id, {rule_config.down_time, rule_config.max_down_time, rule_config.slow_start}, &log_);
        const auto rule_index = static_cast<uint16_t>(rules_.size());
        for (const net::SocketAddress& address : rule_config.listen) {
            auto same = std::find_if(listeners_.begin(), listeners_.end(),
                                     [&](const Listener& l) { return l.address == address; });
            if (same == listeners_.end()) {
                listeners_.push_back(Listener{{}, address, {}});
                same = listeners_.end() - 1;
            }
            same->rules.push_back(rule_index);
        }
        rules_.push_back(std::move(rule));
    }
}

void Forwarder::bind_listeners(bool reuse_port) {
    for (Listener& listener : listeners_) {
        try {
            listener.fd = net::listen_tcp(listener.address, 4096, reuse_port);
        } catch (const net::SystemError& e) {
            throw ListenError(e.what());
        }
        log_.debug("listening on ", listener.address.to_string(), reuse_port ? " (SO_REUSEPORT)" : "");
    }
}

std::vector<std::string> Forwarder::listen_addresses() const {
    std::vector<std::string> addresses;
    for (const Listener& listener : listeners_) addresses.push_back(listener.address.to_string());
    return addresses;
}

void Forwarder::start_accepting() {
    for (size_t i = 0; i < listeners_.size(); ++i) arm_accept(static_cast<uint16_t>(i));
}

void Forwarder::arm_accept(uint16_t listener) {
    engine_.accept(listeners_[listener].fd.get(), Token{listener, 0, Op::Accept}.pack());
}

void Forwarder::run(const std::atomic<bool>& stop) {
    while (!stop.load(std::memory_order_relaxed)) run_once(kMaxPollWait);
}

void Forwarder::run_once(std::chrono::milliseconds max_wait) {
    auto wait = max_wait;
    if (auto deadline = timers_.next_deadline()) {
        const auto until = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
        wait = std::clamp(until, std::chrono::milliseconds(0), max_wait);
    }
    engine_.poll(wait, *this);
    fire_due_timers();
}

// ---- completions -------------------------------------------------------------------------

void Forwarder::on_completion(const engine::Completion& completion) {
    const Token token = Token::unpack(completion.user_data);
    if (token.op == Op::Accept) {
        on_accept(static_cast<uint16_t>(token.slot), completion);
        return;
    }
    if (!sessions_.is_current(token.slot, token.generation)) {
        // Cannot happen while slots are freed only when quiet; kept as a guard, never a leak.
        if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
        log_.error("completion for a released session slot ", token.slot, " dropped");
        return;
    }
    Session& session = sessions_[token.slot];
    switch (token.op) {
        case Op::Connect: on_connect(token.slot, session, completion.result); break;
        case Op::RecvClient: on_recv(token.slot, session, Side::Client, completion); break;
        case Op::RecvServer: on_recv(token.slot, session, Side::Server, completion); break;
        case Op::SendClient: on_send(token.slot, session, Side::Client, completion.result); break;
        case Op::SendServer: on_send(token.slot, session, Side::Server, completion.result); break;
        case Op::ShutdownClient: on_shutdown(token.slot, session, Side::Client); break;
        case Op::ShutdownServer: on_shutdown(token.slot, session, Side::Server); break;
        case Op::Accept: break;
    }
}

void Forwarder::on_accept(uint16_t listener, const engine::Completion& completion) {
    if (completion.result < 0) {
        ++stats_.accept_errors;
        log_.warn("accept on ", listeners_[listener].address.to_string(), ": ", errno_text(completion.result),
                  completion.more ? "" : "; accepting again shortly");
        if (!completion.more)
            timers_.add({Clock::now() + kAcceptRetryDelay, listener, 0, 0, TimerKind::AcceptRetry});
        return;
    }
    if (!completion.more) arm_accept(listener);
    admit(listener, net::UniqueFd(completion.result));
}

void Forwarder::admit(uint16_t listener, net::UniqueFd client) {
    ++stats_.accepted;
    const net::SocketAddress peer = net::peer_address(client.get());
    if (peer.family() == 0) {
        log_.debug("accepted connection dropped: it was reset before its address could be read");
        return;
    }
    bool denied = false;
    const auto rule = match_rule(listeners_[listener], peer, &denied);
    if (!rule) {
        ++(denied ? stats_.rejected_denied : stats_.rejected_no_rule);
        log_.debug("client ", peer.to_string(), " on ", listeners_[listener].address.to_string(),
                   denied ? " is denied and matches no other rule: closed" : " matches no rule: closed");
        return;
    }
    // Every limit is checked before anything is counted, so a refused client leaves no count
    // behind; an admitted one is released exactly once, in release() (or just below).
    const net::IpKey ip = net::IpKey::of(peer);
    const auto verdict = limits_.try_admit(ip, *rule, now_);
    const char* over = nullptr;
    switch (verdict) {
        case SessionLimits::Verdict::Admitted:
        case SessionLimits::Verdict::OverMaxSessions: break;
        case SessionLimits::Verdict::OverPerIp: ++stats_.rejected_per_ip; over = "global max_sessions_per_ip"; break;
        case SessionLimits::Verdict::OverMaxClients: ++stats_.rejected_max_clients; over = "max_clients"; break;
        case SessionLimits::Verdict::OverRulePerIp: ++stats_.rejected_rule_per_ip; over = "max_sessions_per_ip"; break;
        case SessionLimits::Verdict::OverRate: ++stats_.rejected_rate; over = "max_conn_rate_per_ip"; break;
    }
    if (over) {
        log_.debug("client ", peer.to_string(), " over ", over, " (rule ", rules_[*rule].config.id, "): closed");
        return;
    }
    const auto slot = verdict == SessionLimits::Verdict::Admitted ? sessions_.acquire() : std::nullopt;
    if (!slot) {
        if (verdict == SessionLimits::Verdict::Admitted) limits_.release(ip, *rule);
        ++stats_.rejected_max_sessions;
        log_.debug("client ", peer.to_string(), " over max_sessions: closed");
        return;
    }
    Session& session = sessions_[*slot];
    session.client_fd = std::move(client);
    session.client_address = peer;
    session.listener = listener;
    session.rule = *rule;
    session.started = session.last_activity = now_;
    ++rules_[*rule].active_sessions;
    connect_next_server(*slot, session);
}

std::optional<uint16_t> Forwarder::match_rule(const Listener& listener, const net::SocketAddress& client,
                                              bool* denied) const {
    const auto any_matches = [&](const std::vector<net::ClientPattern>& patterns) {
        return std::any_of(patterns.begin(), patterns.end(),
                           [&](const net::ClientPattern& pattern) { return pattern.matches(client); });
    };
    for (uint16_t index : listener.rules) {
        const config::RuleConfig& config = rules_[index].config;
        if (any_matches(config.deny)) {  // checked first: a later rule may still take the client
            if (denied) *denied = true;
            continue;
        }
        if (config.clients.empty() || any_matches(config.clients)) return index;
    }
    return std::nullopt;
}

void Forwarder::connect_next_server(uint32_t slot, Session& session) {
    Rule& rule = rules_[session.rule];
    // retries = N: at most N + 1 servers per client; 0: each server once.
    const bool may_retry = rule.config.retries == 0 || session.failed_servers.size() <= rule.config.retries;
    if (may_retry) rule.health.refresh(rule.servers, session.failed_servers, now_);
    const auto pick = may_retry ? rule.balancer->pick(rule.servers, session.client_address, session.failed_servers)
                                : std::nullopt;
    if (!pick) {
        ++stats_.no_server_left;
        log_.warn("rule ", rule.config.id, ": no server left for client ", session.client_address.to_string(),
                  " (", session.failed_servers.size(), " of ", rule.servers.size(), " failed): closed");
        close_session(slot, session, false);
        return;
    }
    session.server = static_cast<uint16_t>(*pick);
    const balance::Server& server = rule.servers[*pick];
    const int fd = net::new_stream_socket(server.address.family(), engine_.wants_nonblocking_sockets());
    if (fd < 0) {
        log_.error("socket for ", server.address.to_string(), ": ", errno_text(fd));
        close_session(slot, session, true);
        return;
    }
    session.server_fd.reset(fd);
    session.connect_pending = true;
    ++session.connect_attempt;
    session.connect_started = now_;
    engine_.connect(fd, server.address, token(slot, Op::Connect));
    timers_.add({now_ + rule.config.connect_timeout, slot, sessions_.generation(slot),
                 session.connect_attempt, TimerKind::Connect});
}

void Forwarder::on_connect(uint32_t slot, Session& session, int result) {
    session.connect_pending = false;
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
        return;
    }
    Rule& rule = rules_[session.rule];
    balance::Server& server = rule.servers[session.server];
    if (result < 0) {
        ++stats_.connect_failures;
        ++server.connect_failures;
        log_.warn("rule ", rule.config.id, ": connect to ", server.address.to_string(), " failed: ",
                  session.connect_timed_out ? "timed out after " + std::to_string(as_ms(rule.config.connect_timeout)) + " ms"
                                            : errno_text(result),
                  " (client ", session.client_address.to_string(), ")");
        rule.health.connect_failed(rule.servers, session.server, session.connect_started, now_,
                                   session.connect_timed_out ? std::string("connect timed out")
                                   : result == -ECONNREFUSED ? std::string("connect refused")
                                                             : "connect failed: " + errno_text(result));
        session.connect_timed_out = false;
        session.failed_servers.push_back(session.server);
        engine_.forget(session.server_fd.get());
        session.server_fd.reset();
        connect_next_server(slot, session);
        return;
    }
    session.connect_timed_out = false;
    rule.health.connect_succeeded(rule.servers, session.server, now_);
    session.state = Session::State::Established;
    session.established = true;
    ++server.active_sessions;
    ++server.total_sessions;
    rule.balancer->session_taken(session.server);
    rule.balancer->connect_time(session.server, std::chrono::duration_cast<std::chrono::microseconds>(
                                                    now_ - session.connect_started));
    session.last_activity = now_;
    log_.debug("session ", slot, ": ", describe(session), " established");
    arm_idle_timer(slot, session);
    pump(slot, session, Side::Client);
    pump(slot, session, Side::Server);
}

void Forwarder::on_recv(uint32_t slot, Session& session, Side source, const engine::Completion& completion) {
    Flow& flow = session.flow_from(source);
    flow.recv_pending = false;
    if (completion.result > 0 && session.state != Session::State::Closing) {
        flow.push({completion.buffer_id, 0, static_cast<uint16_t>(completion.result)});
        flow.queued_bytes += static_cast<uint32_t>(completion.result);
        session.last_activity = now_;
        pump(slot, session, source);
        return;
    }
    if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
    } else if (completion.result == 0) {
        flow.eof = true;
        pump(slot, session, source);
    } else {
        log_.debug("session ", slot, ": recv from ", to_string(source), ": ", errno_text(completion.result));
        close_session(slot, session, true);
    }
}

void Forwarder::on_send(uint32_t slot, Session& session, Side destination, int result) {
    const Side source = other(destination);
    Flow& flow = session.flow_from(source);
    flow.send_pending = false;
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
        return;
    }
    if (result <= 0) {  // a send of at least one byte never returns 0 on a live stream
        log_.debug("session ", slot, ": send to ", to_string(destination), ": ",
                   result < 0 ? errno_text(result) : std::string("no progress"));
        close_session(slot, session, true);
        return;
    }
    Flow::Chunk& chunk = flow.front();
    chunk.begin = static_cast<uint16_t>(chunk.begin + result);
    flow.queued_bytes -= static_cast<uint32_t>(result);
    flow.delivered_bytes += static_cast<uint64_t>(result);
    session.last_activity = now_;
    if (chunk.begin == chunk.end) {
        engine_.release_buffer(chunk.buffer);
        flow.pop();
    }
    pump(slot, session, source);
}

void Forwarder::on_shutdown(uint32_t slot, Session& session, Side destination) {
    Flow& flow = session.flow_from(other(destination));
    flow.shutdown_pending = false;
    flow.finished = true;  // even on error: nothing more can go that way
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
    } else if (session.upstream.finished && session.downstream.finished) {
        close_session(slot, session, false);
    }
}

// Keeps one flow moving: receive while there is room, send what is queued, and pass the
// source's FIN on once everything before it was delivered.
void Forwarder::pump(uint32_t slot, Session& session, Side source) {
    Flow& flow = session.flow_from(source);
    const Side destination = other(source);
    if (!flow.recv_pending && !flow.eof && !flow.full() && flow.queued_bytes < global_.buffer_size) {
        const uint32_t room = std::min(engine_.buffer_size(), global_.buffer_size - flow.queued_bytes);
        engine_.recv(session.fd(source).get(), room, token(slot, recv_op(source)));
        flow.recv_pending = true;
    }
    if (flow.send_pending || flow.shutdown_pending) return;
    if (flow.count > 0) {
        const Flow::Chunk& chunk = flow.front();
        engine_.send(session.fd(destination).get(), engine_.buffer_data(chunk.buffer) + chunk.begin,
                     static_cast<uint32_t>(chunk.end - chunk.begin), token(slot, send_op(destination)));
        flow.send_pending = true;
    } else if (flow.eof && !flow.finished) {
        engine_.shutdown_write(session.fd(destination).get(), token(slot, shutdown_op(destination)));
        flow.shutdown_pending = true;
    }
}

// ---- closing -----------------------------------------------------------------------------

// Stops the session: pending requests are cancelled and the slot is released once the last of
// them has completed, since the kernel may still be using the session's buffers until then.
void Forwarder::close_session(uint32_t slot, Session& session, bool abortive) {
    if (session.state == Session::State::Closing) return;
    session.state = Session::State::Closing;
    session.abortive = abortive;
    for (Side side : {Side::Client, Side::Server})
        if (session.has_pending(side)) engine_.cancel(session.fd(side).get());
    release_if_quiet(slot, session);
}

void Forwarder::release_if_quiet(uint32_t slot, Session& session) {
    if (!session.has_pending()) release(slot, session);
}

void Forwarder::release(uint32_t slot, Session& session) {
    for (Flow* flow : {&session.upstream, &session.downstream})
        for (; flow->count > 0; flow->pop()) engine_.release_buffer(flow->front().buffer);
    for (Side side : {Side::Client, Side::Server}) {
        net::UniqueFd& fd = session.fd(side);
        if (!fd) continue;
        if (session.abortive) net::set_abortive_close(fd.get());
        engine_.forget(fd.get());
        fd.reset();
    }
    Rule& rule = rules_[session.rule];
    if (session.established) {
        --rule.servers[session.server].active_sessions;
        rule.balancer->session_dropped(session.server);
    }
    --rule.active_sessions;
    limits_.release(net::IpKey::of(session.client_address), session.rule);
    ++stats_.sessions_ended;
    log_.debug("session ", slot, ": ", describe(session), " ended", session.abortive ? " by reset" : "",
               ", bytes up ", session.upstream.delivered_bytes, " down ", session.downstream.delivered_bytes,
               ", ", as_ms(Clock::now() - session.started), " ms");
    sessions_.release(slot);
}

// ---- timers ------------------------------------------------------------------------------

void Forwarder::fire_due_timers() {
    const auto now = Clock::now();
    while (auto entry = timers_.pop_due(now)) on_timer(*entry);
}

void Forwarder::on_timer(const TimerEntry& entry) {
    if (entry.kind == TimerKind::AcceptRetry) {
        arm_accept(static_cast<uint16_t>(entry.slot));
        return;
    }
    if (!sessions_.is_current(entry.slot, entry.generation)) return;
    Session& session = sessions_[entry.slot];
    if (entry.kind == TimerKind::Connect) {
        if (session.connect_pending && session.connect_attempt == entry.tag && !session.connect_timed_out &&
            session.state == Session::State::Connecting) {
            session.connect_timed_out = true;
            engine_.cancel(session.server_fd.get());  // completes the connect with -ECANCELED
        }
        return;
    }
    if (session.state != Session::State::Established) return;
    const auto deadline = session.last_activity + rules_[session.rule].config.timeout;
    if (deadline > Clock::now()) {
        timers_.add({deadline, entry.slot, entry.generation, 0, TimerKind::Idle});
        return;
    }
    ++stats_.idle_timeouts;
    log_.debug("session ", entry.slot, ": ", describe(session), " idle timeout");
    close_session(entry.slot, session, false);
}

void Forwarder::arm_idle_timer(uint32_t slot, const Session& session) {
    timers_.add({session.last_activity + rules_[session.rule].config.timeout, slot, sessions_.generation(slot), 0,
                 TimerKind::Idle});
}

std::string Forwarder::describe(const Session& session) const {
    const Rule& rule = rules_[session.rule];
    return session.client_address.to_string() + " -> " + listeners_[session.listener].address.to_string() +
           " -> " + rule.servers[session.server].address.to_string() + " (rule " + rule.config.id + ")";
}

}  // namespace ringlb::core
