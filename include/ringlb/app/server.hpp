#pragma once
// The running forwarder: one worker thread per configured thread, each with its own engine,
// listeners (SO_REUSEPORT when there are several) and session slab; limits shared. Stops on
// SIGINT/SIGTERM.
#include "ringlb/config/config.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::app {

constexpr int kExitOk = 0;
constexpr int kExitRuntimeFailure = 1;
constexpr int kExitBadConfig = 2;

// Serves until SIGINT or SIGTERM; returns the process exit code. Call with SIGINT and SIGTERM
// blocked in every thread (block_stop_signals() first thing in main).
int serve(const config::Config& config, Logger& log);

void block_stop_signals();

// CPUs this process may use: its affinity mask, lowered by a cgroup CPU quota if one is set.
unsigned usable_cpus();

}  // namespace ringlb::app
