#include "ringlb/balance/power_of_two.hpp"

#include "ringlb/balance/random.hpp"

namespace ringlb::balance {

std::optional<size_t> PowerOfTwo::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                       std::span<const uint16_t> tried) {
    const Candidates candidates(servers, tried);
    if (candidates.empty()) return std::nullopt;
    const auto first = weighted_draw(servers, candidates, rng_);
    if (!first) return std::nullopt;
    const auto second = weighted_draw(servers, candidates, rng_, first);
    if (!second) return first;  // the only candidate
    return less_loaded(servers[*second], servers[*first]) ? second : first;
}

}  // namespace ringlb::balance
