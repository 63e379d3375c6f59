#include "ringlb/net/listen_lock.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <optional>

namespace ringlb::net {

namespace {

constexpr const char* kClaimPrefix = "ringlb/listen/";

// An abstract address: sun_path starts with a NUL, the name follows, no file is created.
struct AbstractAddress {
    sockaddr_un address{};
    socklen_t length = 0;
};

AbstractAddress abstract_address(const std::string& name) {
    AbstractAddress out;
    out.address.sun_family = AF_UNIX;
    const size_t room = sizeof out.address.sun_path - 1;
    const size_t used = std::min(name.size(), room);
    std::memcpy(out.address.sun_path + 1, name.data(), used);
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + used);
    return out;
}

UniqueFd unix_stream_socket() {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) throw SystemError("socket(AF_UNIX) for a listen address claim", errno);
    return fd;
}

// The pid of the process listening on the claim, as the kernel recorded it at its listen(); none
// when it cannot be asked (its queue of such questions is full, or it has just gone).
std::optional<pid_t> holder_of(const AbstractAddress& claim) {
    const UniqueFd probe = unix_stream_socket();
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&claim.address), claim.length) != 0) return std::nullopt;
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(probe.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return std::nullopt;
    return credentials.pid;
}

}  // namespace

std::string ListenLock::name_for(const SocketAddress& address) { return kClaimPrefix + address.to_string(); }

std::optional<std::pair<SocketAddress, ListenLock>> ListenLock::adopt(UniqueFd fd) {
    sockaddr_un bound{};
    socklen_t length = sizeof bound;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &length) != 0 || bound.sun_family != AF_UNIX)
        return std::nullopt;
    const size_t path_length = length - offsetof(sockaddr_un, sun_path);
    if (path_length < 2 || bound.sun_path[0] != '\0') return std::nullopt;
    const std::string name(bound.sun_path + 1, path_length - 1);
    if (name.rfind(kClaimPrefix, 0) != 0) return std::nullopt;
    const std::optional<SocketAddress> address = SocketAddress::parse(name.substr(std::strlen(kClaimPrefix)));
    if (!address) return std::nullopt;
    return std::make_pair(*address, ListenLock(std::move(fd)));
}

ListenLock ListenLock::claim(const SocketAddress& address) {
    const AbstractAddress claim = abstract_address(name_for(address));
    UniqueFd fd = unix_stream_socket();
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&claim.address), claim.length) == 0) {
        // Listening lets a later process ask who holds it (SO_PEERCRED); nobody is ever accepted.
        if (::listen(fd.get(), 4) != 0) throw SystemError("listen on the claim of " + address.to_string(), errno);
        return ListenLock(std::move(fd));
    }
    if (errno != EADDRINUSE) throw SystemError("bind of the claim of listen address " + address.to_string(), errno);
    const std::optional<pid_t> holder = holder_of(claim);
    throw ListenClaimed("listen address " + address.to_string() + " is served by another ringlb process" +
                        (holder ? " (pid " + std::to_string(*holder) + ")" : std::string()) +
                        "; stop it first, or listen elsewhere");
}

}  // namespace ringlb::net
