// The rule queue's side of the forwarder: clients that find every server of their rule at its
// max_connections wait (rule keys `queue`, `queue_timeout`), holding no server connection and
// reading nothing more, until a connection is handed to them or their time is up. The queue itself
// and its order over all workers: core/server_queue.hpp.
#include "ringlb/core/forwarder.hpp"

#include <algorithm>

namespace ringlb::core {

bool Forwarder::takes_new_sessions(const Rule& rule, size_t index) const {
    const balance::Server& server = rule.servers[index];
    return !server.disabled && !server.down && !server.check_down && server.weight > 0;
}

namespace {

bool has_failed(const Session& session, size_t server) {
    return std::find(session.failed_servers.begin(), session.failed_servers.end(), server) != session.failed_servers.end();
}

}  // namespace

// Only servers that could take the client if they had room count: a rule whose servers are down
// or failed for this client closes it as before (waiting would not help).
bool Forwarder::every_usable_server_full(const Rule& rule, const Session& session) const {
    bool some_full = false;
    for (size_t i = 0; i < rule.servers.size(); ++i) {
        const balance::Server& server = rule.servers[i];
        if (has_failed(session, i) || !takes_new_sessions(rule, i)) continue;
        if (server.max_connections == 0 || server.connections < server.max_connections) return false;
        some_full = true;
    }
    return some_full;
}

bool Forwarder::wait_in_queue(uint32_t slot, Session& session, std::optional<size_t> pick) {
    Rule& rule = *rules_[session.rule];
    if (!rule.queue || !limits_.server_queues().can_deliver()) return false;
    // First come, first served: with clients waiting, a newcomer queues behind them even when it
    // found a free connection, which goes to the oldest of them instead.
    const bool behind_others = pick && rule.queue->waiting() > 0;
    if (!behind_others && (pick || !every_usable_server_full(rule, session))) return false;
    if (!rule.queue->try_push({session_id(slot), now_})) {
        if (pick) return false;  // the queue is full, but this client found room: it goes on
        ++rule.queue_full;
        log_.debug("rule ", rule.config.id, ": every server full and its queue of ", rule.queue->capacity(),
                   " full: client ", session.client_address.to_string(), " closed");
        return false;
    }
    session.queued = true;
    session.connect_started = now_;  // the wait is measured from here
    // Without a pick, a session on another worker may have ended between this client's look at
    // the counts and its push, its connection given back because nobody waited yet: look again.
    if (!pick) {
        refresh_servers(rule, session);
        pick = pick_and_take(rule, session);
    }
    if (pick) {
        session.server = static_cast<uint16_t>(*pick);
        give_back_connection(rule, session);  // to the oldest waiter (perhaps this very client)
    }
    timers_.arm({slot, TimerKind::Connect}, now_ + config::queue_timeout(rule.config));
    return true;
}

bool Forwarder::leave_queue(uint32_t slot, Session& session) {
    Rule& rule = *rules_[session.rule];
    if (!rule.queue->remove(session_id(slot))) return false;
    session.queued = false;
    rule.queue_time.add(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now_ - session.connect_started).count()));
    return true;
}

void Forwarder::on_queue_timeout(uint32_t slot, Session& session) {
    if (!leave_queue(slot, session)) return;  // a connection is on its way: it connects when it arrives
    Rule& rule = *rules_[session.rule];
    ++rule.queue_timeouts;
    log_.debug("rule ", rule.config.id, ": client ", session.client_address.to_string(), " waited ",
               config::queue_timeout(rule.config).count(), " ms in the queue: closed");
    close_session(slot, session, false, EndCause::QueueTimeout);
}

void Forwarder::on_queue_grant(const QueueGrant& grant) {
    now_ = Clock::now();
    const auto slot = static_cast<uint32_t>(grant.session_id & 0xFFFFFFFF);
    const auto generation = static_cast<uint32_t>(grant.session_id >> 32) & Token::kGenerationMask;
    Session* session = sessions_.is_current(slot, generation) ? &sessions_[slot] : nullptr;
    if (!session || !session->queued || session->state != Session::State::Connecting) {
        // The client is gone (closed, timed out) since the grant was sent: the next waiter gets it.
        limits_.server_queues().offer_or_give_back(grant.queue, grant.server, grant.count);
        return;
    }
    Rule& rule = *rules_[session->rule];
    session->queued = false;
    timers_.cancel({slot, TimerKind::Connect});
    rule.queue_time.add(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now_ - grant.waited_since).count()));
    refresh_servers(rule, *session);
    // The same count for the same address in this version of the rule: the connection is its own,
    // if the server still takes sessions and has not failed this client already.
    const auto index = std::find(rule.connections.begin(), rule.connections.end(), grant.count) - rule.connections.begin();
    if (static_cast<size_t>(index) < rule.connections.size() && takes_new_sessions(rule, index) &&
        !has_failed(*session, index)) {
        session->connection_taken = true;
        ++rule.servers[index].connections;
        if (connect_to(slot, *session, index)) connect_next_server(slot, *session);
        return;
    }
    if (static_cast<size_t>(index) < rule.connections.size() && has_failed(*session, index) &&
        takes_new_sessions(rule, index))
        limits_.server_queues().offer_or_give_back(grant.queue, grant.server, grant.count);  // good for the next
    else
        ServerConnections::give_back(*grant.count);  // a server no client of this rule version may use now
    connect_next_server(slot, *session);
}

}  // namespace ringlb::core
