#pragma once
// One line per closed session (global.log_connections): who connected, where it went, how many
// bytes moved and why it ended. Text for people and grep, JSON (one object per line) for tools.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ringlb/config/config.hpp"

namespace ringlb::core {

// Why a session ended: whatever ended it first. Stored in a session as uint8_t, hence the base;
// the values start at 1 because a session's 0 means "no cause noted yet".
enum class EndCause : uint8_t {
    ClientFin = 1,  // the client closed, then the rest was flushed
    ServerFin,      // the server closed, then the rest was flushed
    ClientReset,    // the client connection failed (reset, error)
    ServerReset,    // the server connection failed after connecting
    IdleTimeout,    // no byte either way for the rule's timeout
    ConnectFailed,  // no server could be connected (every try failed)
    Limit,          // refused by a session or rate limit
    Acl,            // no rule takes this client, or denied
    Shutdown,       // ringlb stopped before the session ended
    Admin,          // killed from the admin port (kill session, clean sessions)
    Error,          // anything else (resource exhaustion, internal error)
    UntrustedProxy,  // accept_proxy: the peer is not in proxy_from, so may not send a PROXY header
    QueueTimeout,    // waited queue_timeout in its rule's queue without a server connection
};

// "client-fin", "server-fin", "client-reset", "server-reset", "idle-timeout", "connect-failed",
// "limit", "acl", "shutdown", "admin", "error", "untrusted-proxy", "queue-timeout".
std::string_view to_string(EndCause cause);

// What one peer (the client, or the server) was told when its connection ended: a FIN means the
// stream it read was complete; a reset means it was cut. Stored in a session as uint8_t.
enum class PeerEnd : uint8_t {
    None,   // there was no connection to end (no server was connected)
    Fin,    // ended with a FIN: nothing was lost on the way to or from this peer
    Reset,  // ringlb reset it (SO_LINGER 0): the stream was cut
    Peer,   // the peer's own reset or error ended it; ringlb had nothing left to say
};

// "-", "fin", "reset", "peer".
std::string_view to_string(PeerEnd end);

struct ConnectionRecord {
    std::chrono::system_clock::time_point end_time;
    std::string client;    // "1.2.3.4:5555"
    // accept_proxy listeners only: the TCP peer (a load balancer) that sent the PROXY header naming
    // `client` (empty when no header was read); empty elsewhere, and then left out of the line.
    std::string peer;
    std::string listener;  // the address it connected to
    std::string rule;      // empty when no rule took it
    std::string server;    // empty when none was connected
    uint64_t bytes_up = 0;    // client -> server
    uint64_t bytes_down = 0;  // server -> client
    std::optional<std::chrono::microseconds> connect_time;  // absent when no connect succeeded
    std::chrono::microseconds duration{0};
    EndCause cause = EndCause::Error;
    PeerEnd client_end = PeerEnd::None;
    PeerEnd server_end = PeerEnd::None;
};

// One line without the trailing '\n'. Text:
//   2026-11-27T10:00:00.123Z conn client=1.2.3.4:5555 listener=0.0.0.0:80 rule=web
//   server=127.0.0.1:9001 up=123 down=456 connect_us=250 duration_ms=1234 end=client-fin
//   client_end=fin server_end=fin
// (on one line; an empty field prints "-", a value with spaces, quotes, '=' or control
// characters is quoted with C-style escapes; on accept_proxy listeners "peer=..." follows
// client). JSON: the same fields as one object, with "time" and "event":"conn" first, numbers as
// numbers, null for an absent server, connect time or server end, "peer" only where the text has it.
std::string format_record(const ConnectionRecord& record, config::LogFormat format);

}  // namespace ringlb::core
