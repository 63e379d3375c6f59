#include "ringlb/balance/round_robin.hpp"

namespace ringlb::balance {

std::optional<size_t> RoundRobin::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                       std::span<const uint16_t> tried) {
    if (scores_.size() != servers.size()) scores_.assign(servers.size(), 0);
    const Candidates candidates(servers, tried);
    std::optional<size_t> best;
    int64_t total_weight = 0;
    for (size_t i = 0; i < servers.size(); ++i) {
        if (!candidates.contains(i)) continue;
        scores_[i] += effective_weight(servers[i]);
        total_weight += effective_weight(servers[i]);
        if (!best || scores_[i] > scores_[*best]) best = i;
    }
    if (best) scores_[*best] -= total_weight;
    return best;
}

}  // namespace ringlb::balance
