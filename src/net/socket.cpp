#include "ringlb/net/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace ringlb::net {
namespace {

// Thread-safe errno text (std::strerror may share a static buffer).
std::string errno_text(int error_number) { return std::generic_category().message(error_number); }

void set_int_option(int fd, int level, int option, int value, const char* name, const SocketAddress& address) {
    if (setsockopt(fd, level, option, &value, sizeof value) != 0)
        throw SystemError(std::string("setsockopt ") + name + " " + address.to_string(), errno);
}

// Not in every libc's headers yet (Linux 4.15).
#ifdef IPV6_FREEBIND
constexpr int kIpv6Freebind = IPV6_FREEBIND;
#else
constexpr int kIpv6Freebind = 78;
#endif

}  // namespace

void UniqueFd::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

SystemError::SystemError(const std::string& what, int error_number)
    : std::runtime_error(what + ": " + errno_text(error_number)), errno_(error_number) {}

UniqueFd listen_tcp(const SocketAddress& address, int backlog, bool reuse_port, bool freebind) {
    UniqueFd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw SystemError("socket " + address.to_string(), errno);
    set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", address);
    // One listener per family: "[::]:80" must not also grab IPv4, which has its own rule entry.
    if (address.is_v6()) set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY", address);
    if (reuse_port) set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT", address);
    if (freebind && address.is_v6()) set_int_option(fd.get(), IPPROTO_IPV6, kIpv6Freebind, 1, "IPV6_FREEBIND", address);
    if (freebind && address.is_v4()) set_int_option(fd.get(), IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND", address);
    set_nodelay(fd.get());  // accepted sockets inherit it: no extra syscall per client
    if (::bind(fd.get(), address.sockaddr_ptr(), address.length()) != 0)
        throw SystemError("bind " + address.to_string(), errno);
    if (::listen(fd.get(), backlog) != 0) throw SystemError("listen " + address.to_string(), errno);
    return fd;
}

int bind_source(int fd, const SocketAddress& ip, uint16_t first_port, uint16_t last_port, uint32_t start) {
    SocketAddress local = ip;
    const auto set_port = [&](uint16_t port) {
        if (local.is_v6()) reinterpret_cast<sockaddr_in6*>(local.sockaddr_ptr())->sin6_port = htons(port);
        else reinterpret_cast<sockaddr_in*>(local.sockaddr_ptr())->sin_port = htons(port);
    };
    if (first_port == 0) {
        const int on = 1;
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on) != 0) return -errno;
        set_port(0);
        return ::bind(fd, local.sockaddr_ptr(), local.length()) == 0 ? 0 : -errno;
    }
    const uint32_t count = uint32_t{last_port} - first_port + 1;
    for (uint32_t tried = 0; tried < count; ++tried) {
        set_port(static_cast<uint16_t>(first_port + (start + tried) % count));
        if (::bind(fd, local.sockaddr_ptr(), local.length()) == 0) return 0;
        if (errno != EADDRINUSE) return -errno;
    }
    return -EADDRINUSE;
}

int new_stream_socket(int family, bool nonblocking) {
    const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -errno;
    set_nodelay(fd);
    return fd;
}

bool renumber_below(UniqueFd& fd, int ceiling) {
    UniqueFd lower(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!lower || lower.get() >= ceiling) return false;
    fd = std::move(lower);
    return true;
}

void set_nonblocking(int fd, bool nonblocking) {
    const int flags = ::fcntl(fd, F_GETFL);
    // Only a bad descriptor makes fcntl fail here: a caller bug worth an exception.
    if (flags < 0) throw SystemError("fcntl F_GETFL fd " + std::to_string(fd), errno);
    const int wanted = nonblocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (wanted != flags && ::fcntl(fd, F_SETFL, wanted) != 0)
        throw SystemError("fcntl F_SETFL fd " + std::to_string(fd), errno);
}

void set_nodelay(int fd) {
    // Best effort: a failure only costs latency, never correctness.
    const int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

void set_abortive_close(int fd) {
    const linger abortive{1, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
}

size_t unread_bytes(int fd) {
    int pending = 0;
    return ::ioctl(fd, FIONREAD, &pending) == 0 && pending > 0 ? static_cast<size_t>(pending) : 0;
}

// Both return an unspecified address (family 0) when the call fails, e.g. after a reset.
SocketAddress peer_address(int fd) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return {};
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), length);
}

SocketAddress local_address(int fd) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return {};
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage), length);
}

void stop_listening(int fd) { ::shutdown(fd, SHUT_RDWR); }

}  // namespace ringlb::net
