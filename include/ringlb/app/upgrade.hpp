#pragma once
// Upgrades that drop nothing. On SIGUSR2 the running ringlb starts the binary it was started
// from (the file at that path now: a package upgrade puts the new version there) with the same
// command line and every listening socket and one-instance claim open in it (see
// net/handover.hpp). The new process reads its configuration, serves on the sockets it was
// given (binding only addresses that are new) and reports "ready" on a socket of its own; only
// then does the old process stop accepting, without closing the sockets for the new one, and let
// its sessions finish within shutdown_timeout. Until then the old one serves on: a new process
// that fails or does not become ready in time changes nothing.
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "ringlb/net/socket.hpp"

namespace ringlb::app {

// How long a new process has to report ready before the old one gives up on it.
inline constexpr std::chrono::seconds kUpgradeReadyTimeout{60};

// The binary this process runs (its path: the file there may have been replaced since) and its
// command line, read from /proc/self at start.
struct OwnCommand {
    std::string binary;
    std::vector<std::string> argv;
};
OwnCommand read_own_command();

// The environment for the new process: this one's, without what described this process alone
// (WATCHDOG_PID: the new process feeds the watchdog as the service's new main process; socket
// activation's variables), with RINGLB_HANDOVER=`handover`.
std::vector<std::string> environment_for_upgrade(const std::string& handover);

// The old process's view of the new one while it starts.
class UpgradeChild {
public:
    enum class Outcome { Waiting, Ready, Failed };

    UpgradeChild(pid_t pid, net::UniqueFd report, std::chrono::steady_clock::time_point deadline);
    UpgradeChild(UpgradeChild&&) = default;
    UpgradeChild& operator=(UpgradeChild&&) = default;

    // Without blocking: whether the new process has reported ready, is still starting, or has
    // failed (it exited, closed its report or missed the deadline; `why` says which, and a
    // process still running then is killed and reaped).
    Outcome poll(std::string* why);
    pid_t pid() const { return pid_; }

private:
    std::string reap_and_describe();

    pid_t pid_;
    net::UniqueFd report_;
    std::chrono::steady_clock::time_point deadline_;
    std::string received_;
};

// The new process's report, once it serves: "ready" on the socket it was given.
void report_ready(const net::UniqueFd& report);

}  // namespace ringlb::app
