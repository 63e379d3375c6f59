#include "ringlb/net/inherited_sockets.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <optional>

namespace ringlb::net {

namespace {

// The first descriptor systemd passes (SD_LISTEN_FDS_START).
constexpr int kFirstListenFd = 3;

std::optional<long> parse_number(const char* text) {
    if (text == nullptr) return std::nullopt;
    const std::string_view view(text);
    long value = 0;
    const auto [end, error] = std::from_chars(view.data(), view.data() + view.size(), value);
    if (error != std::errc() || end != view.data() + view.size() || value < 0) return std::nullopt;
    return value;
}

std::vector<std::string> split_names(const char* text) {
    std::vector<std::string> names;
    if (text == nullptr) return names;
    std::string_view rest(text);
    for (;;) {
        const size_t colon = rest.find(':');
        names.emplace_back(rest.substr(0, colon));
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
    }
    return names;
}

int socket_option(int fd, int option) {
    int value = 0;
    socklen_t length = sizeof value;
    if (::getsockopt(fd, SOL_SOCKET, option, &value, &length) != 0) throw SystemError("getsockopt fd " + std::to_string(fd), errno);
    return value;
}

bool same_socket(int a, int b) {
    struct stat first{}, second{};
    return ::fstat(a, &first) == 0 && ::fstat(b, &second) == 0 && first.st_dev == second.st_dev &&
           first.st_ino == second.st_ino;
}

}  // namespace

std::vector<ReceivedSocket> take_listen_fds(std::string* note) {
    const std::optional<long> pid = parse_number(std::getenv("LISTEN_PID"));
    const std::optional<long> count = parse_number(std::getenv("LISTEN_FDS"));
    const std::vector<std::string> names = split_names(std::getenv("LISTEN_FDNAMES"));
    const bool present = std::getenv("LISTEN_PID") != nullptr || std::getenv("LISTEN_FDS") != nullptr;
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
    std::vector<ReceivedSocket> sockets;
    if (!present) return sockets;
    if (!pid || !count) {
        if (note) *note = "LISTEN_PID/LISTEN_FDS malformed: no socket taken from the service manager";
        return sockets;
    }
    if (*pid != ::getpid()) {
        if (note) *note = "LISTEN_FDS is for pid " + std::to_string(*pid) + ", not this process: ignored";
        return sockets;
    }
    for (long i = 0; i < *count; ++i) {
        const int fd = kFirstListenFd + static_cast<int>(i);
        if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
            if (note) *note = "LISTEN_FDS names fd " + std::to_string(fd) + ", which is not open";
            continue;
        }
        sockets.push_back({UniqueFd(fd), static_cast<size_t>(i) < names.size() ? names[static_cast<size_t>(i)] : ""});
    }
    return sockets;
}

SocketAddress listening_address(int fd) {
    if (socket_option(fd, SO_TYPE) != SOCK_STREAM || socket_option(fd, SO_ACCEPTCONN) == 0)
        throw SystemError("fd " + std::to_string(fd) + " is not a listening stream socket", EINVAL);
    const SocketAddress address = local_address(fd);
    if (!address.is_v4() && !address.is_v6())
        throw SystemError("fd " + std::to_string(fd) + " is not bound to an IPv4 or IPv6 address", EAFNOSUPPORT);
    return address;
}

bool InheritedListeners::add(UniqueFd fd, bool held_elsewhere, std::string* why_not) {
    try {
        const SocketAddress address = listening_address(fd.get());
        // Both engines want non-blocking listeners (as listen_tcp makes them).
        set_nonblocking(fd.get(), true);
        std::lock_guard lock(mutex_);
        Entry& entry = by_address_[address];
        // Workers that shared one socket pass a copy each: one copy is enough.
        for (const UniqueFd& known : entry.fds)
            if (same_socket(known.get(), fd.get())) return true;
        entry.fds.push_back(std::move(fd));
        entry.held_elsewhere = entry.held_elsewhere || held_elsewhere;
        return true;
    } catch (const SystemError& e) {
        if (why_not) *why_not = e.what();
        return false;
    }
}

std::vector<InheritedListener> InheritedListeners::take(const SocketAddress& address, unsigned worker,
                                                        unsigned workers) {
    std::lock_guard lock(mutex_);
    std::vector<InheritedListener> out;
    const auto found = by_address_.find(address);
    if (found == by_address_.end() || found->second.fds.empty() || workers == 0) return out;
    Entry& entry = found->second;
    entry.taken = true;
    std::vector<size_t> mine;
    if (entry.fds.size() >= workers) {
        for (size_t i = worker; i < entry.fds.size(); i += workers) mine.push_back(i);
    } else {
        mine.push_back(worker % entry.fds.size());
    }
    for (size_t index : mine) {
        UniqueFd copy(::fcntl(entry.fds[index].get(), F_DUPFD_CLOEXEC, 0));
        if (!copy) throw SystemError("dup of the inherited listener on " + address.to_string(), errno);
        out.push_back({std::move(copy), entry.held_elsewhere, entry.fds.size() < workers});
    }
    return out;
}

std::vector<SocketAddress> InheritedListeners::untaken() const {
    std::lock_guard lock(mutex_);
    std::vector<SocketAddress> addresses;
    for (const auto& [address, entry] : by_address_)
        if (!entry.taken && !entry.fds.empty()) addresses.push_back(address);
    return addresses;
}

void InheritedListeners::release() {
    std::lock_guard lock(mutex_);
    by_address_.clear();
}

size_t InheritedListeners::socket_count() const {
    std::lock_guard lock(mutex_);
    size_t count = 0;
    for (const auto& [address, entry] : by_address_) count += entry.fds.size();
    return count;
}

bool InheritedListeners::empty() const {
    std::lock_guard lock(mutex_);
    return by_address_.empty();
}

}  // namespace ringlb::net
