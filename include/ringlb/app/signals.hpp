#pragma once
// Signals, turned into flags for the control thread: SIGTERM/SIGINT stop (a second one stops at
// once), SIGHUP reloads the config, SIGUSR1 reopens the log file, SIGUSR2 upgrades (app/upgrade.hpp). They are blocked in every
// thread and taken by one watcher thread with sigtimedwait, so no handler ever runs inside the
// forwarding code.
#include <atomic>
#include <functional>
#include <thread>

#include "ringlb/util/log.hpp"

namespace ringlb::app {

struct SignalFlags {
    std::atomic<int> stop_requests{0};
    std::atomic<bool> reload{false};
    std::atomic<bool> reopen_log{false};
    std::atomic<bool> upgrade{false};
};

// Call first thing in main, before any thread starts: threads inherit the mask.
void block_control_signals();

class SignalWatcher {
public:
    // `wake` is called after each signal so the control thread notices at once.
    SignalWatcher(SignalFlags& flags, Logger& log, std::function<void()> wake);

private:
    static void watch(const std::stop_token& token, SignalFlags& flags, Logger& log, const std::function<void()>& wake);

    std::jthread thread_;
};

}  // namespace ringlb::app
