#pragma once
// Many clients at once through ringlb to an echo backend: each connects, sends one line and is
// either served (the line comes back; the connection is kept open) or closed by ringlb without a
// byte. For tests of limits: what a burst gets, and that the rest is turned away at once.
#include <chrono>
#include <cstdint>
#include <vector>

#include "net_util.hpp"

namespace ringlb::test {

struct BurstOutcome {
    unsigned served = 0;      // the line came back: the session is held open in `held`
    unsigned closed = 0;      // ringlb ended it (or refused it) without a byte
    unsigned unanswered = 0;  // neither, within the deadline
};

// `count` clients connect to 127.0.0.1:port at once and each sends "hello\n". Served (and
// unanswered) connections are appended to `held`.
BurstOutcome echo_burst(std::uint16_t port, unsigned count, std::vector<UniqueFd>& held,
                        std::chrono::milliseconds timeout = 3000ms);

}  // namespace ringlb::test
