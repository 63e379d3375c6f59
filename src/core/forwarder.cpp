#include "ringlb/core/forwarder.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include "ringlb/net/proxy_protocol.hpp"

namespace ringlb::core {

namespace {

constexpr auto kMaxPollWait = std::chrono::milliseconds(250);
// After an accept error (EMFILE and friends) accepting pauses this long instead of spinning.
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
// A closed session waits at most this long for its cancelled requests (see abandon_pending()).
constexpr auto kDefaultClosingGrace = std::chrono::milliseconds(5000);
constexpr auto kMinClosingGrace = std::chrono::milliseconds(100);

std::string errno_text(int negative_errno) { return std::strerror(-negative_errno); }

bool out_of_descriptors(int negative_errno) { return negative_errno == -EMFILE || negative_errno == -ENFILE; }
// Why a descriptor below the limit is still too many: the rest is kept for the control thread.
constexpr const char* kReserveReached = "only the descriptors kept for the admin and metrics ports are left";

template <typename Rep, typename Period>
long long as_ms(std::chrono::duration<Rep, Period> d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

RulePlan Forwarder::initial_plan(const config::Config& config) {
    RulePlan plan;
    for (const config::RuleConfig& rule : config.rules) {
        plan.order.push_back(static_cast<uint16_t>(plan.slots.size()));
        plan.slots.push_back({std::make_shared<const config::RuleConfig>(rule), true, {}, {}});
    }
    return plan;
}

Forwarder::Forwarder(const config::GlobalConfig& global, const RulePlan& plan, engine::Engine& engine, Logger& log,
                     SessionLimits& limits, bool reuse_port, unsigned worker, ListenerSource inherited)
    : engine_(engine),
      log_(log),
      global_(global),
      reuse_port_(reuse_port),
      worker_(worker),
      inherited_(std::move(inherited)),
      sessions_(global.max_sessions),
      limits_(limits) {
    apply(plan);
}

Forwarder::Forwarder(const config::Config& config, engine::Engine& engine, Logger& log, SessionLimits& limits,
                     bool reuse_port)
    : Forwarder(config.global, initial_plan(config), engine, log, limits, reuse_port) {}

Forwarder::~Forwarder() {
    abort_all_sessions(EndCause::Shutdown);
    // A socket another process accepts on (the service manager's, or the new process's after an
    // upgrade) must go on listening there.
    for (Listener& listener : listeners_)
        if (listener.fd && !listener.held_elsewhere && !listener.handed_over) net::stop_listening(listener.fd.get());
}

std::unique_ptr<Forwarder::Rule> Forwarder::build_rule(const RulePlan::Slot& slot) const {
    const config::RuleConfig& rule_config = *slot.rule;
    const std::vector<bool>& checked_up = slot.checked_up;
    auto rule = std::make_unique<Rule>();
    rule->config = rule_config;
    std::vector<net::SocketAddress> addresses;
    addresses.reserve(rule_config.servers.size());
    for (const config::ServerConfig& server : rule_config.servers) addresses.push_back(server.address);
    rule->connections = limits_.server_connections().counts(rule_config.id, addresses);
    rule->servers.reserve(rule_config.servers.size());
    for (const config::ServerConfig& server : rule_config.servers) {
        balance::Server entry{server.address, server.weight};
        entry.backup = server.backup;
        entry.max_connections = server.max_connections;
        // With active checks a server is DOWN until they pass (or passed for the rule's last version).
        const size_t index = rule->servers.size();
        entry.check_down = rule_config.health.enabled && !(index < checked_up.size() && checked_up[index]);
        rule->servers.push_back(entry);
    }
    rule->admin.resize(rule->servers.size());
    rule->sni_sessions.resize(rule_config.sni.size());
    rule->traffic.resize(rule->servers.size());
    if (config::server_histograms_enabled(rule_config)) rule->timing.resize(rule->servers.size());
    if (rule_config.queue > 0) rule->queue = limits_.server_queues().queue(rule_config.id, rule_config.queue);
    rule->balancer = balance::make_balancer(rule_config.mode, rule_config.failback);
    rule->health = health::Passive(
        rule_config.id, {rule_config.down_time, rule_config.max_down_time, rule_config.slow_start}, &log_);
    for (size_t i = 0; i < slot.joining.size() && i < rule->servers.size(); ++i)
        if (slot.joining[i]) rule->health.start_slow_start(rule->servers, i, Clock::now());
    return rule;
}

// ---- rules and listeners -----------------------------------------------------------------

// The listen addresses some rule of the plan binds with freebind (one such rule is enough).
std::unordered_set<net::SocketAddress, net::SocketAddressHash> Forwarder::freebind_addresses(const RulePlan& plan) {
    std::unordered_set<net::SocketAddress, net::SocketAddressHash> addresses;
    for (uint16_t slot : plan.order)
        if (plan.slots.at(slot).rule->freebind)
            addresses.insert(plan.slots.at(slot).rule->listen.begin(), plan.slots.at(slot).rule->listen.end());
    return addresses;
}

void Forwarder::apply(const RulePlan& plan) {
    // The addresses the new plan listens on; those not open yet are bound first, so that a
    // bind error leaves everything as it was. Sets keep this linear: a plan may have thousands.
    std::unordered_set<net::SocketAddress, net::SocketAddressHash> open, wanted;
    for (const Listener& listener : listeners_)
        if (!listener.closing) open.insert(listener.address);
    std::vector<Listener> added;
    const auto freebind = freebind_addresses(plan);
    for (uint16_t slot : plan.order) {
        for (const net::SocketAddress& address : plan.slots.at(slot).rule->listen) {
            if (!wanted.insert(address).second || open.contains(address)) continue;
            if (std::vector<net::InheritedListener> sockets = inherited_ ? inherited_(address) : std::vector<net::InheritedListener>{};
                !sockets.empty()) {
                for (net::InheritedListener& socket : sockets)
                    added.push_back(Listener{.fd = std::move(socket.fd), .address = address, .rules = {},
                                             .held_elsewhere = socket.held_elsewhere,
                                             .shared = socket.shared_by_workers});
                log_.debug("listening on ", address, " (", sockets.size(), " inherited socket(s))");
                continue;
            }
            try {
                net::UniqueFd fd = net::listen_tcp(address, 4096, reuse_port_, freebind.contains(address));
                added.push_back(Listener{std::move(fd), address, {}});
            } catch (const net::SystemError& e) {
                throw ListenError(e.what());
            }
            log_.debug("listening on ", address, reuse_port_ ? " (SO_REUSEPORT)" : "");
        }
    }

    if (rules_.size() < plan.slots.size()) rules_.resize(plan.slots.size());
    for (size_t slot = 0; slot < plan.slots.size(); ++slot) {
        const RulePlan::Slot& entry = plan.slots[slot];
        std::unique_ptr<Rule>& rule = rules_[slot];
        if (entry.rule && entry.changed) {
            rule = build_rule(entry);
        } else if (!entry.rule && rule && !rule->retired) {
            rule->retired = true;  // live sessions finish on it; it goes with the last of them
            if (rule->active_sessions == 0) rule.reset();
        }
    }
    for (size_t i = 0; i < listeners_.size(); ++i) {
        Listener& listener = listeners_[i];
        if (!listener.closing && !wanted.contains(listener.address))
            close_listener(static_cast<uint16_t>(i));
    }
    const size_t first_added = listeners_.size();
    for (Listener& listener : added) listeners_.push_back(std::move(listener));
    order_ = plan.order;
    rebuild_listener_rules();
    if (accepting_)
        for (size_t i = first_added; i < listeners_.size(); ++i) arm_accept(static_cast<uint16_t>(i));
}

void Forwarder::rebuild_listener_rules() {
    std::unordered_map<net::SocketAddress, uint16_t, net::SocketAddressHash> open;  // address -> listener
    for (size_t i = 0; i < listeners_.size(); ++i) {
        Listener& listener = listeners_[i];
        listener.rules.clear();
        listener.accept_proxy = false;
        listener.proxy_from.clear();
        listener.reads_hello = false;
        if (!listener.closing) open.emplace(listener.address, static_cast<uint16_t>(i));
    }
    for (uint16_t slot : order_) {
        const config::RuleConfig& config = rules_[slot]->config;
        for (const net::SocketAddress& address : config.listen) {
            const auto found = open.find(address);
            if (found == open.end()) continue;
            Listener& listener = listeners_[found->second];
            if (!listener.rules.empty() && listener.rules.back() == slot) continue;
            listener.rules.push_back(slot);
            listener.accept_proxy = listener.accept_proxy || config.accept_proxy;
            if (config.accept_proxy) listener.proxy_from = config.proxy_from;  // every rule on it has the same
            listener.reads_hello = listener.reads_hello || !config.sni.empty() || !config.alpn.empty();
        }
    }
    // An address may have several inherited sockets: each serves as the first one does.
    for (Listener& listener : listeners_) {
        if (listener.closing) continue;
        const Listener& first = listeners_[open.at(listener.address)];
        if (&first == &listener) continue;
        listener.rules = first.rules;
        listener.accept_proxy = first.accept_proxy;
        listener.proxy_from = first.proxy_from;
        listener.reads_hello = first.reads_hello;
    }
}

// Takes a listener out of service. Its accept request ends with an error or a cancellation;
// the fd is closed once it has (or at once when none is armed).
void Forwarder::close_listener(uint16_t index, bool hand_over) {
    Listener& listener = listeners_[index];
    if (listener.closing) return;
    listener.closing = true;
    listener.handed_over = hand_over;
    if (!hand_over && !listener.held_elsewhere) net::stop_listening(listener.fd.get());
    log_.debug("stopped listening on ", listener.address);
    if (listener.accept_armed) {
        engine_.cancel(listener.fd.get());
    } else {
        engine_.forget(listener.fd.get());
        listener.fd.reset();
    }
}

void Forwarder::stop_accepting(bool hand_over) {
    for (size_t i = 0; i < listeners_.size(); ++i) close_listener(static_cast<uint16_t>(i), hand_over);
}

std::vector<std::string> Forwarder::listen_addresses() const {
    std::vector<std::string> addresses;
    std::unordered_set<net::SocketAddress, net::SocketAddressHash> seen;  // an address may have several sockets
    for (const Listener& listener : listeners_)
        if (!listener.closing && seen.insert(listener.address).second) addresses.push_back(listener.address.to_string());
    return addresses;
}

std::vector<std::pair<int, bool>> Forwarder::listening_descriptors() const {
    std::vector<std::pair<int, bool>> fds;
    for (const Listener& listener : listeners_)
        if (!listener.closing && listener.fd) fds.emplace_back(listener.fd.get(), listener.held_elsewhere);
    return fds;
}

void Forwarder::start_accepting() {
    accepting_ = true;
    for (size_t i = 0; i < listeners_.size(); ++i)
        if (!listeners_[i].closing) arm_accept(static_cast<uint16_t>(i));
}

void Forwarder::arm_accept(uint16_t listener) {
    listeners_[listener].accept_armed = true;
    listeners_[listener].paused = false;
    const uint64_t token = Token{listener, 0, Op::Accept}.pack();
    if (listeners_[listener].shared) engine_.accept_one(listeners_[listener].fd.get(), token);
    else engine_.accept(listeners_[listener].fd.get(), token);
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
    if (busy_polling()) wait = std::chrono::milliseconds(0);
    descriptors_freed_ = false;  // counts within one batch of completions only
    const uint64_t handled = completions_handled_;
    engine_.poll(wait, *this);
    fire_due_timers();  // sets now_
    if (completions_handled_ != handled) busy_until_ = now_ + global_.busy_poll;
}

// [global] busy_poll_us: for that long after a round that had work, the next rounds look for
// completions without sleeping, so the next bytes of a busy session do not wait for a CPU to wake.
// now_ is when the last round ended.
bool Forwarder::busy_polling() const { return now_ < busy_until_; }

// ---- completions -------------------------------------------------------------------------

void Forwarder::on_completion(const engine::Completion& completion) {
    ++completions_handled_;
    const Token token = Token::unpack(completion.user_data);
    if (token.op == Op::Accept) {
        on_accept(static_cast<uint16_t>(token.slot), completion);
        return;
    }
    if (!sessions_.is_current(token.slot, token.generation)) {
        // Cannot happen while slots are freed only when quiet; kept as a guard, never a leak.
        if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
        if (completion.has_pipe) engine_.release_pipe(completion.pipe_id, false);
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
        case Op::SpliceInClient: on_splice_in(token.slot, session, Side::Client, completion); break;
        case Op::SpliceInServer: on_splice_in(token.slot, session, Side::Server, completion); break;
        case Op::SpliceOutClient: on_splice_out(token.slot, session, Side::Client, completion.result); break;
        case Op::SpliceOutServer: on_splice_out(token.slot, session, Side::Server, completion.result); break;
        case Op::Accept: break;
    }
}

void Forwarder::on_accept(uint16_t listener_index, const engine::Completion& completion) {
    Listener& listener = listeners_[listener_index];
    if (!completion.more) listener.accept_armed = false;
    if (listener.closing) {
        // A removed listener: a client accepted in the last moment is closed with it, unless the
        // socket went on to another process (an upgrade): nobody else will see that client.
        net::UniqueFd late(completion.result >= 0 ? completion.result : -1);
        if (!completion.more && listener.fd) {
            engine_.forget(listener.fd.get());
            listener.fd.reset();
        }
        if (late && listener.handed_over) admit(listener_index, std::move(late));
        return;
    }
    if (completion.result < 0) {
        // Descriptors given up by free pipes (or by a client moved below the ceiling since)
        // leave room for the next client at once: nobody waits, nothing to report.
        const bool room_made = out_of_descriptors(completion.result) && descriptor_room_made();
        if (!completion.more) {
            if (room_made) arm_accept(listener_index);
            else timers_.arm({listener_index, TimerKind::AcceptRetry}, Clock::now() + kAcceptRetryDelay);
        }
        if (completion.result == -ECANCELED && listener.paused) return;  // see pause_accepting()
        ++stats_.accept_errors;
        if (room_made) return;
        if (out_of_descriptors(completion.result))
            note_descriptor_shortage(true, "accept on", listener.address, std::strerror(-completion.result));
        else
            log_.warn("accept on ", listener.address.to_string(), ": ", errno_text(completion.result),
                      completion.more ? "" : "; accepting again shortly");
        return;
    }
    net::UniqueFd client(completion.result);
    if (client.get() >= descriptor_ceiling_ && !make_room_below_ceiling(client)) {
        client.reset();
        note_descriptor_shortage(true, "accept on", listener.address, kReserveReached);
        pause_accepting(listener_index);
        if (!completion.more)
            timers_.arm({listener_index, TimerKind::AcceptRetry}, Clock::now() + kAcceptRetryDelay);
        return;
    }
    if (!completion.more) arm_accept(listener_index);
    admit(listener_index, std::move(client));
}

// Free pipes are kept for speed, sessions come first: a descriptor numbered at or above the data
// path's ceiling moves below it when closing the worker's free pipes (now, or for an earlier
// descriptor of the same batch of accepts) made room there.
bool Forwarder::make_room_below_ceiling(net::UniqueFd& fd) {
    engine_.trim_pipes(true);
    if (!net::renumber_below(fd, descriptor_ceiling_)) return false;
    descriptors_freed_ = true;  // the number it had
    return true;
}

// Whether closing free pipes now, or a descriptor moved below the ceiling earlier in this batch
// of completions, gave a descriptor back.
bool Forwarder::descriptor_room_made() {
    const bool made = engine_.trim_pipes(true) > 0 || descriptors_freed_;
    descriptors_freed_ = false;
    return made;
}

// The clients behind one dropped for want of descriptors wait in the listen queue for
// kAcceptRetryDelay (as after EMFILE) instead of being accepted and dropped one by one.
void Forwarder::pause_accepting(uint16_t index) {
    Listener& listener = listeners_[index];
    if (listener.paused || !listener.accept_armed) return;
    listener.paused = true;
    engine_.cancel(listener.fd.get());  // the accept ends with -ECANCELED; the retry timer re-arms it
}

// A client dropped (or, for a failed accept, left waiting) for want of a descriptor: counted, and
// logged at most once every 10 s (descriptor_shortages_) with the number since the last line.
void Forwarder::note_descriptor_shortage(bool at_accept, const char* what, const net::SocketAddress& where,
                                         const char* reason) {
    ++(at_accept ? stats_.dropped_no_fd_accept : stats_.dropped_no_fd_server);
    const uint64_t count = descriptor_shortages_.note(now_);
    if (count == 0) return;
    log_.warn("out of file descriptors: ", count, count == 1 ? " client" : " clients",
              " dropped or kept waiting since the last report (last: ", what, " ", where.to_string(), ": ", reason,
              "); raise the open file limit (ulimit -n, LimitNOFILE=)");
}

void Forwarder::admit(uint16_t listener, net::UniqueFd client) {
    ++stats_.accepted;
    const net::SocketAddress peer = net::peer_address(client.get());
    if (peer.family() == 0) {
        log_.debug("accepted connection dropped: it was reset before its address could be read");
        return;
    }
    if (listeners_[listener].accept_proxy || listeners_[listener].reads_hello) {
        begin_handshake(listener, std::move(client), peer);
        return;
    }
    EndCause cause = EndCause::Acl;
    const auto rule = admit_to_rule(listener, peer, &cause);
    if (!rule) {
        log_rejected(listener, peer, cause, client.get());
        return;
    }
    const auto slot = sessions_.acquire();
    if (!slot) {
        limits_.release(net::IpKey::of(peer), *rule);
        ++stats_.rejected_max_sessions;
        rules_[*rule]->rejects.count_limit(admin::RejectCounts::Limit::Global);
        log_.debug("client ", peer, " over max_sessions: closed");
        log_rejected(listener, peer, EndCause::Limit, client.get());
        return;
    }
    Session& session = sessions_[*slot];
    session.client_fd = std::move(client);
    session.client_address = peer;
    session.listener = listener;
    session.started = session.last_activity = now_;
    start_session(*slot, session, *rule);
}

// The real client is only known from its PROXY header, and the rule of a listener with sni or alpn
// rules only from the ClientHello: the connection waits for them in a session, counted as a
// handshake (its peer in the per-IP limits, unless a trusted proxy), and rules and limits for the
// client apply once they have arrived. No server connection is held meanwhile.
void Forwarder::begin_handshake(uint16_t listener_index, net::UniqueFd client, const net::SocketAddress& peer) {
    const Listener& listener = listeners_[listener_index];
    const auto counts = handshake_counts(listener, peer);
    if (!counts) {
        ++stats_.rejected_untrusted_proxy;
        log_.debug("peer ", peer, " on ", listener.address, " is not in proxy_from and may not send a PROXY header: closed");
        log_rejected(listener_index, peer, EndCause::UntrustedProxy, client.get(), true);
        return;
    }
    const char* over = nullptr;
    switch (limits_.try_begin_handshake(*counts)) {
        case SessionLimits::Verdict::Admitted: break;
        case SessionLimits::Verdict::OverMaxHandshakes: ++stats_.rejected_max_handshakes; over = "max_handshakes"; break;
        case SessionLimits::Verdict::OverPerIp: ++stats_.rejected_per_ip; over = "global max_sessions_per_ip"; break;
        case SessionLimits::Verdict::OverRulePerIp:
            ++stats_.rejected_rule_per_ip;
            rules_[*counts->rule]->rejects.count_limit(admin::RejectCounts::Limit::PerIp);
            over = "max_sessions_per_ip";
            break;
        case SessionLimits::Verdict::OverMaxSessions:
        case SessionLimits::Verdict::OverMaxClients:  // not checked for a handshake
        case SessionLimits::Verdict::OverRate: ++stats_.rejected_max_sessions; over = "max_sessions"; break;
    }
    std::optional<uint32_t> slot;
    if (!over) {
        slot = sessions_.acquire();
        if (!slot) {
            limits_.abandon_handshake(*counts);
            ++stats_.rejected_max_sessions;
            over = "max_sessions";
        }
    }
    if (!slot) {
        log_.debug("peer ", peer, " on ", listener.address, " over ", over, " while its ",
                   listener.accept_proxy ? "PROXY header" : "ClientHello", " is awaited: closed");
        log_rejected(listener_index, peer, EndCause::Limit, client.get(), listener.accept_proxy);
        return;
    }
    Session& session = sessions_[*slot];
    session.state = Session::State::Handshake;
    session.client_fd = std::move(client);
    session.client_address = peer;
    session.listener = listener_index;
    session.started = session.last_activity = now_;
    if (listener.accept_proxy) proxied_[*slot] = {peer, counts, false};
    if (listener.reads_hello) hellos_[*slot].handshake = listener.accept_proxy ? std::nullopt : counts;
    engine_.recv(session.client_fd.get(), engine_.buffer_size(), token(*slot, Op::RecvClient));
    session.upstream.recv_pending = true;
    std::chrono::milliseconds deadline{0};
    for (uint16_t rule : listener.rules) deadline = std::max(deadline, rules_[rule]->config.connect_timeout);
    timers_.arm({*slot, TimerKind::Connect}, now_ + deadline);
}

// A trusted proxy (in proxy_from) sends the connections of every client, so it is
// not held to the per-IP limits; any other peer is, and also to its rule's when the listener has
// only one (before the header, the rule is known only then).
std::optional<SessionLimits::Handshake> Forwarder::handshake_counts(const Listener& listener,
                                                                    const net::SocketAddress& peer) {
    SessionLimits::Handshake counts{net::IpKey::of(peer), true, std::nullopt};
    if (!listener.proxy_from.empty()) {
        const bool trusted = std::any_of(listener.proxy_from.begin(), listener.proxy_from.end(),
                                         [&](const net::ClientPattern& pattern) { return pattern.matches(peer); });
        if (!trusted) return std::nullopt;
        counts.per_ip = false;
        return counts;
    }
    if (listener.rules.size() == 1) counts.rule = listener.rules.front();
    return counts;
}

std::optional<uint16_t> Forwarder::admit_to_rule(uint16_t listener, const net::SocketAddress& client,
                                                 EndCause* cause, std::optional<SessionLimits::Handshake>* handshake,
                                                 const net::tls::ClientHello* hello) {
    bool denied = false;
    const auto rule = match_rule(listeners_[listener], client, &denied, hello);
    if (!rule) {
        ++(denied ? stats_.rejected_denied : stats_.rejected_no_rule);
        *cause = EndCause::Acl;
        log_.debug("client ", client, " on ", listeners_[listener].address,
                   denied ? " is denied and matches no other rule: closed" : " matches no rule: closed");
        return std::nullopt;
    }
    // Every limit is checked before anything is counted, so a refused client leaves no count
    // behind; an admitted one is released exactly once, in release().
    const net::IpKey key = net::IpKey::of(client);
    const auto verdict = handshake && *handshake ? limits_.finish_handshake(**handshake, key, *rule, now_)
                                                  : limits_.try_admit(key, *rule, now_);
    if (handshake) handshake->reset();  // its counts are gone, whatever the verdict
    using Limit = admin::RejectCounts::Limit;
    const char* over = nullptr;
    Limit limit = Limit::Global;
    switch (verdict) {
        case SessionLimits::Verdict::Admitted: return rule;
        case SessionLimits::Verdict::OverMaxSessions: ++stats_.rejected_max_sessions; over = "max_sessions"; break;
        case SessionLimits::Verdict::OverPerIp:
            ++stats_.rejected_per_ip;
            over = "global max_sessions_per_ip";
            limit = Limit::PerIp;
            break;
        case SessionLimits::Verdict::OverMaxClients:
            ++stats_.rejected_max_clients;
            over = "max_clients";
            limit = Limit::MaxClients;
            break;
        case SessionLimits::Verdict::OverRulePerIp:
            ++stats_.rejected_rule_per_ip;
            over = "max_sessions_per_ip";
            limit = Limit::PerIp;
            break;
        case SessionLimits::Verdict::OverRate:
            ++stats_.rejected_rate;
            over = "max_conn_rate_per_ip";
            limit = Limit::Rate;
            break;
        case SessionLimits::Verdict::OverMaxHandshakes: over = "max_handshakes"; break;  // not returned here
    }
    rules_[*rule]->rejects.count_limit(limit);
    *cause = EndCause::Limit;
    log_.debug("client ", client, " over ", over, " (rule ", rules_[*rule]->config.id, "): closed");
    return std::nullopt;
}

void Forwarder::start_session(uint32_t slot, Session& session, uint16_t rule) {
    session.rule = rule;
    session.admitted = true;
    session.state = Session::State::Connecting;
    ++rules_[rule]->active_sessions;
    ++rules_[rule]->total_sessions;
    connect_next_server(slot, session);
}

namespace {

// A rule without sni and alpn takes any client; one with them, a client whose ClientHello names a
// server matching one of its patterns and offers one of its protocols (each list that is set).
bool hello_matches(const config::RuleConfig& rule, const net::tls::ClientHello* hello) {
    if (rule.sni.empty() && rule.alpn.empty()) return true;
    if (!hello) return false;
    const auto& name = hello->server_name;
    const auto& offered = hello->alpn;
    const bool name_ok = rule.sni.empty() || std::any_of(rule.sni.begin(), rule.sni.end(), [&](const std::string& p) {
                             return net::tls::server_name_matches(p, name);
                         });
    const bool alpn_ok = rule.alpn.empty() || std::any_of(rule.alpn.begin(), rule.alpn.end(), [&](const std::string& p) {
                             return std::find(offered.begin(), offered.end(), p) != offered.end();
                         });
    return name_ok && alpn_ok;
}

}  // namespace

std::optional<uint16_t> Forwarder::match_rule(const Listener& listener, const net::SocketAddress& client,
                                              bool* denied, const net::tls::ClientHello* hello) const {
    const auto any_matches = [&](const std::vector<net::ClientPattern>& patterns) {
        return std::any_of(patterns.begin(), patterns.end(),
                           [&](const net::ClientPattern& pattern) { return pattern.matches(client); });
    };
    for (uint16_t index : listener.rules) {
        const config::RuleConfig& config = rules_[index]->config;
        if (any_matches(config.deny)) {  // checked first: a later rule may still take the client
            if (denied) *denied = true;
            continue;
        }
        if ((config.clients.empty() || any_matches(config.clients)) && hello_matches(config, hello)) return index;
    }
    return std::nullopt;
}

// The client's first bytes on an accept_proxy listener: its PROXY header, perhaps in pieces,
// perhaps followed by its first data, which stays queued for the server.
void Forwarder::on_proxy_header(uint32_t slot, Session& session, const engine::Completion& completion) {
    const auto fail = [&](const std::string& why) {
        if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
        ++stats_.rejected_proxy_header;
        log_.debug("peer ", session.client_address, " on ",
                   listeners_[session.listener].address, ": ", why, ": closed");
        // The header bytes read so far (proxy_in_, dropped on release) make the ending a cut.
        const bool failed = completion.result < 0;
        close_session(slot, session, failed, failed ? EndCause::ClientReset : EndCause::Error);
    };
    if (completion.result <= 0)
        return fail(completion.result == 0 ? "closed before its PROXY header"
                                           : "recv before PROXY header: " + errno_text(completion.result));
    const auto* bytes = reinterpret_cast<const char*>(engine_.buffer_data(completion.buffer_id));
    const auto received = static_cast<size_t>(completion.result);
    std::string& pending = proxy_in_[slot];
    const size_t before = pending.size();
    pending.append(bytes, received);
    const net::proxy::Parsed parsed = net::proxy::parse(std::as_bytes(std::span(pending.data(), pending.size())));
    if (parsed.status == net::proxy::Parsed::Status::Invalid) return fail("bad PROXY header: " + parsed.error);
    if (parsed.status == net::proxy::Parsed::Status::NeedMore) {
        engine_.release_buffer(completion.buffer_id);
        engine_.recv(session.client_fd.get(), engine_.buffer_size(), token(slot, Op::RecvClient));
        session.upstream.recv_pending = true;
        return;
    }
    // The header ends in this buffer (it was incomplete without it): what follows is data.
    const size_t header_here = parsed.consumed - before;
    const bool reads_hello = listeners_[session.listener].reads_hello;
    if (reads_hello) {  // the start of the ClientHello, if any
        // [], not at(): a reload may have given the listener sni rules since the header was awaited.
        hellos_[slot].bytes.assign(bytes + header_here, received - header_here);
        engine_.release_buffer(completion.buffer_id);
    } else if (header_here < received) {
        session.upstream.push({completion.buffer_id, static_cast<uint16_t>(header_here), static_cast<uint16_t>(received)});
        session.upstream.queued_bytes += static_cast<uint32_t>(received - header_here);
    } else {
        engine_.release_buffer(completion.buffer_id);
    }
    proxy_in_.erase(slot);
    Proxied& proxied = proxied_.at(slot);
    proxied.header_read = true;
    if (parsed.source) session.client_address = *parsed.source;
    log_.debug("session ", slot, ": peer ", proxied.peer, " on ", listeners_[session.listener].address,
               " sent a PROXY header for client ", session.client_address);
    if (reads_hello) {
        examine_client_hello(slot, session);
        return;
    }
    session.state = Session::State::Connecting;
    EndCause cause = EndCause::Acl;
    const auto rule = admit_to_rule(session.listener, session.client_address, &cause, &proxied.handshake);
    if (!rule) {
        close_session(slot, session, false, cause);
        return;
    }
    start_session(slot, session, *rule);
}

// The client's first bytes on a listener with sni or alpn rules (after its PROXY header, if any).
void Forwarder::on_client_hello(uint32_t slot, Session& session, const engine::Completion& completion) {
    if (completion.result <= 0) {
        if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
        ++stats_.rejected_client_hello;
        log_.debug("client ", session.client_address, " on ", listeners_[session.listener].address,
                   completion.result == 0 ? ": closed before its ClientHello ended"
                                          : ": recv before ClientHello: " + errno_text(completion.result),
                   ": closed");
        const bool failed = completion.result < 0;
        close_session(slot, session, failed, failed ? EndCause::ClientReset : EndCause::ClientHello);
        return;
    }
    const auto* bytes = reinterpret_cast<const char*>(engine_.buffer_data(completion.buffer_id));
    hellos_[slot].bytes.append(bytes, static_cast<size_t>(completion.result));
    engine_.release_buffer(completion.buffer_id);
    examine_client_hello(slot, session);
}

// Parses the held bytes again only once the parser's `wanted` is there, so that a client sending
// one byte at a time costs a parse per record, not per byte.
void Forwarder::examine_client_hello(uint32_t slot, Session& session) {
    HeldHello& held = hellos_[slot];
    if (held.bytes.size() >= held.wanted) {
        const net::tls::ClientHello hello =
            net::tls::parse_client_hello(std::as_bytes(std::span(held.bytes.data(), held.bytes.size())));
        if (hello.status == net::tls::ClientHello::Status::Done) return route_by_hello(slot, session, &hello, "");
        if (hello.status == net::tls::ClientHello::Status::Invalid)
            return route_by_hello(slot, session, nullptr, "no usable ClientHello: " + hello.error);
        held.wanted = hello.wanted;
    }
    if (session.upstream.recv_pending) return;  // a multishot receive still armed delivers the rest
    const auto room = static_cast<uint32_t>(net::tls::kMaxClientHelloBytes - held.bytes.size());
    engine_.recv(session.client_fd.get(), std::min(room, engine_.buffer_size()), token(slot, Op::RecvClient));
    session.upstream.recv_pending = true;
}

// Rules are tried in order with what the hello says; without one, only rules without sni and
// alpn can take the client. The held bytes go to the server first (send_preamble()).
void Forwarder::route_by_hello(uint32_t slot, Session& session, const net::tls::ClientHello* hello,
                               const std::string& why) {
    HeldHello& held = hellos_[slot];
    if (hello) held.server_name = hello->server_name;
    if (!why.empty())
        log_.debug("client ", session.client_address, " on ", listeners_[session.listener].address, ": ", why);
    const auto proxied = proxied_.find(slot);
    auto& handshake = proxied != proxied_.end() ? proxied->second.handshake : held.handshake;
    session.state = Session::State::Connecting;
    EndCause cause = EndCause::Acl;
    const uint64_t no_rule_before = stats_.rejected_no_rule;
    const auto rule = admit_to_rule(session.listener, session.client_address, &cause, &handshake, hello);
    if (!rule) {
        if (!hello && stats_.rejected_no_rule != no_rule_before) {  // only a rule with sni or alpn could take it
            --stats_.rejected_no_rule;
            ++stats_.rejected_client_hello;
            cause = EndCause::ClientHello;
        }
        close_session(slot, session, false, cause);
        return;
    }
    if (hello) count_sni_match(*rules_[*rule], held.server_name);
    start_session(slot, session, *rule);
}

// The pattern of the rule's sni that the client's name matched, for the metrics.
void Forwarder::count_sni_match(Rule& rule, const std::string& name) {
    for (size_t i = 0; i < rule.config.sni.size(); ++i) {
        if (!net::tls::server_name_matches(rule.config.sni[i], name)) continue;
        ++rule.sni_sessions[i];
        return;
    }
}

void Forwarder::log_rejected(uint16_t listener, const net::SocketAddress& address, EndCause cause, int client_fd,
                             bool is_proxy_peer) {
    if (!connection_log_) return;
    ConnectionRecord record;
    record.end_time = std::chrono::system_clock::now();
    // A proxy peer refused before its header: the client it would have named is unknown.
    (is_proxy_peer ? record.peer : record.client) = address.to_string();
    record.listener = listeners_[listener].address.to_string();
    record.cause = cause;
    // Refused before a byte is read: closing sends a FIN, or a reset when the client's bytes wait unread.
    record.client_end = net::unread_bytes(client_fd) > 0 ? PeerEnd::Reset : PeerEnd::Fin;
    connection_log_->write_raw_line(format_record(record, connection_log_format_));
}

// ---- servers -----------------------------------------------------------------------------

// Brings the operator's state up to date before a pick: a timed disable that has run out ends.
void Forwarder::refresh_servers(Rule& rule, const Session& session) {
    for (size_t i = 0; i < rule.servers.size(); ++i) {
        ServerAdmin& admin = rule.admin[i];
        if (admin.state == admin::ServerAdminState::Disabled && now_ >= admin.until) {
            admin.state = admin::ServerAdminState::Enabled;
            rule.servers[i].disabled = false;
            log_.info("server ", rule.config.id, "/", rule.servers[i].address.to_string(), " enabled again");
        }
        rule.servers[i].connections = rule.connections[i]->load(std::memory_order_relaxed);
    }
    rule.health.refresh(rule.servers, session.failed_servers, now_);
}

// The balancer's pick with one of the server's connections taken for the session. When another
// worker took the server's last free connection since the counts were read, the server is
// noted full and the balancer asked again (each time one server fewer: this ends).
std::optional<size_t> Forwarder::pick_and_take(Rule& rule, Session& session) {
    for (;;) {
        const auto pick = rule.balancer->pick(rule.servers, session.client_address, session.failed_servers);
        if (!pick) return std::nullopt;
        balance::Server& server = rule.servers[*pick];
        if (ServerConnections::try_take(*rule.connections[*pick], server.max_connections)) {
            ++server.connections;
            session.connection_taken = true;
            return pick;
        }
        server.connections = server.max_connections;
    }
}

// A client waiting in the rule's queue gets the connection before anyone else can take it,
// unless the server takes no new sessions (drained, disabled, down, weight 0): that connection is
// nobody's to hand on.
void Forwarder::give_back_connection(Rule& rule, Session& session) {
    if (!session.connection_taken) return;
    session.connection_taken = false;
    const balance::Server& server = rule.servers[session.server];
    const ServerConnections::Handle& count = rule.connections[session.server];
    if (takes_new_sessions(rule, session.server))
        limits_.server_queues().offer_or_give_back(rule.queue, server.address, count);
    else
        ServerConnections::give_back(*count);
}

// A server whose source address cannot be bound counts as a failed connect, and the next one is
// tried here: in a loop, not a recursion, however many servers the rule has.
void Forwarder::connect_next_server(uint32_t slot, Session& session) {
    while (start_connect(slot, session)) {
    }
}

// Picks a server and starts connecting to it; true when its source could not be bound.
bool Forwarder::start_connect(uint32_t slot, Session& session) {
    Rule& rule = *rules_[session.rule];
    // retries = N: at most N + 1 servers per client; 0: each server once.
    const bool may_retry = rule.config.retries == 0 || session.failed_servers.size() <= rule.config.retries;
    if (may_retry) refresh_servers(rule, session);
    const auto pick = may_retry ? pick_and_take(rule, session) : std::nullopt;
    if (may_retry && wait_in_queue(slot, session, pick)) return false;
    if (!pick) {
        ++stats_.no_server_left;
        ++rule.rejects.no_server;
        log_.warn("rule ", rule.config.id, ": no server left for client ", session.client_address.to_string(),
                  " (", session.failed_servers.size(), " of ", rule.servers.size(), " failed or unavailable",
                  rule.queue && may_retry && every_usable_server_full(rule, session) ? ", the rest full, the queue full" : "",
                  "): closed");
        close_session(slot, session, false, EndCause::ConnectFailed);
        return false;
    }
    return connect_to(slot, session, *pick);
}

bool Forwarder::connect_to(uint32_t slot, Session& session, size_t server_index) {
    Rule& rule = *rules_[session.rule];
    session.server = static_cast<uint16_t>(server_index);
    const balance::Server& server = rule.servers[server_index];
    int fd = net::new_stream_socket(server.address.family(), engine_.wants_nonblocking_sockets());
    if (out_of_descriptors(fd) && engine_.trim_pipes(true) > 0)
        fd = net::new_stream_socket(server.address.family(), engine_.wants_nonblocking_sockets());
    bool reserve_reached = false;
    if (fd >= descriptor_ceiling_) {
        net::UniqueFd high(fd);
        reserve_reached = !make_room_below_ceiling(high);
        fd = reserve_reached ? -EMFILE : high.release();
    }
    if (fd < 0) {
        give_back_connection(rule, session);
        if (out_of_descriptors(fd)) {
            note_descriptor_shortage(false, "socket for", server.address,
                                     reserve_reached ? kReserveReached : std::strerror(-fd));
        } else {
            log_.error("socket for ", server.address.to_string(), ": ", errno_text(fd));
        }
        close_session(slot, session, false, EndCause::Error);
        return false;
    }
    session.server_fd.reset(fd);
    session.connect_pending = true;
    session.connect_started = now_;
    if (const int bound = bind_source(rule, server_index, fd); bound < 0) {
        session.connect_pending = false;
        record_connect_failure(session, bound, true);
        return true;
    }
    engine_.connect(fd, server.address, token(slot, Op::Connect));
    timers_.arm({slot, TimerKind::Connect}, now_ + rule.config.connect_timeout);  // moves the previous attempt's
    return false;
}

// `source`: the server's own, else the rule's. With a port range each connect starts one port
// further on (each worker elsewhere in it), so ports in use are seldom tried twice.
int Forwarder::bind_source(const Rule& rule, size_t server, int fd) {
    const config::ServerConfig& entry = rule.config.servers[server];
    const config::SourceConfig& source = entry.source.enabled() ? entry.source : rule.config.source;
    if (!source.enabled()) return 0;
    const uint32_t start = worker_ * 7919u + source_port_cursor_++;
    return net::bind_source(fd, source.address, source.first_port, source.last_port, start);
}

// A connect (or binding its source) failed: counted, logged and told to passive health; the
// server is not tried again for this client.
void Forwarder::record_connect_failure(Session& session, int result, bool binding_source) {
    Rule& rule = *rules_[session.rule];
    balance::Server& server = rule.servers[session.server];
    ++stats_.connect_failures;
    ++server.connect_failures;
    const bool timed_out = session.connect_timed_out;
    ++(timed_out ? rule.connect_failures.timeout
       : result == -ECONNREFUSED ? rule.connect_failures.refused
                                 : rule.connect_failures.other);
    log_.warn("rule ", rule.config.id, binding_source ? ": binding the source address for " : ": ", "connect to ",
              server_name(session), " failed: ",
              timed_out ? "timed out after " + std::to_string(as_ms(rule.config.connect_timeout)) + " ms"
                        : errno_text(result),
              " (client ", session.client_address.to_string(), ")");
    rule.health.connect_failed(rule.servers, session.server, session.connect_started, now_,
                               timed_out                  ? std::string("connect timed out")
                               : result == -ECONNREFUSED ? std::string("connect refused")
                                                         : "connect failed: " + errno_text(result));
    session.connect_timed_out = false;
    session.failed_servers.push_back(session.server);
    engine_.forget(session.server_fd.get());
    session.server_fd.reset();
    give_back_connection(rule, session);
}

void Forwarder::on_connect(uint32_t slot, Session& session, int result) {
    session.connect_pending = false;
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
        return;
    }
    if (result < 0) {
        record_connect_failure(session, result);
        connect_next_server(slot, session);
        return;
    }
    Rule& rule = *rules_[session.rule];
    balance::Server& server = rule.servers[session.server];
    session.connect_timed_out = false;
    rule.health.connect_succeeded(rule.servers, session.server, now_);
    session.state = Session::State::Established;
    session.established = true;
    ++server.active_sessions;
    ++server.total_sessions;
    const auto connect_time = std::chrono::duration_cast<std::chrono::microseconds>(now_ - session.connect_started);
    session.connect_us = static_cast<uint32_t>(std::min<int64_t>(connect_time.count(), UINT32_MAX));
    rule.connect_time.add(static_cast<uint64_t>(connect_time.count()));
    if (session.server < rule.timing.size())
        rule.timing[session.server].connect_time.add(static_cast<uint64_t>(connect_time.count()));
    rule.balancer->session_taken(session.server);
    rule.balancer->connect_time(session.server, connect_time);
    session.last_activity = now_;
    if (log_.enabled(LogLevel::Debug)) log_.debug("session ", slot, ": ", describe(slot, session), " established");
    timers_.cancel({slot, TimerKind::Connect});
    arm_idle_timer(slot, session);
    const auto held = hellos_.find(slot);
    if (rule.config.send_proxy != config::ProxyProtocol::Off || (held != hellos_.end() && !held->second.bytes.empty()))
        send_preamble(slot, session);
    pump(slot, session, Side::Client);
    pump(slot, session, Side::Server);
}

// send_proxy: the header goes out before any client byte, then the ClientHello bytes held while
// the rule was chosen; the client's flow waits behind them.
void Forwarder::send_preamble(uint32_t slot, Session& session) {
    const config::ProxyProtocol send_proxy = rules_[session.rule]->config.send_proxy;
    const auto version = send_proxy == config::ProxyProtocol::V1 ? net::proxy::Version::V1 : net::proxy::Version::V2;
    std::string& header = proxy_out_[slot];
    if (send_proxy != config::ProxyProtocol::Off)
        header = net::proxy::encode(version, session.client_address, net::local_address(session.client_fd.get()));
    if (const auto held = hellos_.find(slot); held != hellos_.end()) {
        session.preamble_client_bytes = static_cast<uint16_t>(held->second.bytes.size());
        header += held->second.bytes;
        held->second.bytes = std::string();  // sent from here on; its memory goes back
    }
    session.sending_proxy_header = true;
    session.upstream.send_pending = true;
    engine_.send(session.server_fd.get(), reinterpret_cast<const std::byte*>(header.data()),
                 static_cast<uint32_t>(header.size()), token(slot, Op::SendServer));
}

// ---- data --------------------------------------------------------------------------------

void Forwarder::on_recv(uint32_t slot, Session& session, Side source, const engine::Completion& completion) {
    Flow& flow = session.flow_from(source);
    if (!completion.more) flow.recv_pending = false;  // a multishot receive stays armed until then
    if (session.state == Session::State::Handshake) {
        const auto proxied = proxied_.find(slot);
        if (proxied != proxied_.end() && !proxied->second.header_read) on_proxy_header(slot, session, completion);
        else on_client_hello(slot, session, completion);
        return;
    }
    if (completion.result > 0 && session.state != Session::State::Closing) {
        if (flow.full() && flow.back().end + static_cast<uint32_t>(completion.result) > engine_.buffer_size()) {
            // The room given to each receive makes this impossible; never lose bytes silently.
            engine_.release_buffer(completion.buffer_id);
            log_.error("session ", slot, ": a receive from the ", to_string(source),
                       " found no room in its queue: session reset");
            close_session(slot, session, true, EndCause::Error);
            return;
        }
        queue_received(flow, completion);
        note_receive_for_splice(session, flow, static_cast<uint32_t>(completion.result));
        if (const ByteRate rate = byte_rate(session, source); rate.limited())
            flow.bucket.take(static_cast<uint64_t>(completion.result));
        const auto held = static_cast<uint32_t>(session.upstream.count + session.downstream.count);
        stats_.peak_session_buffers = std::max(stats_.peak_session_buffers, held);
        session.last_activity = now_;
        // Known now, the FIN leaves with these bytes rather than in a segment of its own.
        if (completion.end_follows) note_end_of_stream(session, source);
        // Bytes a receive still armed from the handshake delivers before the server is connected
        // wait in the queue: on_connect() sends them.
        if (session.state == Session::State::Connecting) return;
        pump(slot, session, source);
        return;
    }
    if (completion.has_buffer) engine_.release_buffer(completion.buffer_id);
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
    } else if (completion.result == 0) {
        note_end_of_stream(session, source);
        if (session.state != Session::State::Connecting) pump(slot, session, source);
    } else {
        log_.debug("session ", slot, ": recv from ", to_string(source), ": ", errno_text(completion.result));
        close_session(slot, session, true, reset_of(source));
    }
}

void Forwarder::note_end_of_stream(Session& session, Side source) {
    session.flow_from(source).eof = true;
    note_cause(session, source == Side::Client ? EndCause::ClientFin : EndCause::ServerFin);
}

// Bytes that fit behind the last queued chunk are copied there and their buffer goes back at
// once: a peer sending tiny segments then holds buffers by the bytes it has queued, not by the
// number of its segments. Bulk arrivals fill whole buffers and are never copied. Appending is safe
// while a send of that chunk is in flight: the send covers only the bytes queued when it began.
void Forwarder::queue_received(Flow& flow, const engine::Completion& completion) {
    const auto size = static_cast<uint32_t>(completion.result);
    flow.queued_bytes += size;
    if (flow.count > 0) {
        Flow::Chunk& tail = flow.back();
        if (tail.end + size <= engine_.buffer_size()) {
            std::memcpy(engine_.buffer_data(tail.buffer) + tail.end, engine_.buffer_data(completion.buffer_id), size);
            tail.end = static_cast<uint16_t>(tail.end + size);
            engine_.release_buffer(completion.buffer_id);
            return;
        }
    }
    flow.push({completion.buffer_id, 0, static_cast<uint16_t>(size)});
}

void Forwarder::on_send(uint32_t slot, Session& session, Side destination, int result) {
    const Side source = other(destination);
    Flow& flow = session.flow_from(source);
    flow.send_pending = false;
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
        return;
    }
    // io_uring: a gathered send run by a kernel worker thread on a socket the splice path made
    // non-blocking can come back EAGAIN with nothing sent; it is asked for again.
    const bool again = result == -EAGAIN;
    if (result <= 0 && !again) {  // a send of at least one byte never returns 0 on a live stream
        log_.debug("session ", slot, ": send to ", to_string(destination), ": ",
                   result < 0 ? errno_text(result) : std::string("no progress"));
        close_session(slot, session, true, reset_of(destination));
        return;
    }
    if (again && !session.sending_proxy_header) {
        pump(slot, session, source);
        return;
    }
    if (session.sending_proxy_header) {
        std::string& header = proxy_out_[slot];
        header.erase(0, static_cast<size_t>(std::max(result, 0)));
        if (!header.empty()) {
            flow.send_pending = true;
            engine_.send(session.server_fd.get(), reinterpret_cast<const std::byte*>(header.data()),
                         static_cast<uint32_t>(header.size()), token(slot, Op::SendServer));
            return;
        }
        proxy_out_.erase(slot);
        session.sending_proxy_header = false;
        if (session.preamble_client_bytes > 0) {  // the held ClientHello counts as client bytes
            flow.delivered_bytes += session.preamble_client_bytes;
            rules_[session.rule]->traffic[session.server].bytes_up += session.preamble_client_bytes;
            session.preamble_client_bytes = 0;
        }
        pump(slot, session, source);
        return;
    }
    consume_sent(flow, static_cast<uint32_t>(result));
    ServerTraffic& traffic = rules_[session.rule]->traffic[session.server];
    (source == Side::Client ? traffic.bytes_up : traffic.bytes_down) += static_cast<uint64_t>(result);
    session.last_activity = now_;
    pump(slot, session, source);
}

