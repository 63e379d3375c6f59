#pragma once
// Test-only fault injection inside an engine, configured through EngineOptions (the application
// reads RINGLB_FAULT once at start and fills them in; engines never read the environment).
#include <cstdint>

namespace ringlb::engine {

// EngineOptions::fail_poll_after: poll() fails on its N-th call and on every later one, as an
// engine whose ring or epoll set broke for good would.
class PollFault {
public:
    explicit PollFault(uint32_t fail_after) : calls_left_(fail_after) {}
    // Counts one poll() call; true when it must fail.
    bool strikes() {
        if (calls_left_ == 0) return false;  // no fault asked for
        if (calls_left_ == 1) return true;
        --calls_left_;
        return false;
    }

private:
    uint32_t calls_left_;
};

}  // namespace ringlb::engine
