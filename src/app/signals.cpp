#include "ringlb/app/signals.hpp"

#include <pthread.h>
#include <signal.h>

namespace ringlb::app {

namespace {

sigset_t control_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, signal);
    return set;
}

}  // namespace

void block_control_signals() {
    const sigset_t set = control_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

SignalWatcher::SignalWatcher(SignalFlags& flags, Logger& log, std::function<void()> wake)
    : thread_([&flags, &log, wake = std::move(wake)](const std::stop_token& token) { watch(token, flags, log, wake); }) {}

void SignalWatcher::watch(const std::stop_token& token, SignalFlags& flags, Logger& log,
                          const std::function<void()>& wake) {
    const sigset_t set = control_signals();
    const timespec poll_interval{0, 200L * 1000 * 1000};
    while (!token.stop_requested()) {
        const int signal = sigtimedwait(&set, nullptr, &poll_interval);
        if (signal <= 0) continue;
        switch (signal) {
            case SIGHUP:
                log.info("received SIGHUP: reloading the configuration");
                flags.reload.store(true);
                break;
            case SIGUSR1:
                flags.reopen_log.store(true);
                break;
            case SIGUSR2:
                log.info("received SIGUSR2: starting the binary anew to take over (upgrade)");
                flags.upgrade.store(true);
                break;
            default: {
                const int count = ++flags.stop_requests;
                log.info("received ", signal == SIGINT ? "SIGINT" : "SIGTERM",
                         count == 1 ? ": stopping gracefully (a second signal stops at once)" : ": stopping now");
                break;
            }
        }
        wake();
    }
}

}  // namespace ringlb::app