// A send may have carried several chunks, the last perhaps in part: each chunk fully sent gives
// its buffer back.
void Forwarder::consume_sent(Flow& flow, uint32_t sent) {
    flow.queued_bytes -= sent;
    flow.delivered_bytes += sent;
    while (sent > 0) {
        Flow::Chunk& chunk = flow.front();
        const auto taken = static_cast<uint16_t>(std::min<uint32_t>(sent, chunk.end - chunk.begin));
        chunk.begin = static_cast<uint16_t>(chunk.begin + taken);
        sent -= taken;
        if (chunk.begin == chunk.end) {
            engine_.release_buffer(chunk.buffer);
            flow.pop();
        }
    }
}

void Forwarder::on_shutdown(uint32_t slot, Session& session, Side destination) {
    Flow& flow = session.flow_from(other(destination));
    flow.shutdown_pending = false;
    flow.finished = true;  // even on error: nothing more can go that way
    if (session.state == Session::State::Closing) {
        release_if_quiet(slot, session);
    } else if (session.upstream.finished && session.downstream.finished) {
        close_session(slot, session, false, EndCause::ClientFin);  // the first FIN is already noted
    }
}

// Keeps one flow moving: receive while there is room, send what is queued, and pass the
// source's FIN on once everything before it was delivered.
void Forwarder::pump(uint32_t slot, Session& session, Side source) {
    Flow& flow = session.flow_from(source);
    const bool to_splice = !flow.splicing && wants_splice(session, flow);
    if (to_splice && !flow.recv_pending && !flow.send_pending && !flow.shutdown_pending && flow.count == 0)
        flow.splicing = true;
    if (flow.splicing) {
        pump_spliced(slot, session, source);
        return;
    }
    const Side destination = other(source);
    if (!flow.recv_pending && !flow.eof && !to_splice) {
        if (const uint32_t room = throttled_room(slot, session, source, receive_room(flow)); room > 0) {
            engine_.recv(session.fd(source).get(), room, token(slot, recv_op(source)));
            flow.recv_pending = true;
        }
    }
    if (flow.send_pending || flow.shutdown_pending) return;
    if (flow.count > 0) {
        // Everything queued leaves in one send: fewer requests per byte when the reader is fast.
        static_assert(Flow::kMaxChunks <= engine::kMaxSendParts);
        static_assert(engine::kMaxReceiveBuffer <= UINT16_MAX, "a chunk's offsets are 16 bits");
        std::array<engine::SendPart, Flow::kMaxChunks> parts;
        for (uint8_t i = 0; i < flow.count; ++i) {
            const Flow::Chunk& chunk = flow.at(i);
            parts[i] = {engine_.buffer_data(chunk.buffer) + chunk.begin, static_cast<uint32_t>(chunk.end - chunk.begin)};
        }
        engine_.send_parts(session.fd(destination).get(), {parts.data(), flow.count}, token(slot, send_op(destination)),
                           flow.eof);
        flow.send_pending = true;
    } else if (flow.eof && !flow.finished) {
        engine_.shutdown_write(session.fd(destination).get(), token(slot, shutdown_op(destination)));
        flow.shutdown_pending = true;
    }
}

