#include "ringlb/app/service_notifier.hpp"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace ringlb::app {

namespace {

template <typename Number>
std::optional<Number> parse_whole(std::string_view text) {
    Number value{};
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

}  // namespace

std::optional<NotifyAddress> parse_notify_address(std::string_view text) {
    NotifyAddress out;
    out.address.sun_family = AF_UNIX;
    const bool abstract = !text.empty() && text.front() == '@';
    if (text.size() < 2 || (!abstract && text.front() != '/')) return std::nullopt;
    // A path needs room for its terminating NUL; an abstract name is counted by the length alone.
    if (text.size() + (abstract ? 0 : 1) > sizeof out.address.sun_path) return std::nullopt;
    std::memcpy(out.address.sun_path, text.data(), text.size());
    if (abstract) out.address.sun_path[0] = '\0';
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + text.size() + (abstract ? 0 : 1));
    return out;
}

std::optional<std::chrono::microseconds> parse_watchdog_interval(const char* usec, const char* pid, pid_t self) {
    if (!usec) return std::nullopt;
    if (pid) {
        const auto meant_for = parse_whole<pid_t>(pid);
        if (!meant_for || *meant_for != self) return std::nullopt;
    }
    const auto interval = parse_whole<uint64_t>(usec);
    if (!interval || *interval == 0 || *interval > uint64_t{1} << 62) return std::nullopt;
    return std::chrono::microseconds(*interval);
}

std::string reloading_message(uint64_t monotonic_usec) {
    return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec);
}

uint64_t monotonic_usec_now() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1'000;
}

ServiceNotifier::ServiceNotifier(Logger& log, const NotifyAddress& address,
                                 std::optional<std::chrono::microseconds> watchdog)
    : log_(&log), address_(address), watchdog_(watchdog) {
    // Non-blocking: the control thread never waits on the service manager; a full queue loses
    // one message (logged), not the admin port's responsiveness.
    socket_ = net::UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!socket_) {
        log_->warn("NOTIFY_SOCKET: cannot create a unix datagram socket: ", std::strerror(errno),
                   "; the service manager is not told about readiness");
        watchdog_.reset();
    }
}

ServiceNotifier ServiceNotifier::from_environment(Logger& log) {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    if (!socket || !*socket) return ServiceNotifier(log);
    const auto address = parse_notify_address(socket);
    if (!address) {
        log.warn("NOTIFY_SOCKET=", socket, ": not an absolute path or @abstract name that fits a unix "
                 "socket address; the service manager is not told about readiness");
        return ServiceNotifier(log);
    }
    return ServiceNotifier(log, *address,
                           parse_watchdog_interval(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"), ::getpid()));
}

void ServiceNotifier::status(std::string_view status) {
    if (!enabled() || status == last_status_) return;
    if (send("STATUS=" + std::string(status))) last_status_ = std::string(status);
}

void ServiceNotifier::send_with_status(std::string_view state, std::string_view status) {
    if (send(std::string(state) + "\nSTATUS=" + std::string(status))) last_status_ = std::string(status);
}

bool ServiceNotifier::send(std::string_view message) {
    if (!enabled()) return false;
    const ssize_t sent = ::sendto(socket_.get(), message.data(), message.size(), MSG_NOSIGNAL,
                                  reinterpret_cast<const sockaddr*>(&address_.address), address_.length);
    if (sent == static_cast<ssize_t>(message.size())) return true;
    if (!failure_logged_) {
        failure_logged_ = true;
        const std::string_view name = message.substr(0, message.find('='));
        log_->warn("NOTIFY_SOCKET: sending ", name, " failed: ", sent < 0 ? std::strerror(errno) : "short write",
                   " (later failures are not logged)");
    }
    return false;
}

std::optional<size_t> TurnWatch::stuck(const std::vector<uint64_t>& turns, Clock::time_point now) {
    if (seen_.size() != turns.size()) seen_.assign(turns.size(), Seen{0, started_});
    std::optional<size_t> first;
    for (size_t i = 0; i < turns.size(); ++i) {
        if (turns[i] != seen_[i].turns) seen_[i] = {turns[i], now};
        if (!first && now - seen_[i].changed > limit_) first = i;
    }
    return first;
}

std::chrono::nanoseconds TurnWatch::idle_for(size_t index, Clock::time_point now) const {
    if (index >= seen_.size()) return std::chrono::nanoseconds(0);
    return now - seen_[index].changed;
}

}  // namespace ringlb::app
