#pragma once
// One ringlb per listen address. With SO_REUSEPORT (threads above 1) a second process binds the
// same address without an error and the kernel splits the clients between the two: an operator
// who starts a second copy by mistake never hears of it. So each address a process listens on is
// also claimed with an abstract unix socket named after it: only one process can bind that name
// (in a network namespace, as for the address itself), and it goes away with the process.
#include <optional>
#include <string>
#include <utility>

#include "ringlb/net/address.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::net {

// Another process holds the claim; what() names the address and, where the kernel says, its pid.
class ListenClaimed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class ListenLock {
public:
    // Claims `address` for this process. Throws ListenClaimed when another process holds it, or
    // SystemError when the claim cannot be made at all.
    static ListenLock claim(const SocketAddress& address);

    // The abstract socket name that stands for `address` (without its leading NUL).
    static std::string name_for(const SocketAddress& address);

    // A claim another ringlb made and passed on (an upgrade): the listen address it stands for,
    // or nullopt (and `fd` is closed) when `fd` is no claim.
    static std::optional<std::pair<SocketAddress, ListenLock>> adopt(UniqueFd fd);
    // The descriptor, for passing the claim on to a new process.
    int fd() const { return fd_.get(); }

private:
    explicit ListenLock(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

}  // namespace ringlb::net
