#include "admin_client.hpp"

namespace ringlb::test {

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

}  // namespace ringlb::test