// The room a flow's next receive gets. At most what buffer_size leaves; at most what its free
// chunk slots can take whatever the segment sizes (a receive of more than one buffer may
// deliver one buffer past its room, and a chunk that cannot take an arrival whole starts a new
// one, so two consecutive chunks always hold more than a buffer); and while the process's buffers
// are under pressure, one buffer for a flow that holds none and nothing for one that holds some.
uint32_t Forwarder::receive_room(const Flow& flow) const {
    if (flow.queued_bytes >= global_.buffer_size || flow.full()) return 0;
    const uint32_t buffer = engine_.buffer_size();
    const uint32_t left = global_.buffer_size - flow.queued_bytes;
    if (engine_.buffers_under_pressure()) return flow.count > 0 ? 0 : std::min(left, buffer);
    const uint32_t pairs = (Flow::kMaxChunks - flow.count - 1u) / 2u;
    const uint32_t slots_allow = pairs >= 2 ? pairs * buffer : buffer;
    return std::min(left, slots_allow);
}

ByteRate Forwarder::byte_rate(const Session& session, Side source) const {
    const config::RuleConfig& config = rules_[session.rule]->config;
    return {source == Side::Client ? config.upload_rate : config.download_rate};
}

// upload_rate / download_rate: a limited flow receives at most the tokens it has, and nothing
// until it has a chunk's worth (or its whole room, if less): the throttle timer pumps it again
// then. Not asking the engine is what holds the peer back, through TCP's own flow control.
uint32_t Forwarder::throttled_room(uint32_t slot, Session& session, Side source, uint32_t room) {
    const ByteRate rate = byte_rate(session, source);
    if (room == 0 || !rate.limited()) return room;
    TokenBucket& bucket = session.flow_from(source).bucket;
    const int64_t tokens = bucket.available(rate, now_);
    const uint32_t wanted = std::min(room, rate.min_chunk());
    if (tokens >= static_cast<int64_t>(wanted)) return static_cast<uint32_t>(std::min<int64_t>(room, tokens));
    // One timer serves both directions: it fires at the earlier of their deadlines.
    const TimerKey key{slot, TimerKind::Throttle};
    const auto ready = bucket.ready_at(rate, wanted, now_);
    if (const auto armed = timers_.deadline(key); !armed || ready < *armed) timers_.arm(key, ready);
    return 0;
}

