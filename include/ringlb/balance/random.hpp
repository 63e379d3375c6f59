#pragma once
// Weighted random: each eligible server is chosen with probability weight / sum of weights.
#include <random>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

// A draw in proportion to weight among `candidates`, skipping index `except` (if any); nullopt
// when nothing is left. Shared by Random and PowerOfTwo.
std::optional<size_t> weighted_draw(std::span<const Server> servers, const Candidates& candidates,
                                    std::mt19937_64& rng, std::optional<size_t> except = std::nullopt);

class Random final : public Balancer {
public:
    Random() : rng_(std::random_device{}()) {}
    explicit Random(uint64_t seed) : rng_(seed) {}  // reproducible, for tests

    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;

private:
    std::mt19937_64 rng_;
};

}  // namespace ringlb::balance
