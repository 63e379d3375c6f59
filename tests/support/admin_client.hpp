#pragma once
// Talking to ringlb's management port from the tests, line by line as an operator with nc would.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "net_util.hpp"

namespace ringlb::test {

// The lines ringlb sent back for one command: its body and the final `ok` / `error: ...` line.
struct AdminReply {
    std::string body;   // every line before the last, each ending in '\n'
    std::string last;   // "ok", "error: ...", or "<EOF>"/"<timeout>" when the reply did not end
    bool ok() const { return last == "ok"; }
};

// Reads lines until one is `ok` or starts with `error: `.
AdminReply read_admin_reply(int fd, std::chrono::milliseconds timeout = 10s);

// GET `path` from ringlb's metrics port on 127.0.0.1:port: the whole response as it came before
// ringlb closed the connection or `timeout` passed; "<connect failed>" or "<send failed>" when the
// request could not go out.
std::string http_get(std::uint16_t port, const std::string& path, std::chrono::milliseconds timeout = 5s);

// Connects to 127.0.0.1:port, sends `command` + "\n" (after `auth <token>` when token is not
// empty), reads the reply and closes.
AdminReply admin_command(std::uint16_t port, std::string_view command, std::string_view token = "");

// The number N of a body line "<key> N" (as `show stats` prints them); nullopt when absent.
std::optional<long long> reply_value(const AdminReply& reply, std::string_view key);

// From `show stats` on 127.0.0.1:port, over every worker: the most receive buffers one session
// held at once (session_peak_buffers=), and the buffers sessions hold now (buffers_held=);
// -1 when the command failed or the field is absent.
long long session_peak_buffers(std::uint16_t admin_port);
long long buffers_held(std::uint16_t admin_port);
// The times a direction took a pipe for the splice path (pipes_taken=), over every worker.
long long pipes_taken(std::uint16_t admin_port);

}  // namespace ringlb::test
