#pragma once
// The running forwarder (see app/runtime.hpp): worker threads, each with its own engine,
// listeners (SO_REUSEPORT when there are several) and session slab, and the control thread.
#include <functional>
#include <string>

#include "ringlb/config/config.hpp"
#include "ringlb/util/log.hpp"

namespace ringlb::app {

constexpr int kExitOk = 0;
constexpr int kExitRuntimeFailure = 1;
constexpr int kExitBadConfig = 2;

// Serves until SIGINT or SIGTERM (graceful: see Runtime); returns the process exit code. Call
// with the control signals blocked in every thread (block_control_signals() first thing in main).
// `overrides` re-applies command-line flags to every config read, at start and on reload.
int serve(const std::string& config_path, config::Config config, Logger& log,
          std::function<void(config::Config&)> overrides = {});

// CPUs this process may use: its affinity mask, lowered by a cgroup CPU quota if one is set.
unsigned usable_cpus();

}  // namespace ringlb::app
