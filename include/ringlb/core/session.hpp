#pragma once
// A session: one client connection paired with one server connection, and the bytes moving
// between them in each direction. Engine-free: it records what is in flight, not how.
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "ringlb/core/connection_record.hpp"
#include "ringlb/core/timer_queue.hpp"
#include "ringlb/core/token_bucket.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::core {

enum class Side : uint8_t { Client, Server };

constexpr Side other(Side side) { return side == Side::Client ? Side::Server : Side::Client; }
constexpr const char* to_string(Side side) { return side == Side::Client ? "client" : "server"; }

// Bytes flowing one way: received from one socket into engine buffers, queued in order, sent
// on to the other socket. One receive and one send in flight at most, so order is kept and a
// slow reader holds back only the direction that feeds it. Each chunk is one receive buffer, so
// a flow never holds more than kMaxChunks buffers, whatever the sizes of the segments it gets.
struct Flow {
    struct Chunk {
        uint16_t buffer = 0;
        uint16_t begin = 0;  // first byte not yet sent
        uint16_t end = 0;    // one past the last received byte
    };
    static constexpr uint8_t kMaxChunks = 8;

    std::array<Chunk, kMaxChunks> chunks{};
    uint8_t head = 0;
    uint8_t count = 0;
    uint32_t queued_bytes = 0;
    uint64_t delivered_bytes = 0;
    bool recv_pending = false;
    bool send_pending = false;
    bool shutdown_pending = false;
    bool eof = false;       // the source has sent its FIN
    bool finished = false;  // that FIN was passed on to the destination
    TokenBucket bucket;     // upload_rate / download_rate; unused when the rule has none
    // The splice path (zero_copy): the bytes in flight wait in a pipe instead of chunks. A
    // direction switches only while nothing of it is queued or in flight, so one path at a time.
    bool splicing = false;
    bool has_pipe = false;        // pipe holds pipe_bytes, taken when they arrived
    uint16_t pipe = 0;
    uint32_t pipe_bytes = 0;
    uint8_t bulk_receives = 0;    // zero_copy auto: consecutive receives that filled a buffer
    uint8_t small_splices = 0;    // zero_copy auto: consecutive splices of a few bytes
    uint8_t copy_receives_left = 0;  // no pipe was to be had: receives to copy before trying again

    Chunk& front() { return chunks[head]; }
    Chunk& back() { return chunks[(head + count - 1) % kMaxChunks]; }
    const Chunk& at(uint8_t position) const { return chunks[(head + position) % kMaxChunks]; }
    void push(const Chunk& chunk) {
        chunks[(head + count) % kMaxChunks] = chunk;
        ++count;
    }
    void pop() {
        head = static_cast<uint8_t>((head + 1) % kMaxChunks);
        --count;
    }
    bool full() const { return count == kMaxChunks; }
};

struct Session {
    // Handshake: waiting for the client's PROXY header (accept_proxy) or its TLS ClientHello (rules
    // with sni or alpn), before any rule is chosen.
    enum class State : uint8_t { Handshake, Connecting, Established, Closing };

    State state = State::Connecting;
    bool established = false;  // counted on a server: undo that on release
    bool connection_taken = false;  // holds one of its server's connections (ServerConnections)
    bool connect_pending = false;
    bool connect_timed_out = false;
    bool abortive = false;  // a socket of the session is set to close with a reset
    bool admitted = false;  // counted in the rule and the limits: undo that on release
    bool sending_proxy_header = false;  // the upstream send in flight carries the PROXY header
    bool queued = false;  // waiting in its rule's queue for a server connection (no connect yet)
    uint8_t end_cause = 0;  // ConnectionRecord::EndCause, set by whatever ends the session first
    PeerEnd client_end = PeerEnd::None;  // decided when the session starts closing
    PeerEnd server_end = PeerEnd::None;
    uint16_t listener = 0;
    uint16_t rule = 0;
    uint16_t server = 0;
    uint16_t preamble_client_bytes = 0;  // held ClientHello bytes in the preamble being sent
    uint32_t connect_us = 0;  // how long the successful connect took
    net::UniqueFd client_fd;
    net::UniqueFd server_fd;
    net::SocketAddress client_address;
    Flow upstream;    // client -> server
    Flow downstream;  // server -> client
    std::vector<uint16_t> failed_servers;  // empty (no allocation) unless a connect failed
    Clock::time_point started{};
    Clock::time_point last_activity{};
    Clock::time_point connect_started{};  // the current connect attempt, for connect_time()

    Flow& flow_from(Side source) { return source == Side::Client ? upstream : downstream; }
    const Flow& flow_from(Side source) const { return source == Side::Client ? upstream : downstream; }
    PeerEnd& end_of(Side side) { return side == Side::Client ? client_end : server_end; }
    net::UniqueFd& fd(Side side) { return side == Side::Client ? client_fd : server_fd; }

    // Whether any request on that side's socket has not completed yet.
    bool has_pending(Side side) const {
        const Flow& in = side == Side::Client ? upstream : downstream;
        const Flow& out = side == Side::Client ? downstream : upstream;
        return in.recv_pending || out.send_pending || out.shutdown_pending ||
               (side == Side::Server && connect_pending);
    }
    bool has_pending() const { return has_pending(Side::Client) || has_pending(Side::Server); }
};

// ---- endings -----------------------------------------------------------------------------
// When ringlb ends a session itself (idle timeout, no server left, an operator, a stop, a fatal
// error), a peer may be told "the stream is complete" (FIN) only if nothing was lost; otherwise it
// is told the stream was cut (reset), so that a truncated reply never passes for a whole one.

// Notes what ends the session, in order of precedence: the first cause, unless a FIN came first
// and something else (a reset, an operator) ends it.
void note_cause(Session& session, EndCause cause);
constexpr EndCause reset_of(Side side) { return side == Side::Client ? EndCause::ClientReset : EndCause::ServerReset; }

// Whether the session can end with FINs and lose nothing: neither side has half-closed, and no
// byte is queued in ringlb or being sent, either way. What the kernel holds unread is not seen
// here (the caller checks the sockets for that).
bool is_quiescent(const Session& session);

// Whether that side's peer is done both ways: it sent its FIN and has been sent the other's.
bool finished_both_ways(const Session& session, Side side);

// What the peer on `side` is told when the session ends now. `cut`: the ending loses something
// (or a peer failed); `failed`: the side whose own reset or error ends the session, if any. A
// side with no connection (a server never connected) is PeerEnd::None.
PeerEnd peer_end(const Session& session, Side side, bool cut, std::optional<Side> failed);

}  // namespace ringlb::core