// ---- closing -----------------------------------------------------------------------------

// Stops the session: pending requests are cancelled and the slot is released once the last of
// them has completed, since the kernel may still be using the session's buffers until then.
void Forwarder::close_session(uint32_t slot, Session& session, bool abortive, EndCause cause) {
    if (session.state == Session::State::Closing) return;
    note_cause(session, cause);
    decide_ending(slot, session, abortive, cause);
    session.state = Session::State::Closing;
    for (Side side : {Side::Client, Side::Server})
        if (session.has_pending(side)) engine_.cancel(session.fd(side).get());
    release_if_quiet(slot, session);
    if (session.state == Session::State::Closing && session.has_pending())  // not released yet
        timers_.arm({slot, TimerKind::Closing}, now_ + closing_grace(session));
}

// How long a closed session may wait for its cancelled requests: as long as a connect may take.
std::chrono::milliseconds Forwarder::closing_grace(const Session& session) const {
    if (session.admitted && rules_[session.rule]) return std::max(rules_[session.rule]->config.connect_timeout, kMinClosingGrace);
    return kDefaultClosingGrace;
}

// Every cancelled request completes in a working engine; this is the bound if one does not. The
// engine takes the descriptors that still have requests (and the buffers a send may still read),
// closes each once the kernel holds none of its requests, and the slot and every count the session
// held are released now.
void Forwarder::abandon_pending(uint32_t slot, Session& session) {
    ++stats_.sessions_abandoned;
    log_.warn("session ", slot, ": ", describe(slot, session), ": requests still pending ",
              as_ms(closing_grace(session)), " ms after it was closed; handed to the engine");
    hand_over_and_release(slot, session);
}

