#include "ringlb/app/ctl.hpp"

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <iostream>
#include <optional>
#include <string_view>
#include <system_error>
#include <variant>

#include "ringlb/net/address.hpp"
#include "ringlb/net/socket.hpp"
#include "ringlb/net/unix_socket.hpp"

namespace ringlb::app {
namespace {

constexpr std::chrono::seconds kTimeout{10};
constexpr std::string_view kUnixPrefix = "unix:";

std::string errno_text(int error_number) { return std::generic_category().message(error_number); }

// Why run_ctl stops early, and with which exit code.
struct CtlError {
    int exit_code;
    std::string message;
};

// Blocking I/O bounded by kTimeout per call: the kernel's socket timeouts are simpler here than
// a poll loop, and they bound connect() as well (it honours SO_SNDTIMEO).
void set_timeouts(int fd) {
    const timeval timeout{static_cast<time_t>(kTimeout.count()), 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
}

std::string connect_error(const std::string& address, int error_number) {
    // A connect cut short by SO_SNDTIMEO reports EINPROGRESS (TCP) or EAGAIN (unix): say what happened.
    if (error_number == EINPROGRESS || error_number == EAGAIN)
        return "cannot connect to " + address + ": no answer within " + std::to_string(kTimeout.count()) + " s";
    return "cannot connect to " + address + ": " + errno_text(error_number);
}

std::variant<net::UniqueFd, CtlError> connect_unix_socket(const std::string& address, const std::string& path) {
    sockaddr_un sa{};
    socklen_t length = 0;
    if (!net::make_unix_address(path, sa, length))
        return CtlError{kCtlUnreachable, "bad admin address \"" + address + "\": the socket path is empty or too long"};
    net::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return CtlError{kCtlUnreachable, "socket for " + address + ": " + errno_text(errno)};
    set_timeouts(fd.get());
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa), length) != 0)
        return CtlError{kCtlUnreachable, connect_error(address, errno)};
    return fd;
}

std::variant<net::UniqueFd, CtlError> connect_tcp_socket(const std::string& address) {
    const auto parsed = net::SocketAddress::parse(address);
    if (!parsed)
        return CtlError{kCtlUnreachable,
                        "bad admin address \"" + address + "\": " + net::SocketAddress::parse_error(address)};
    const int raw = net::new_stream_socket(parsed->family(), false);
    if (raw < 0) return CtlError{kCtlUnreachable, "socket for " + address + ": " + errno_text(-raw)};
    net::UniqueFd fd(raw);
    set_timeouts(fd.get());
    if (::connect(fd.get(), parsed->sockaddr_ptr(), parsed->length()) != 0)
        return CtlError{kCtlUnreachable, connect_error(address, errno)};
    return fd;
}

std::variant<net::UniqueFd, CtlError> connect_to_admin(const std::string& address) {
    if (address.starts_with(kUnixPrefix)) return connect_unix_socket(address, address.substr(kUnixPrefix.size()));
    return connect_tcp_socket(address);
}

std::optional<CtlError> send_all(int fd, std::string_view bytes, const std::string& address) {
    while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const bool timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
            return CtlError{kCtlUnreachable,
                            "cannot send to " + address + ": " + (timed_out ? "timed out" : errno_text(errno))};
        }
        bytes.remove_prefix(static_cast<size_t>(n));
    }
    return std::nullopt;
}

// Reads the reply stream line by line, remembering whether any byte came at all: a connection
// closed before the first byte means the server turned us away, not that a command failed.
class LineReader {
public:
    LineReader(int fd, std::string address) : fd_(fd), address_(std::move(address)) {}

