#pragma once
// Test-only fault injection, read once at start from the environment variable RINGLB_FAULT and
// handed to each worker's engine options (nothing global; engines never read the environment).
// A comma-separated list of:
//   engine-poll-fails-after:N[@W]  the engine's poll() fails on its N-th call and every later one,
//                                  as a broken ring or epoll set would (worker W only, or every worker)
//   uring-unavailable@W            worker W cannot set up io_uring ("auto" falls back to epoll)
//   completion-queue:N             io_uring rings of N submission and N completion entries (N a power
//                                  of two from 1 to 4096), to make the completion queue overflow
//   worker-stall:MS[@W]            worker W (or every worker) sleeps MS milliseconds inside its loop,
//                                  once, a second after it starts serving: a stuck worker, for the
//                                  service watchdog
//   pipe-trim:MS                   free pipes are trimmed every MS milliseconds instead of every 2 s
//   splice-refused                 every splice fails with EPERM, as under a seccomp filter that
//                                  forbids it
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ringlb/engine/engine.hpp"

namespace ringlb::app {

struct FaultHooks {
    std::string text;  // as given, for the log line that says they are active
    uint32_t poll_fails_after = 0;  // 0 = no poll fault
    std::optional<unsigned> poll_fault_worker;  // nullopt = every worker
    std::optional<unsigned> uring_unavailable_worker;
    uint32_t completion_queue = 0;
    uint32_t stall_ms = 0;  // 0 = no stall
    std::optional<unsigned> stall_worker;  // nullopt = every worker
    uint32_t pipe_trim_ms = 0;  // 0 = the default interval
    bool splice_refused = false;

    bool any() const { return !text.empty(); }
    // Sets the hooks that concern worker `worker` in its engine options.
    void apply(unsigned worker, engine::EngineOptions& options) const;
    // How long worker `worker` stalls once (0: it does not).
    uint32_t stall_for(unsigned worker) const { return !stall_worker || *stall_worker == worker ? stall_ms : 0; }
};

// Throws std::invalid_argument naming the item that is wrong.
FaultHooks parse_fault_hooks(std::string_view text);

}  // namespace ringlb::app
