#include "ringlb/net/unix_socket.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace ringlb::net {
namespace {

std::string describe(const std::string& path) { return "unix:" + path; }

// Whether a process accepts on the socket file at `path`. A non-blocking connect never waits:
// it succeeds (or reports a full backlog) for a live listener and is refused for a stale file.
bool socket_file_is_live(const sockaddr_un& address, socklen_t length) {
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!probe) return false;
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), length) == 0) return true;
    return errno == EAGAIN || errno == EINPROGRESS;
}

// bind() fails with EADDRINUSE while the file exists, even when nobody listens on it any more
// (a previous run that was killed): remove such a leftover, but never a live socket or a file
// that is not a socket at all.
void remove_stale_socket_file(const std::string& path, const sockaddr_un& address, socklen_t length) {
    struct stat status {};
    if (::lstat(path.c_str(), &status) != 0) {
        if (errno == ENOENT) return;
        throw SystemError("stat " + describe(path), errno);
    }
    if (!S_ISSOCK(status.st_mode)) throw SystemError("bind " + describe(path) + " (not a socket file)", EEXIST);
    if (socket_file_is_live(address, length))
        throw SystemError("bind " + describe(path) + " (another process listens on it)", EADDRINUSE);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        throw SystemError("remove stale socket file " + describe(path), errno);
}

}  // namespace

bool make_unix_address(const std::string& path, sockaddr_un& address, socklen_t& length) {
    address = sockaddr_un{};
    address.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address.sun_path) return false;
    std::memcpy(address.sun_path, path.data(), path.size());
    length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return true;
}

UniqueFd listen_unix(const std::string& path, int backlog) {
    sockaddr_un address{};
    socklen_t length = 0;
    if (!make_unix_address(path, address, length))
        throw SystemError("bind " + describe(path), path.empty() ? EINVAL : ENAMETOOLONG);
    remove_stale_socket_file(path, address, length);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw SystemError("socket " + describe(path), errno);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0)
        throw SystemError("bind " + describe(path), errno);
    // Before listen(): no client can connect while the file still has the umask's mode.
    if (::chmod(path.c_str(), 0660) != 0) {
        const int error = errno;
        ::unlink(path.c_str());
        throw SystemError("chmod 0660 " + describe(path), error);
    }
    if (::listen(fd.get(), backlog) != 0) {
        const int error = errno;
        ::unlink(path.c_str());
        throw SystemError("listen " + describe(path), error);
    }
    return fd;
}

}  // namespace ringlb::net