// The descriptors with requests still pending go to the engine, which closes each once the kernel
// holds none of its requests: with the ending decided when the session was closed (a cut was
// armed then; a peer to be told FIN has no send in flight, so no byte is lost by one).
void Forwarder::hand_over_and_release(uint32_t slot, Session& session) {
    for (Side side : {Side::Client, Side::Server}) {
        if (!session.has_pending(side) || !session.fd(side)) continue;
        Flow& toward = session.flow_from(other(side));
        std::vector<uint16_t> held;
        if (toward.send_pending)
            for (; toward.count > 0; toward.pop()) held.push_back(toward.front().buffer);
        engine_.abandon(std::move(session.fd(side)), held);
    }
    for (Flow* flow : {&session.upstream, &session.downstream})
        flow->recv_pending = flow->send_pending = flow->shutdown_pending = false;
    session.connect_pending = false;
    release(slot, session);
}

// Decides what each peer is told, once, when the session starts closing. A cut is armed on the
// sockets at once (SO_LINGER 0), so that however they are closed from here on, by release() or
// by the process going away, the peers still mid-stream get a reset and never a clean end.
void Forwarder::decide_ending(uint32_t slot, Session& session, bool abortive, EndCause cause) {
    std::optional<Side> failed;
    if (abortive && cause == EndCause::ClientReset) failed = Side::Client;
    if (abortive && cause == EndCause::ServerReset) failed = Side::Server;
    // In order of cost: the syscalls only for a session that looks quiescent from here. The
    // bytes of an unfinished PROXY header were read and can never be delivered.
    const auto held = hellos_.find(slot);
    const bool holds_hello = held != hellos_.end() && !held->second.bytes.empty();
    const bool cut = abortive || !is_quiescent(session) || proxy_in_.contains(slot) || holds_hello ||
                     has_unread_input(session);
    session.abortive = false;
    for (Side side : {Side::Client, Side::Server}) {
        const PeerEnd end = peer_end(session, side, cut, failed);
        session.end_of(side) = end;
        // A server connect still in flight has no peer yet, but must not complete into a clean end.
        const bool arm = end == PeerEnd::Reset || end == PeerEnd::Peer || (cut && end == PeerEnd::None);
        if (!arm || !session.fd(side)) continue;
        net::set_abortive_close(session.fd(side).get());
        session.abortive = true;
    }
}

