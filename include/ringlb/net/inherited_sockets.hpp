#pragma once
// Listening sockets this process did not open itself: passed by the service manager (socket
// activation: LISTEN_FDS) or by the ringlb process it takes over from (see app/upgrade.hpp). A
// listen address that has sockets here is served on them instead of being bound.
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringlb/net/address.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::net {

// One descriptor received from outside, with the name it came with (informational).
struct ReceivedSocket {
    UniqueFd fd;
    std::string name;
};

// Socket activation. When LISTEN_PID names this process, takes the LISTEN_FDS descriptors from 3
// on (with their LISTEN_FDNAMES) and makes them close-on-exec; the three variables are removed
// from the environment in any case, so that no child sees them. Call before any thread starts
// (the environment is not thread-safe). `note` gets a line for the log when the variables were
// there but not for this process or malformed.
std::vector<ReceivedSocket> take_listen_fds(std::string* note);

// What a worker gets for one listen address.
struct InheritedListener {
    UniqueFd fd;
    // The service manager holds the same socket: it must only be closed, never shut down (that
    // would break the socket for the manager too).
    bool held_elsewhere = false;
    // Other workers of this process accept on the same socket (fewer sockets than workers).
    bool shared_by_workers = false;
};

// The inherited listening sockets, by the address each is bound to (getsockname). Workers take
// their share while they start (from their threads); release() then closes what is left, so that
// an address dropped by a reload and added back later is bound anew.
class InheritedListeners {
public:
    // Adds a listening TCP socket (a second copy of one already here is closed); false (and the
    // socket is closed) when it is not one.
    bool add(UniqueFd fd, bool held_elsewhere, std::string* why_not);

    // The sockets of `address` for worker `worker` of `workers`, as descriptors of its own. With
    // as many sockets as workers or more, worker i takes sockets i, i + workers, ...; with fewer,
    // it takes socket i modulo their number (workers share it and accept on it in turn). Empty
    // when none was inherited for `address`, or after release().
    std::vector<InheritedListener> take(const SocketAddress& address, unsigned worker, unsigned workers);

    // The addresses of sockets no worker took.
    std::vector<SocketAddress> untaken() const;
    // Closes every inherited descriptor this object still holds (the workers' own stay open).
    void release();
    bool empty() const;
    size_t socket_count() const;  // distinct sockets held

private:
    struct Entry {
        std::vector<UniqueFd> fds;
        bool held_elsewhere = false;
        bool taken = false;
    };
    mutable std::mutex mutex_;
    std::unordered_map<SocketAddress, Entry, SocketAddressHash> by_address_;
};

// The address a listening TCP socket is bound to; throws SystemError when `fd` is not a listening
// TCP socket of IPv4 or IPv6.
SocketAddress listening_address(int fd);

}  // namespace ringlb::net
