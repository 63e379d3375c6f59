#include "net_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>

namespace ringlb::test {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
}

int UniqueFd::release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
}

void UniqueFd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

namespace {

// A sockaddr for the loopback address of `family` with `port`.
struct LoopbackAddress {
    sockaddr_storage storage{};
    socklen_t length = 0;
    const sockaddr* ptr() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

LoopbackAddress make_loopback(std::uint16_t port, Family family) {
    LoopbackAddress address;
    if (family == Family::V4) {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage);
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.length = sizeof(sockaddr_in);
    } else {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        v6->sin6_addr = in6addr_loopback;
        address.length = sizeof(sockaddr_in6);
    }
    return address;
}

int domain_of(Family family) { return family == Family::V4 ? AF_INET : AF_INET6; }

// Close-on-exec everywhere: a socket leaked into the forked ringlb would keep connections alive
// after the test closed its end, and tests would then wait for a FIN that never comes.
UniqueFd new_tcp_socket(Family family) {
    return UniqueFd(::socket(domain_of(family), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

std::runtime_error system_error(const std::string& what) {
    return std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

int millis_until(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

const char* loopback_ip(Family family) { return family == Family::V4 ? "127.0.0.1" : "::1"; }

std::string loopback_endpoint(std::uint16_t port, Family family) {
    if (family == Family::V4) return std::string("127.0.0.1:") + std::to_string(port);
    return std::string("[::1]:") + std::to_string(port);
}

bool ipv6_loopback_available() {
    UniqueFd fd = new_tcp_socket(Family::V6);
    if (!fd.valid()) return false;
    LoopbackAddress address = make_loopback(0, Family::V6);
    return ::bind(fd.get(), address.ptr(), address.length) == 0;
}

std::uint16_t find_free_port(Family family) {
    // The port is released on return, so the kernel may hand it out again to the next call: a
    // test that took a "dead" server port and then a listener port got the same one, and its
    // dead server answered. So no port is given twice in one test process.
    static std::mutex mutex;
    static std::set<std::uint16_t> given;
    const std::lock_guard lock(mutex);
    for (int attempt = 0; attempt < 100; ++attempt) {
        UniqueFd fd = new_tcp_socket(family);
        if (!fd.valid()) throw system_error("socket");
        LoopbackAddress address = make_loopback(0, family);
        if (::bind(fd.get(), address.ptr(), address.length) != 0) throw system_error("bind port 0");
        const std::uint16_t port = local_port(fd.get());
        if (given.insert(port).second) return port;
    }
    throw std::runtime_error("find_free_port: 100 ports in a row were handed out before");
}

UniqueFd listen_on_loopback(std::uint16_t port, Family family, int backlog) {
    UniqueFd fd = new_tcp_socket(family);
    if (!fd.valid()) throw system_error("socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    LoopbackAddress address = make_loopback(port, family);
    if (::bind(fd.get(), address.ptr(), address.length) != 0)
        throw system_error("bind " + loopback_endpoint(port, family));
    if (::listen(fd.get(), backlog) != 0) throw system_error("listen");
    return fd;
}

std::uint16_t local_port(int fd) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0)
        throw system_error("getsockname");
    if (storage.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
    return ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port);
}

void set_nonblocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

UniqueFd start_connect(std::uint16_t port, Family family) {
    UniqueFd fd = new_tcp_socket(family);
    if (!fd.valid()) return fd;
    LoopbackAddress address = make_loopback(port, family);
    if (::connect(fd.get(), address.ptr(), address.length) != 0 && errno != EINPROGRESS) return {};
    return fd;
}

namespace {

// Waits for a non-blocking connect on `fd` to finish; the socket, or an invalid one if it failed.
UniqueFd finish_connect(UniqueFd fd, std::chrono::milliseconds timeout) {
    if (!fd.valid()) return fd;
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return {};
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) return {};
    return fd;
}

}  // namespace

UniqueFd connect_to(std::uint16_t port, Family family, std::chrono::milliseconds timeout) {
    return finish_connect(start_connect(port, family), timeout);
}

UniqueFd connect_from(const char* source_ipv4, std::uint16_t port, std::chrono::milliseconds timeout) {
    UniqueFd fd = new_tcp_socket(Family::V4);
    if (!fd.valid()) return fd;
    sockaddr_in source{};
    source.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source_ipv4, &source.sin_addr) != 1) return {};
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&source), sizeof source) != 0) return {};
    LoopbackAddress address = make_loopback(port, Family::V4);
    if (::connect(fd.get(), address.ptr(), address.length) != 0 && errno != EINPROGRESS) return {};
    return finish_connect(std::move(fd), timeout);
}

bool send_all(int fd, std::string_view data, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, millis_until(deadline)) <= 0) return false;
    }
    return true;
}

const char* to_string(ReadEnd end) {
    switch (end) {
        case ReadEnd::Eof: return "EOF";
        case ReadEnd::Reset: return "reset";
        case ReadEnd::Timeout: return "timeout";
        case ReadEnd::Error: return "error";
        case ReadEnd::Limit: return "limit reached";
    }
    return "?";
}

bool wait_readable(int fd, std::chrono::milliseconds timeout) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

namespace {

// The shared read loop: reads at most `max_chunk` bytes per call until `done(data)` says so, the
// stream ends, or the deadline passes.
template <typename Done>
ReadResult read_loop(int fd, std::chrono::milliseconds timeout, std::size_t max_chunk, Done done) {
    ReadResult result;
    auto deadline = Clock::now() + timeout;
    char buffer[16384];
    for (;;) {
        if (done(result.data)) {
            result.end = ReadEnd::Limit;
            return result;
        }
        ssize_t n = ::recv(fd, buffer, std::min(max_chunk, sizeof buffer), 0);
        if (n > 0) {
            result.data.append(buffer, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            result.end = ReadEnd::Eof;
            return result;
        }
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) {
            result.end = ReadEnd::Reset;
            return result;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            result.end = ReadEnd::Error;
            return result;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, millis_until(deadline)) <= 0) {
            result.end = ReadEnd::Timeout;
            return result;
        }
    }
}

}  // namespace

ReadResult read_until_closed(int fd, std::chrono::milliseconds timeout) {
    return read_loop(fd, timeout, SIZE_MAX, [](const std::string&) { return false; });
}

ReadResult read_exactly(int fd, std::size_t count, std::chrono::milliseconds timeout) {
    return read_loop(fd, timeout, SIZE_MAX, [&](const std::string& data) { return data.size() >= count; });
}

ReadResult read_line(int fd, std::chrono::milliseconds timeout) {
    ReadResult result = read_loop(fd, timeout, 1, [](const std::string& data) {
        return !data.empty() && data.back() == '\n';
    });
    if (result.end == ReadEnd::Limit) result.data.pop_back();
    return result;
}

std::string fetch_name(std::uint16_t port, Family family, std::chrono::milliseconds timeout) {
    UniqueFd fd = connect_to(port, family, timeout);
    if (!fd.valid()) return "";
    ReadResult line = read_line(fd.get(), timeout);
    return line.end == ReadEnd::Limit ? line.data : "";
}

std::string open_session(std::uint16_t port, UniqueFd& client) {
    client = connect_to(port);
    if (!client.valid()) return "<connect failed>";
    ReadResult line = read_line(client.get(), 5s);
    if (line.end == ReadEnd::Limit) return line.data;
    std::string how = "<";
    how += to_string(line.end);
    how += '>';
    return how;
}

}  // namespace ringlb::test
