#include "ringlb/core/session.hpp"

namespace ringlb::core {

namespace {

bool idle(const Flow& flow) {
    return !flow.eof && flow.count == 0 && flow.queued_bytes == 0 && !flow.send_pending && !flow.shutdown_pending;
}

}  // namespace

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
