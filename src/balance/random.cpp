#include "ringlb/balance/random.hpp"

namespace ringlb::balance {

std::optional<size_t> weighted_draw(std::span<const Server> servers, const Candidates& candidates,
                                    std::mt19937_64& rng, std::optional<size_t> except) {
    uint64_t total = 0;
    for (size_t i = 0; i < servers.size(); ++i)
        if (i != except && candidates.contains(i)) total += effective_weight(servers[i]);
    if (total == 0) return std::nullopt;
    uint64_t point = std::uniform_int_distribution<uint64_t>(0, total - 1)(rng);
    for (size_t i = 0; i < servers.size(); ++i) {
        if (i == except || !candidates.contains(i)) continue;
        if (point < effective_weight(servers[i])) return i;
        point -= effective_weight(servers[i]);
    }
    return std::nullopt;  // not reached
}

std::optional<size_t> Random::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                   std::span<const uint16_t> tried) {
    const Candidates candidates(servers, tried);
    if (candidates.empty()) return std::nullopt;
    return weighted_draw(servers, candidates, rng_);
}

}  // namespace ringlb::balance
