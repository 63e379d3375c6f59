#include "ringlb/balance/response_time.hpp"

namespace ringlb::balance {

void ResponseTime::connect_time(size_t server, std::chrono::microseconds elapsed) {
    if (server >= averages_.size()) averages_.resize(server + 1, -1.0);
    const double sample = static_cast<double>(elapsed.count() < 0 ? 0 : elapsed.count());
    double& average = averages_[server];
    average = average < 0 ? sample : kAlpha * sample + (1.0 - kAlpha) * average;
}

std::optional<size_t> ResponseTime::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                         std::span<const uint16_t> tried) {
    if (averages_.size() < servers.size()) averages_.resize(servers.size(), -1.0);
    const Candidates candidates(servers, tried);
    std::optional<size_t> best;
    for (size_t i = 0; i < servers.size(); ++i) {
        if (!candidates.contains(i)) continue;
        if (averages_[i] < 0) return i;  // not measured yet: measure it now
        if (!best || averages_[i] < averages_[*best]) best = i;
    }
    return best;
}

}  // namespace ringlb::balance