    std::variant<std::string, CtlError> next_line() {
        for (;;) {
            if (const size_t newline = buffer_.find('\n'); newline != std::string::npos) {
                std::string line = buffer_.substr(0, newline);
                buffer_.erase(0, newline + 1);
                if (!line.empty() && line.back() == '\r') line.pop_back();
                return line;
            }
            if (auto error = fill()) return *error;
        }
    }

private:
    std::optional<CtlError> fill() {
        char chunk[16 * 1024];
        ssize_t n = 0;
        do n = ::recv(fd_, chunk, sizeof chunk, 0);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            buffer_.append(chunk, static_cast<size_t>(n));
            received_any_ = true;
            return std::nullopt;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return CtlError{kCtlCommandFailed,
                            "no reply from " + address_ + " within " + std::to_string(kTimeout.count()) + " s"};
        if (!received_any_)
            return CtlError{kCtlUnreachable, address_ + " closed the connection without replying" +
                                                 " (client not in [admin] allow, or too many admin connections?)"};
        const std::string why = n < 0 ? ": " + errno_text(errno) : std::string();
        return CtlError{kCtlCommandFailed, "connection to " + address_ + " ended before the reply was complete" + why};
    }

    int fd_;
    std::string address_;
    std::string buffer_;
    bool received_any_ = false;
};

// Copies one reply's body to `out` and returns when its last line arrives: nullopt for `ok`,
// the error otherwise.
std::optional<CtlError> read_reply(LineReader& reader, std::ostream& out) {
    constexpr std::string_view kErrorPrefix = "error: ";
    for (;;) {
        auto next = reader.next_line();
        if (auto* error = std::get_if<CtlError>(&next)) return *error;
        const std::string& line = std::get<std::string>(next);
        if (line == "ok") return std::nullopt;
        if (line.starts_with(kErrorPrefix)) return CtlError{kCtlCommandFailed, line.substr(kErrorPrefix.size())};
        out << line << '\n';
    }
}

std::string join_words(const std::vector<std::string>& words) {
    std::string line;
    for (const std::string& word : words) {
        if (!line.empty()) line += ' ';
        line += word;
    }
    return line;
}

bool has_line_break(std::string_view text) { return text.find_first_of("\r\n") != std::string_view::npos; }

std::optional<CtlError> check_arguments(const std::string& token, const std::vector<std::string>& words) {
    if (words.empty())
        return CtlError{kCtlUnreachable,
                        "usage: ringlb ctl <command> [arguments...] (ringlb ctl help lists the commands)"};
    // A line break would smuggle a second command (or a command before auth) onto the wire.
    if (has_line_break(token)) return CtlError{kCtlUnreachable, "the admin token must not contain line breaks"};
    for (const std::string& word : words)
        if (has_line_break(word)) return CtlError{kCtlUnreachable, "command words must not contain line breaks"};
    return std::nullopt;
}

std::optional<CtlError> converse(const std::string& address, const std::string& token,
                                 const std::vector<std::string>& words, std::ostream& out) {
    auto connected = connect_to_admin(address);
    if (auto* error = std::get_if<CtlError>(&connected)) return *error;
    const net::UniqueFd fd = std::move(std::get<net::UniqueFd>(connected));
    // Both lines in one write: the server answers them in order.
    std::string request = token.empty() ? std::string() : "auth " + token + "\n";
    request += join_words(words) + "\n";
    if (auto error = send_all(fd.get(), request, address)) return error;
    LineReader reader(fd.get(), address);
    if (!token.empty())
        if (auto error = read_reply(reader, out)) return error;
    auto error = read_reply(reader, out);
    out.flush();
    return error;
}

}  // namespace

int run_ctl(const std::string& admin_address, const std::string& token, const std::vector<std::string>& words,
            std::ostream& out, std::ostream& err) {
    std::optional<CtlError> error = check_arguments(token, words);
    if (!error) error = converse(admin_address, token, words, out);
    if (!error) return kCtlOk;
    err << "ringlb ctl: " << error->message << '\n';
    return error->exit_code;
}

int run_ctl(const std::string& admin_address, const std::string& token, const std::vector<std::string>& words) {
    return run_ctl(admin_address, token, words, std::cout, std::cerr);
}

}  // namespace ringlb::app
