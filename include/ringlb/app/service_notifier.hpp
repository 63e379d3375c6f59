#pragma once
// Telling a service manager (systemd, Type=notify) how ringlb is doing: the sd_notify protocol,
// one datagram of "NAME=value" lines per state change sent to the unix socket named by
// NOTIFY_SOCKET. Written here instead of linking libsystemd: the protocol is a sendto() on a
// datagram socket, and ringlb stays free of a runtime dependency that containers and other
// distributions would need too. Without NOTIFY_SOCKET every call does nothing.
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringlb/net/socket.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::app {

// Where the notifications go: a socket file ("/run/systemd/notify") or, for a name starting with
// '@', an address in the abstract namespace (the '@' stands for the leading NUL byte).
struct NotifyAddress {
    sockaddr_un address{};
    socklen_t length = 0;
};

// nullopt when `text` is neither an absolute path nor "@name", or does not fit in sun_path.
std::optional<NotifyAddress> parse_notify_address(std::string_view text);

// The watchdog interval from WATCHDOG_USEC, when it is meant for process `self` (WATCHDOG_PID
// unset, or naming `self`). nullopt when unset, zero, not a number, or meant for another process.
std::optional<std::chrono::microseconds> parse_watchdog_interval(const char* usec, const char* pid, pid_t self);

// "RELOADING=1\nMONOTONIC_USEC=<µs>": systemd takes the reload to have begun at that instant.
std::string reloading_message(uint64_t monotonic_usec);
// CLOCK_MONOTONIC in microseconds, the clock MONOTONIC_USEC is read against.
uint64_t monotonic_usec_now();

class ServiceNotifier {
public:
    // Disabled: sends nothing.
    explicit ServiceNotifier(Logger& log) : log_(&log) {}
    // Sends to `address`; with `watchdog`, the service manager expects WATCHDOG=1 at least that often.
    ServiceNotifier(Logger& log, const NotifyAddress& address, std::optional<std::chrono::microseconds> watchdog);
    // From NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. A NOTIFY_SOCKET that cannot be used is
    // logged and leaves the notifier disabled: ringlb serves all the same.
    static ServiceNotifier from_environment(Logger& log);

    bool enabled() const { return static_cast<bool>(socket_); }
    std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }

    // READY=1 (started, or a reload applied or failed) with the status line.
    void ready(std::string_view status) { send_with_status("READY=1", status); }
    void reloading() { send(reloading_message(monotonic_usec_now())); }
    void stopping(std::string_view status) { send_with_status("STOPPING=1", status); }
    // Only when it differs from the last status sent: the manager keeps showing the last one.
    void status(std::string_view status);
    void watchdog() { send("WATCHDOG=1"); }

    // One datagram; false when it could not be sent (the first failure is logged).
    bool send(std::string_view message);

private:
    void send_with_status(std::string_view state, std::string_view status);

    Logger* log_;
    net::UniqueFd socket_;
    NotifyAddress address_;
    std::optional<std::chrono::microseconds> watchdog_;
    std::string last_status_;
    bool failure_logged_ = false;
};

// Whether every worker's loop keeps turning, from their turn counters read by the control thread
// at each check: a worker whose counter has not moved for longer than `limit` is stuck.
class TurnWatch {
public:
    using Clock = std::chrono::steady_clock;
    TurnWatch(std::chrono::nanoseconds limit, Clock::time_point now) : limit_(limit), started_(now) {}
    // The first stuck worker, or nullopt when each turned within the limit.
    std::optional<size_t> stuck(const std::vector<uint64_t>& turns, Clock::time_point now);
    // How long worker `index` has not turned, as of the last check.
    std::chrono::nanoseconds idle_for(size_t index, Clock::time_point now) const;

private:
    struct Seen {
        uint64_t turns = 0;
        Clock::time_point changed;
    };
    std::chrono::nanoseconds limit_;
    Clock::time_point started_;
    std::vector<Seen> seen_;
};

}  // namespace ringlb::app