// Bytes a peer sent that ringlb has not read yet: ending the session now would drop them.
bool Forwarder::has_unread_input(const Session& session) const {
    if (session.client_fd && net::unread_bytes(session.client_fd.get()) > 0) return true;
    return session.established && session.server_fd && net::unread_bytes(session.server_fd.get()) > 0;
}

void Forwarder::release_if_quiet(uint32_t slot, Session& session) {
    if (!session.has_pending()) release(slot, session);
}

void Forwarder::release(uint32_t slot, Session& session) {
    for (Flow* flow : {&session.upstream, &session.downstream})
        for (; flow->count > 0; flow->pop()) engine_.release_buffer(flow->front().buffer);
    release_pipes(session);
    for (Side side : {Side::Client, Side::Server}) {
        net::UniqueFd& fd = session.fd(side);
        if (!fd) continue;
        engine_.forget(fd.get());
        fd.reset();
    }
    proxy_in_.erase(slot);
    proxy_out_.erase(slot);
    timers_.cancel({slot, TimerKind::Connect});
    timers_.cancel({slot, TimerKind::Idle});
    timers_.cancel({slot, TimerKind::Closing});
    timers_.cancel({slot, TimerKind::Throttle});
    const auto proxied = proxied_.find(slot);
    if (proxied != proxied_.end() && proxied->second.handshake) {  // closed before its header was taken
        limits_.abandon_handshake(*proxied->second.handshake);
        proxied->second.handshake.reset();
    }
    const auto hello = hellos_.find(slot);
    if (hello != hellos_.end() && hello->second.handshake) {  // closed before a rule took it
        limits_.abandon_handshake(*hello->second.handshake);
        hello->second.handshake.reset();
    }
    if (session.admitted) {
        Rule& rule = *rules_[session.rule];
        if (session.queued) leave_queue(slot, session);  // a grant already sent passes on when it arrives
        give_back_connection(rule, session);
        if (session.established) {
            --rule.servers[session.server].active_sessions;
            rule.balancer->session_dropped(session.server);
        }
        --rule.active_sessions;
        const auto duration = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(now_ - session.started).count());
        rule.session_duration.add(duration);
        if (session.established && session.server < rule.timing.size())
            rule.timing[session.server].session_duration.add(duration);
        limits_.release(net::IpKey::of(session.client_address), session.rule);
    }
    ++stats_.sessions_ended;
    if (log_.enabled(LogLevel::Debug))  // describe() builds text: not for every session unless asked
        log_.debug("session ", slot, ": ", describe(slot, session), " ended", session.abortive ? " by reset" : "",
                   ", bytes up ", session.upstream.delivered_bytes, " down ", session.downstream.delivered_bytes,
                   ", ", as_ms(Clock::now() - session.started), " ms");
    log_connection(slot, session);
    if (proxied != proxied_.end()) proxied_.erase(proxied);
    if (hello != hellos_.end()) hellos_.erase(hello);
    if (session.admitted && rules_[session.rule]->retired && rules_[session.rule]->active_sessions == 0)
        rules_[session.rule].reset();  // the last session of a removed rule
    sessions_.release(slot);
}

