#pragma once
// File descriptors and socket set-up. Plain syscalls only: the event APIs live in engine/.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "ringlb/net/address.hpp"

namespace ringlb::net {

// Owns one file descriptor; closes it on destruction.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) reset(std::exchange(other.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

// A system call failed; what() names the call, the object and the errno text.
class SystemError : public std::runtime_error {
public:
    SystemError(const std::string& what, int error_number);
    int error_number() const { return errno_; }

private:
    int errno_;
};

// Binds and listens (SO_REUSEADDR, IPV6_V6ONLY for v6, non-blocking, close-on-exec, TCP_NODELAY
// inherited by accepted sockets). With reuse_port, several workers each bind their own listener
// on the same address and the kernel spreads connections over them.
// With freebind (IP_FREEBIND / IPV6_FREEBIND) the address need not be on the host yet.
// Throws SystemError("bind 127.0.0.1:8080: Address already in use").
UniqueFd listen_tcp(const SocketAddress& address, int backlog = 4096, bool reuse_port = false, bool freebind = false);

// Binds a fresh outgoing socket to the local address `ip` (its port ignored) before connect().
// Without a port range (first_port 0) IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), so the
// same local port can serve different servers. With one, the ports are tried in turn from the
// `start`-th of the range on, skipping those in use. Returns 0 or -errno (-EADDRINUSE when every
// port of the range is taken). Hot path: no exceptions.
int bind_source(int fd, const SocketAddress& ip, uint16_t first_port, uint16_t last_port, uint32_t start);

// A fresh close-on-exec TCP socket of the address's family with TCP_NODELAY, non-blocking when
// asked (the epoll engine needs that; io_uring wants blocking sockets, or it may report EAGAIN).
// Returns -errno on failure (hot path: no exceptions).
int new_stream_socket(int family, bool nonblocking = true);
void set_nonblocking(int fd, bool nonblocking);
// Moves `fd` to the lowest free descriptor number when that is below `ceiling` (the old number is
// closed); false, with `fd` left as it was, when none below it is free.
bool renumber_below(UniqueFd& fd, int ceiling);

void set_nodelay(int fd);
// SO_LINGER {1, 0}: the next close() sends a reset instead of a FIN.
void set_abortive_close(int fd);
// Bytes the peer sent that wait in the socket's receive queue, unread; 0 when the call fails.
size_t unread_bytes(int fd);
// Takes a listener out of service at once, even while an io_uring accept still holds a
// reference to it (close() alone would keep the port busy until that request ends).
void stop_listening(int fd);
SocketAddress peer_address(int fd);
SocketAddress local_address(int fd);

}  // namespace ringlb::net
