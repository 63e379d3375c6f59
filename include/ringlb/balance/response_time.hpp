#pragma once
// Response time: the eligible server with the lowest moving average of connect time
// (exponentially weighted, alpha 0.3). Servers without a sample yet come first, in list order,
// so every server gets measured.
//
// The averages age: a server that picks pass over counts as half as slow every kHalfLife picks,
// so a server measured slow once is tried again after a while (one ten times slower than the
// best gets about one pick in 120) and wins again once it has recovered. Without aging the
// first server measured fastest would take every session for good, however the others fare.
// A trial's sample is averaged with the aged value that won the pick, so one good sample is
// enough for a recovered server; between the pick and its sample the server counts with its
// unaged average, so a burst of picks does not pile onto a server under trial.
#include <cstdint>
#include <vector>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class ResponseTime final : public Balancer {
public:
    static constexpr double kAlpha = 0.3;
    static constexpr double kHalfLife = 64;  // picks

    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;
    void connect_time(size_t server, std::chrono::microseconds elapsed) override;

    // The moving average in microseconds as last measured (not aged); negative when the server
    // has no sample (for tests).
    double average(size_t server) const { return server < measured_.size() ? measured_[server].average : -1.0; }

private:
    struct Measured {
        double average = -1.0;  // microseconds; < 0 = no sample yet
        double base = -1.0;     // what the next sample is averaged with: the value at the last pick
        uint64_t fresh_at = 0;  // picks_ when last chosen or measured: aging counts from here
    };

    double aged(const Measured& server) const;
    void ensure_size(size_t servers);

    std::vector<Measured> measured_;
    uint64_t picks_ = 0;
};

}  // namespace ringlb::balance
