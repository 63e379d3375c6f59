#pragma once
// Smooth weighted round robin: each pick adds every eligible server's weight to its running
// score, takes the highest and lowers it by the sum of the weights. Weights 3:1 give a a b a ...,
// spread out rather than in bursts.
#include <cstdint>
#include <vector>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class RoundRobin final : public Balancer {
public:
    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;
    void weights_changed() override { scores_.assign(scores_.size(), 0); }

private:
    std::vector<int64_t> scores_;
};

}  // namespace ringlb::balance