void Forwarder::log_connection(uint32_t slot, const Session& session) {
    if (!connection_log_) return;
    ConnectionRecord record;
    record.end_time = std::chrono::system_clock::now();
    record.client = session.client_address.to_string();
    if (const auto proxied = proxied_.find(slot); proxied != proxied_.end()) {
        record.peer = proxied->second.peer.to_string();
        if (!proxied->second.header_read) record.client.clear();  // no header: the client is unknown
    }
    record.listener = listeners_[session.listener].address.to_string();
    if (const auto hello = hellos_.find(slot); hello != hellos_.end()) record.sni = hello->second.server_name;
    if (session.admitted) {
        const Rule& rule = *rules_[session.rule];
        record.rule = rule.config.id;
        if (session.established) {
            record.server = rule.servers[session.server].address.to_string();
            record.connect_time = std::chrono::microseconds(session.connect_us);
        }
    }
    record.bytes_up = session.upstream.delivered_bytes;
    record.bytes_down = session.downstream.delivered_bytes;
    record.duration = std::chrono::duration_cast<std::chrono::microseconds>(now_ - session.started);
    record.cause = session.end_cause == 0 ? EndCause::Error : static_cast<EndCause>(session.end_cause);
    record.client_end = session.client_end;
    record.server_end = session.server_end;
    connection_log_->write_raw_line(format_record(record, connection_log_format_));
}

void Forwarder::close_all_sessions(EndCause cause) {
    sessions_.for_each_in_use([&](uint32_t slot, Session& session) { close_session(slot, session, false, cause); });
}

void Forwarder::abort_all_sessions(EndCause cause) {
    sessions_.for_each_in_use([&](uint32_t slot, Session& session) {
        if (session.state != Session::State::Closing) {
            note_cause(session, cause);
            decide_ending(slot, session, false, cause);
            session.state = Session::State::Closing;
        }
        hand_over_and_release(slot, session);
    });
}

// ---- timers ------------------------------------------------------------------------------

void Forwarder::fire_due_timers() {
    const auto now = Clock::now();
    now_ = now;  // what the timers' handlers see (a throttled flow counts its tokens by it)
    while (auto key = timers_.pop_due(now)) on_timer(*key);
    // Free pipes that no splice needed for a whole interval are closed (their descriptors given back).
    if (now >= next_pipe_trim_) {
        engine_.trim_pipes(false);
        next_pipe_trim_ = now + pipe_trim_interval_;
    }
}

// A session's timers are cancelled when its slot is released, so `key.owner` is a live session.
void Forwarder::on_timer(TimerKey key) {
    const uint32_t slot = key.owner;
    if (key.kind == TimerKind::AcceptRetry) {
        if (!listeners_[slot].closing) arm_accept(static_cast<uint16_t>(slot));
        return;
    }
    Session& session = sessions_[slot];
    if (key.kind == TimerKind::Closing) {
        if (session.state == Session::State::Closing && session.has_pending()) abandon_pending(slot, session);
        return;
    }
    if (key.kind == TimerKind::Throttle) {
        if (session.state != Session::State::Established) return;
        pump(slot, session, Side::Client);
        pump(slot, session, Side::Server);
        return;
    }
    if (key.kind == TimerKind::Connect) {
        const auto proxied = proxied_.find(slot);
        if (session.state == Session::State::Handshake && (proxied == proxied_.end() || proxied->second.header_read)) {
            route_by_hello(slot, session, nullptr, "no whole ClientHello in time");
        } else if (session.state == Session::State::Handshake) {
            ++stats_.rejected_proxy_header;
            log_.debug("peer ", session.client_address, ": no PROXY header in time: closed");
            close_session(slot, session, false, EndCause::Error);
        } else if (session.queued && session.state != Session::State::Closing) {  // closing: it left anyway
            on_queue_timeout(slot, session);
        } else if (session.connect_pending && !session.connect_timed_out && session.state == Session::State::Connecting) {
            session.connect_timed_out = true;
            engine_.cancel(session.server_fd.get());  // completes the connect with -ECANCELED
        }
        return;
    }
    // timeout = 0: the rule has no idle timeout (no timer is armed for it; this guards the rest).
    if (session.state != Session::State::Established || rules_[session.rule]->config.timeout.count() == 0) return;
    const auto deadline = session.last_activity + rules_[session.rule]->config.timeout;
    if (deadline > Clock::now()) {
        timers_.arm({slot, TimerKind::Idle}, deadline);
        return;
    }
    ++stats_.idle_timeouts;
    if (log_.enabled(LogLevel::Debug)) log_.debug("session ", slot, ": ", describe(slot, session), " idle timeout");
    close_session(slot, session, false, EndCause::IdleTimeout);
}

void Forwarder::arm_idle_timer(uint32_t slot, const Session& session) {
    if (rules_[session.rule]->config.timeout.count() == 0) return;  // no idle timeout for this rule
    timers_.arm({slot, TimerKind::Idle}, session.last_activity + rules_[session.rule]->config.timeout);
}

std::string Forwarder::server_name(const Session& session) const {
    if (!session.admitted || session.state == Session::State::Handshake) return "-";
    // A rule may have no server at all (DNS names not resolved yet): nothing to name then.
    const auto& servers = rules_[session.rule]->config.servers;
    if (session.server >= servers.size()) return "-";
    const config::ServerConfig& server = servers[session.server];
    return server.name.empty() ? server.address.to_string() : server.name + " (" + server.address.to_string() + ")";
}

