#pragma once
// Unix domain stream sockets for the control ports (admin, metrics): access is governed by the
// socket file's permissions instead of an address allow list.
#include <sys/socket.h>
#include <sys/un.h>

#include <string>

#include "ringlb/net/socket.hpp"

namespace ringlb::net {

// Binds and listens on `path` (non-blocking, close-on-exec), file mode 0660. A socket file left
// behind by a process that is gone is removed first; a live one (something accepts on it) or a
// path that is not a socket is left alone and reported. Throws SystemError naming the path:
// "bind unix:/run/ringlb.sock: Address already in use".
UniqueFd listen_unix(const std::string& path, int backlog);

// The sockaddr for `path`, for bind() or connect(). False when the path is empty or too long
// for sun_path (108 bytes on Linux, including the terminating NUL).
bool make_unix_address(const std::string& path, sockaddr_un& address, socklen_t& length);

}  // namespace ringlb::net
