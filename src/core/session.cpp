#include "ringlb/core/session.hpp"

namespace ringlb::core {

namespace {

bool idle(const Flow& flow) {
    return !flow.eof && flow.count == 0 && flow.queued_bytes == 0 && flow.pipe_bytes == 0 && !flow.send_pending &&
           !flow.shutdown_pending;
}

}  // namespace

// A reset or an operator's action says more than the FIN that may have come first.
void note_cause(Session& session, EndCause cause) {
    const auto current = static_cast<EndCause>(session.end_cause);
    const bool unset = session.end_cause == 0;
    const bool was_fin = current == EndCause::ClientFin || current == EndCause::ServerFin;
    const bool is_fin = cause == EndCause::ClientFin || cause == EndCause::ServerFin;
    if (unset || (was_fin && !is_fin)) session.end_cause = static_cast<uint8_t>(cause);
}

bool is_quiescent(const Session& session) { return idle(session.upstream) && idle(session.downstream); }

bool finished_both_ways(const Session& session, Side side) {
    // The flow this peer feeds must have brought its FIN; the flow towards it must have passed one on.
    return session.flow_from(side).eof && session.flow_from(other(side)).finished;
}

PeerEnd peer_end(const Session& session, Side side, bool cut, std::optional<Side> failed) {
    // A server connection counts from its successful connect: before that there was none to end.
    const bool connected = side == Side::Client ? static_cast<bool>(session.client_fd)
                                                : session.established && static_cast<bool>(session.server_fd);
    if (!connected) return PeerEnd::None;
    if (failed == side) return PeerEnd::Peer;
    if (!cut || finished_both_ways(session, side)) return PeerEnd::Fin;
    return PeerEnd::Reset;
}

}  // namespace ringlb::core
