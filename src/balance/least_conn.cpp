#include "ringlb/balance/least_conn.hpp"

namespace ringlb::balance {

std::optional<size_t> LeastConn::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                      std::span<const uint16_t> tried) {
    const size_t n = servers.size();
    if (n == 0) return std::nullopt;
    const Candidates candidates(servers, tried);
    std::optional<size_t> best;
    for (size_t step = 0; step < n; ++step) {
        const size_t i = (start_ + step) % n;
        if (!candidates.contains(i)) continue;
        if (!best || less_loaded(servers[i], servers[*best])) best = i;
    }
    if (best) start_ = (*best + 1) % n;
    return best;
}

}  // namespace ringlb::balance