std::string Forwarder::describe(uint32_t slot, const Session& session) const {
    const std::string rule = session.admitted ? rules_[session.rule]->config.id : std::string("-");
    std::string client = session.client_address.to_string();
    if (const auto proxied = proxied_.find(slot); proxied != proxied_.end())
        client = proxied->second.header_read ? client + " via " + proxied->second.peer.to_string()
                                             : "peer " + client + " (no PROXY header yet)";
    return client + " -> " + listeners_[session.listener].address.to_string() + " -> " +
           server_name(session) + " (rule " + rule + ")";
}

// ---- control -----------------------------------------------------------------------------

std::optional<size_t> Forwarder::find_server(uint16_t rule, std::string_view address) const {
    if (rule >= rules_.size() || !rules_[rule]) return std::nullopt;
    const auto& servers = rules_[rule]->servers;
    for (size_t i = 0; i < servers.size(); ++i)
        if (servers[i].address.to_string() == address) return i;
    return std::nullopt;
}

void Forwarder::set_server_admin(uint16_t rule_slot, size_t server, admin::ServerAdminState state,
                                 std::optional<Clock::time_point> until) {
    if (rule_slot >= rules_.size() || !rules_[rule_slot] || server >= rules_[rule_slot]->servers.size()) return;
    Rule& rule = *rules_[rule_slot];
    rule.admin[server] = {state, until.value_or(Clock::time_point::max())};
    rule.servers[server].disabled = state != admin::ServerAdminState::Enabled;
}

void Forwarder::set_server_weight(uint16_t rule_slot, size_t server, unsigned weight) {
    if (rule_slot >= rules_.size() || !rules_[rule_slot] || server >= rules_[rule_slot]->servers.size()) return;
    rules_[rule_slot]->servers[server].weight = weight;
    rules_[rule_slot]->balancer->weights_changed();
}

void Forwarder::set_server_checked(uint16_t rule_slot, size_t server, bool up) {
    if (rule_slot >= rules_.size() || !rules_[rule_slot] || server >= rules_[rule_slot]->servers.size()) return;
    rules_[rule_slot]->servers[server].check_down = !up;
}

namespace {

// The state word of a server as `show rules` prints it, and which word wins when workers differ.
int state_rank(std::string_view state) {
    if (state == "disabled") return 3;
    if (state == "draining") return 2;
    if (state == "down") return 1;
    return 0;
}

}  // namespace

void Forwarder::collect(admin::Snapshot& snapshot, const std::vector<uint16_t>& slots) const {
    snapshot.accepted += stats_.accepted;
    snapshot.active_sessions += sessions_.in_use();
    snapshot.sessions_ended += stats_.sessions_ended;
    snapshot.accept_errors += stats_.accept_errors;
    snapshot.idle_timeouts += stats_.idle_timeouts;
    snapshot.timers_armed += timers_.size();
    snapshot.dropped_no_fd_accept += stats_.dropped_no_fd_accept;
    snapshot.dropped_no_fd_server += stats_.dropped_no_fd_server;
    snapshot.rejects.acl += stats_.rejected_no_rule + stats_.rejected_denied + stats_.rejected_proxy_header;
    snapshot.rejects.limit += stats_.rejected_max_sessions + stats_.rejected_per_ip + stats_.rejected_max_clients +
                              stats_.rejected_rule_per_ip + stats_.rejected_rate;
    snapshot.rejects.global_limit += stats_.rejected_max_sessions;
    snapshot.rejects.per_ip_limit += stats_.rejected_per_ip + stats_.rejected_rule_per_ip;
    snapshot.rejects.rate_limit += stats_.rejected_rate;
    snapshot.rejects.max_clients += stats_.rejected_max_clients;
    snapshot.rejects.no_server += stats_.no_server_left;
    snapshot.rejects.untrusted_proxy += stats_.rejected_untrusted_proxy;
    snapshot.rejects.max_handshakes += stats_.rejected_max_handshakes;
    snapshot.rejects.client_hello += stats_.rejected_client_hello;
    snapshot.sessions_abandoned += stats_.sessions_abandoned;
    const engine::BufferStats buffers = engine_.buffer_stats();
    snapshot.buffer_size = engine_.buffer_size();
    const engine::PipeStats pipes = engine_.pipe_stats();
    static_assert(admin::kPipeFallbackNames.size() == engine::kPipeFallbackCauses, "a name for every fallback cause");
    snapshot.workers.push_back({buffers.held, buffers.offered, buffers.made, buffers.resident_free,
                                stats_.peak_session_buffers, stats_.accepted, pipes.in_use, pipes.free, pipes.taken,
                                pipes.fallbacks});
    for (size_t i = 0; i < slots.size() && i < snapshot.rules.size(); ++i) {
        if (slots[i] >= rules_.size() || !rules_[slots[i]]) continue;
        const Rule& rule = *rules_[slots[i]];
        admin::RuleSnapshot& out = snapshot.rules[i];
        out.active_sessions += rule.active_sessions;
        out.total_sessions += rule.total_sessions;
        out.rejects.merge(rule.rejects);
        out.connect_failures.refused += rule.connect_failures.refused;
        out.connect_failures.timeout += rule.connect_failures.timeout;
        out.connect_failures.other += rule.connect_failures.other;
        out.connect_time.merge(rule.connect_time);
        out.session_duration.merge(rule.session_duration);
        if (rule.queue) out.queue_length = rule.queue->waiting();
        out.queue_timeouts += rule.queue_timeouts;
        out.queue_full += rule.queue_full;
        out.queue_time.merge(rule.queue_time);
        if (out.sni_sessions.size() < rule.sni_sessions.size()) out.sni_sessions.resize(rule.sni_sessions.size());
        for (size_t p = 0; p < rule.sni_sessions.size(); ++p) out.sni_sessions[p] += rule.sni_sessions[p];
        for (size_t s = 0; s < rule.servers.size() && s < out.servers.size(); ++s) {
            const balance::Server& server = rule.servers[s];
            admin::ServerSnapshot& server_out = out.servers[s];
            server_out.active_sessions += server.active_sessions;
            server_out.total_sessions += server.total_sessions;
            server_out.connect_failures += server.connect_failures;
            server_out.bytes_up += rule.traffic[s].bytes_up;
            server_out.bytes_down += rule.traffic[s].bytes_down;
            if (s < rule.timing.size()) {
                server_out.has_histograms = true;
                server_out.connect_time.merge(rule.timing[s].connect_time);
                server_out.session_duration.merge(rule.timing[s].session_duration);
            }
            if (const health::ServerState* passive = rule.health.find_state(s)) {
                server_out.went_up += passive->came_up;
                server_out.went_down += passive->went_down;
            }
            out.bytes_up += rule.traffic[s].bytes_up;
            out.bytes_down += rule.traffic[s].bytes_down;
            out.spliced_up += rule.traffic[s].spliced_up;
            out.spliced_down += rule.traffic[s].spliced_down;
            server_out.weight = server.weight;
            std::string_view state = "up";
            if (rule.admin[s].state == admin::ServerAdminState::Disabled) state = "disabled";
            else if (rule.admin[s].state == admin::ServerAdminState::Draining) state = "draining";
            else if (server.check_down || rule.health.is_down(s, now_)) state = "down";
            if (server_out.state.empty() || state_rank(state) > state_rank(server_out.state))
                server_out.state = std::string(state);
        }
    }
}

std::vector<SessionInfo> Forwarder::list_sessions(std::optional<uint16_t> rule, size_t limit) const {
    std::vector<SessionInfo> out;
    const auto now = Clock::now();
    sessions_.for_each_in_use([&](uint32_t slot, const Session& session) {
        if (out.size() >= limit) return;
        if (rule && (!session.admitted || session.rule != *rule)) return;
        SessionInfo info;
        info.id = session_id(slot);
        info.client = session.client_address.to_string();
        info.listener = listeners_[session.listener].address.to_string();
        info.rule = session.admitted ? rules_[session.rule]->config.id : "-";
        info.server = server_name(session);
        static constexpr const char* kStates[] = {"handshake", "connecting", "established", "closing"};
        info.state = session.queued ? "queued" : kStates[static_cast<int>(session.state)];
        info.bytes_up = session.upstream.delivered_bytes;
        info.bytes_down = session.downstream.delivered_bytes;
        info.age = std::chrono::duration_cast<std::chrono::milliseconds>(now - session.started);
        out.push_back(std::move(info));
    });
    return out;
}

bool Forwarder::kill_session(uint64_t id) {
    const auto slot = static_cast<uint32_t>(id);
    const auto generation = static_cast<uint32_t>(id >> 32) & Token::kGenerationMask;
    if (worker_of(id) != worker_ || !sessions_.is_current(slot, generation)) return false;
    Session& session = sessions_[slot];
    if (session.state == Session::State::Closing) return false;
    bool in_use = false;
    sessions_.for_each_in_use([&](uint32_t used, const Session&) { in_use = in_use || used == slot; });
    if (!in_use) return false;
    log_.info("session ", id, ": ", describe(slot, session), " closed by the operator");
    close_session(slot, session, false, EndCause::Admin);
    return true;
}

size_t Forwarder::close_sessions_in(const std::vector<uint16_t>& rules) {
    size_t closed = 0;
    sessions_.for_each_in_use([&](uint32_t slot, Session& session) {
        if (!session.admitted || session.state == Session::State::Closing) return;
        if (std::find(rules.begin(), rules.end(), session.rule) == rules.end()) return;
        close_session(slot, session, false, EndCause::Admin);
        ++closed;
    });
    return closed;
}

}  // namespace ringlb::core
