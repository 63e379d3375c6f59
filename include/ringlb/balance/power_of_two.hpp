#pragma once
// Power of two choices: two different eligible servers drawn at random in proportion to weight;
// the one with fewer connections (see Server::connections) relative to its weight wins (the first drawn on a tie).
#include <random>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class PowerOfTwo final : public Balancer {
public:
    PowerOfTwo() : rng_(std::random_device{}()) {}
    explicit PowerOfTwo(uint64_t seed) : rng_(seed) {}  // reproducible, for tests

    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;

private:
    std::mt19937_64 rng_;
};

}  // namespace ringlb::balance
