#include "admin_client.hpp"

#include <algorithm>
#include <charconv>

namespace ringlb::test {

std::string http_get(std::uint16_t port, const std::string& path, std::chrono::milliseconds timeout) {
    UniqueFd fd = connect_to(port, Family::V4, timeout);
    if (!fd.valid()) return "<connect failed>";
    if (!send_all(fd.get(), "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n", timeout)) return "<send failed>";
    return read_until_closed(fd.get(), timeout).data;
}

AdminReply read_admin_reply(int fd, std::chrono::milliseconds timeout) {
    AdminReply reply;
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        ReadResult line = read_line(fd, std::max(left, std::chrono::milliseconds(0)));
        if (line.end != ReadEnd::Limit) {
            reply.last = line.end == ReadEnd::Timeout ? "<timeout>" : "<EOF>";
            return reply;
        }
        if (!line.data.empty() && line.data.back() == '\r') line.data.pop_back();
        if (line.data == "ok" || line.data.rfind("error: ", 0) == 0) {
            reply.last = line.data;
            return reply;
        }
        reply.body += line.data + "\n";
    }
}

AdminReply admin_command(std::uint16_t port, std::string_view command, std::string_view token) {
    UniqueFd fd = connect_to(port);
    if (!fd.valid()) return {"", "<connect failed>"};
    if (!token.empty()) {
        send_all(fd.get(), "auth " + std::string(token) + "\n");
        AdminReply auth = read_admin_reply(fd.get());
        if (!auth.ok()) return auth;
    }
    if (!send_all(fd.get(), std::string(command) + "\n")) return {"", "<send failed>"};
    return read_admin_reply(fd.get());
}

std::optional<long long> reply_value(const AdminReply& reply, std::string_view key) {
    std::string_view body = reply.body;
    while (!body.empty()) {
        const std::size_t end = body.find('\n');
        std::string_view line = body.substr(0, end);
        body.remove_prefix(end == std::string_view::npos ? body.size() : end + 1);
        if (line.size() <= key.size() || !line.starts_with(key) || line[key.size()] != ' ') continue;
        line.remove_prefix(key.size() + 1);
        long long value = 0;
        const auto [rest, error] = std::from_chars(line.data(), line.data() + line.size(), value);
        if (error == std::errc{}) return value;
    }
    return std::nullopt;
}

namespace {

// Every value of " <field>=N" in `show stats` (one per worker), folded with `combine`.
template <typename Combine>
long long fold_stat(std::uint16_t admin_port, std::string_view field, Combine combine) {
    const AdminReply reply = admin_command(admin_port, "show stats");
    if (!reply.ok()) return -1;
    const std::string needle = std::string(field) + "=";
    std::optional<long long> folded;
    for (std::size_t at = 0; (at = reply.body.find(needle, at)) != std::string::npos;) {
        if (at > 0 && reply.body[at - 1] != ' ' && reply.body[at - 1] != '\n') {
            at += needle.size();
            continue;  // the end of another field's name
        }
        at += needle.size();
        long long value = 0;
        std::from_chars(reply.body.data() + at, reply.body.data() + reply.body.size(), value);
        folded = folded ? combine(*folded, value) : value;
    }
    return folded.value_or(-1);
}

}  // namespace

long long session_peak_buffers(std::uint16_t admin_port) {
    return fold_stat(admin_port, "session_peak_buffers", [](long long a, long long b) { return std::max(a, b); });
}

long long buffers_held(std::uint16_t admin_port) {
    return fold_stat(admin_port, "buffers_held", [](long long a, long long b) { return a + b; });
}

long long pipes_taken(std::uint16_t admin_port) {
    return fold_stat(admin_port, "pipes_taken", [](long long a, long long b) { return a + b; });
}

}  // namespace ringlb::test
