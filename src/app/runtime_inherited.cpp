// The runtime and listening sockets it did not open itself: socket activation (see
// net/inherited_sockets.hpp).
#include "ringlb/app/runtime.hpp"

namespace ringlb::app {

void Runtime::take_activated_listeners() {
    std::string note;
    std::vector<net::ReceivedSocket> sockets = net::take_listen_fds(&note);
    if (!note.empty()) log_.warn("socket activation: ", note);
    if (sockets.empty()) return;
    size_t usable = 0;
    for (net::ReceivedSocket& socket : sockets) {
        const int fd = socket.fd.get();
        std::string why_not;
        if (inherited_.add(std::move(socket.fd), true, &why_not)) {
            ++usable;
        } else {
            log_.warn("socket activation: fd ", fd, socket.name.empty() ? "" : " (" + socket.name + ")",
                      " closed: ", why_not);
        }
    }
    log_.info("socket activation: ", usable, " listening socket(s) from the service manager");
}

void Runtime::release_inherited_listeners() {
    for (const net::SocketAddress& address : inherited_.untaken())
        log_.warn("inherited listening socket on ", address, " matches no listen address: closed");
    inherited_.release();
}

}  // namespace ringlb::app
