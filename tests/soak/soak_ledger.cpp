#include "soak_ledger.hpp"

#include <sstream>

namespace ringlb::soak {

namespace {

std::string stream_name(std::uint64_t id) { return "stream " + std::to_string(id); }

const char* to_string(StreamEnd end) {
    switch (end) {
        case StreamEnd::Open: return "open";
        case StreamEnd::CleanEof: return "eof";
        case StreamEnd::Reset: return "reset";
    }
    return "?";
}

// Both views of a stream in one line, appended to its violations so they can be reproduced.
std::string describe(const ClientRecord& client, const BackendRecord* backend) {
    const StreamPlan& plan = client.plan;
    std::ostringstream out;
    out << " [plan up=" << plan.up_bytes << " down=" << plan.down_bytes << " server_action="
        << static_cast<int>(plan.server_action) << "@" << plan.server_action_at
        << (plan.server_replies_after_eof ? " after_eof" : "") << (plan.server_stalls ? " stalls" : "")
        << (plan.server_reads_slowly ? " server_slow" : "")
        << " client_action=" << static_cast<int>(plan.client_action) << "@" << plan.client_reset_at
        << (plan.client_reads_slowly ? " client_slow" : "") << "; client sent=" << client.sent
        << (client.sent_fin ? "+fin" : "") << (client.reset_by_client ? "+rst" : "")
        << (client.send_failed ? " send_failed" : "") << " received=" << client.received << " "
        << to_string(client.down_end);
    if (client.connect_failed) out << " connect_error=" << client.connect_error;
    if (client.local_port != 0) out << " client_port=" << client.local_port;
    if (backend)
        out << "; backend received=" << backend->received << " " << to_string(backend->up_end) << " sent=" << backend->sent
            << (backend->sent_fin ? "+fin" : "") << (backend->reset_by_backend ? "+rst" : "")
            << (backend->killed ? " killed" : "") << (backend->send_failed ? " send_failed" : "")
            << (backend->peer_reset ? " peer_reset" : "");
    else
        out << "; no backend record";
    out << "]";
    return out.str();
}

bool any_reset(const ClientRecord& client, const BackendRecord* backend) {
    if (client.reset_by_client || client.send_failed || client.down_end == StreamEnd::Reset) return true;
    return backend && (backend->reset_by_backend || backend->killed || backend->send_failed ||
                       backend->up_end == StreamEnd::Reset);
}

}  // namespace

void Ledger::record_client(const ClientRecord& record) {
    std::lock_guard lock(mutex_);
    clients_[record.plan.id] = record;
}

void Ledger::record_backend(const BackendRecord& record) {
    std::lock_guard lock(mutex_);
    // ringlb opens one server connection per session; a second header for the same stream means
    // bytes were duplicated somewhere.
    if (!backends_.emplace(record.plan.id, record).second) duplicate_backend_ids_.push_back(record.plan.id);
}

void Ledger::record_anonymous(const AnonymousRecord& record) {
    std::lock_guard lock(mutex_);
    anonymous_.push_back(record);
}

SoakTotals Ledger::judge() const {
    std::lock_guard lock(mutex_);
    SoakTotals totals;
    for (const auto& [id, client] : clients_) {
        const auto backend = backends_.find(id);
        judge_client(client, backend == backends_.end() ? nullptr : &backend->second, totals);
    }
    for (const auto& [id, backend] : backends_) {
        const auto client = clients_.find(id);
        judge_backend(backend, client == clients_.end() ? nullptr : &client->second, totals);
    }
    for (std::uint64_t id : duplicate_backend_ids_)
        totals.violations.push_back(stream_name(id) + ": its header reached a backend twice");
    for (const AnonymousRecord& anonymous : anonymous_) {
        ++totals.anonymous;
        if (anonymous.bad_magic) totals.violations.push_back("a backend connection began with bytes that are no stream header");
        // A connection with part of a header can only end cleanly if ringlb turned the client's
        // RST into a FIN (ringlb may legitimately FIN an empty connection after a connect timeout).
        if (anonymous.end == StreamEnd::CleanEof && anonymous.header_bytes > 0)
            totals.violations.push_back("a backend connection got " + std::to_string(anonymous.header_bytes) +
                                        " header bytes and then a clean end: a client reset was passed on as FIN");
    }
    return totals;
}

// The client's down direction: a clean end must match the backend's FIN exactly.
void Ledger::judge_client(const ClientRecord& client, const BackendRecord* backend, SoakTotals& totals) const {
    const std::string name = stream_name(client.plan.id);
    const std::size_t violations_before = totals.violations.size();
    ++totals.streams;
    totals.bytes_down += client.received;
    if (client.mismatch)
        totals.violations.push_back(name + ": client received a wrong byte at offset " + std::to_string(*client.mismatch));
    if (client.hung) totals.violations.push_back(name + ": still open at its deadline (hang)");
    if (client.connect_failed) totals.violations.push_back(name + ": ringlb did not accept the connection");
    if (client.down_end == StreamEnd::CleanEof) {
        if (!backend && client.received > 0) {
            totals.violations.push_back(name + ": client got " + std::to_string(client.received) +
                                        " bytes and a clean end, but no backend served it");
        } else if (backend && !backend->sent_fin) {
            totals.violations.push_back(name + ": client saw a clean end after " + std::to_string(client.received) +
                                        " bytes, but the backend never sent FIN (it " +
                                        (backend->killed ? "was killed" : backend->reset_by_backend ? "reset" : "failed") +
                                        "): a reset reported as a clean end");
        } else if (backend && backend->sent != client.received) {
            totals.violations.push_back(name + ": client saw a clean end after " + std::to_string(client.received) +
                                        " bytes, the backend sent " + std::to_string(backend->sent) + " before its FIN");
        }
    }
    if (client.plan.server_stalls) judge_stall(client, backend, totals);
    // Both ends finished cleanly, nobody reset: the client must not see a RST.
    if (client.down_end == StreamEnd::Reset && !client.reset_by_client && backend && backend->sent_fin &&
        backend->up_end == StreamEnd::CleanEof && !backend->killed && !backend->reset_by_backend && !backend->send_failed)
        totals.violations.push_back(name + ": both ends finished cleanly, yet the client got a reset");
    for (std::size_t i = violations_before; i < totals.violations.size(); ++i) totals.violations[i] += describe(client, backend);
    classify(client, backend, totals);
}

// A server that stalls past the idle timeout after the client's FIN: ringlb must cut the stream,
// and a cut must reach both ends as a reset. A clean end at the client would pass the missing
// reply off as an empty one; a server that got to send its reply means no cut came at all.
void Ledger::judge_stall(const ClientRecord& client, const BackendRecord* backend, SoakTotals& totals) {
    if (!backend || backend->killed) return;  // no stream backend, or the kill ended it first
    ++totals.stalled;
    const std::string name = stream_name(client.plan.id);
    if (client.down_end == StreamEnd::Reset && backend->peer_reset && !backend->sent_fin) {
        ++totals.stalls_cut;
        totals.stall_cut_ports.push_back(client.local_port);
    } else if (client.down_end == StreamEnd::CleanEof) {
        totals.violations.push_back(name + ": stalled past the idle timeout, and the client saw a clean end after " +
                                    std::to_string(client.received) + " bytes instead of a reset");
    } else if (backend->sent_fin || backend->sent > 0) {
        totals.violations.push_back(name + ": stalled past the idle timeout, yet its server could still reply: ringlb "
                                           "never cut it");
    } else if (!backend->peer_reset) {
        totals.violations.push_back(name + ": cut after stalling past the idle timeout, but its server saw no reset");
    } else {
        totals.violations.push_back(name + ": cut after stalling past the idle timeout, but the client's stream " +
                                    "ended " + to_string(client.down_end) + ", not by a reset");
    }
}

// The backend's up direction: a clean end must match the client's FIN exactly.
void Ledger::judge_backend(const BackendRecord& backend, const ClientRecord* client, SoakTotals& totals) const {
    const std::string name = stream_name(backend.plan.id);
    const std::size_t violations_before = totals.violations.size();
    totals.bytes_up += backend.received;
    if (backend.mismatch)
        totals.violations.push_back(name + ": backend received a wrong byte at offset " + std::to_string(*backend.mismatch));
    if (!client) {
        totals.violations.push_back(name + ": a backend got a header no client sent");
        return;
    }
    if (backend.up_end != StreamEnd::CleanEof) return;
    if (!client->sent_fin) {
        totals.violations.push_back(name + ": backend saw a clean end after " + std::to_string(backend.received) +
                                    " bytes, but the client " + (client->reset_by_client ? "reset" : "never sent FIN") +
                                    ": a reset reported as a clean end");
    } else if (client->sent != backend.received) {
        totals.violations.push_back(name + ": backend saw a clean end after " + std::to_string(backend.received) +
                                    " bytes, the client sent " + std::to_string(client->sent) + " before its FIN");
    }
    for (std::size_t i = violations_before; i < totals.violations.size(); ++i) totals.violations[i] += describe(*client, &backend);
}

void Ledger::classify(const ClientRecord& client, const BackendRecord* backend, SoakTotals& totals) {
    if (any_reset(client, backend)) {
        ++totals.resets;
        if (client.reset_by_client) ++totals.resets_by_client;
        else if (backend && backend->reset_by_backend) ++totals.resets_by_server;
        else if (backend && backend->killed) ++totals.resets_by_kill;
        else if (backend && client.plan.server_stalls) ++totals.resets_by_stall;
        else ++totals.resets_other;
        return;
    }
    if (!backend) {
        ++totals.unserved;
        return;
    }
    if (client.down_end == StreamEnd::CleanEof && backend->up_end == StreamEnd::CleanEof) {
        ++totals.completed;
        if (backend->plan.server_action == ServerAction::FinEarly) ++totals.completed_early;
    }
}

}  // namespace ringlb::soak
