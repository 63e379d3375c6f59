#include "ringlb/balance/response_time.hpp"

#include <cmath>

namespace ringlb::balance {

void ResponseTime::ensure_size(size_t servers) {
    if (measured_.size() < servers) measured_.resize(servers);
}

double ResponseTime::aged(const Measured& server) const {
    const auto passed = static_cast<double>(picks_ - server.fresh_at);
    return server.average * std::exp2(-passed / kHalfLife);
}

void ResponseTime::connect_time(size_t server, std::chrono::microseconds elapsed) {
    ensure_size(server + 1);
    const double sample = static_cast<double>(elapsed.count() < 0 ? 0 : elapsed.count());
    Measured& entry = measured_[server];
    entry.average = entry.base < 0 ? sample : kAlpha * sample + (1.0 - kAlpha) * entry.base;
    entry.base = entry.average;
    entry.fresh_at = picks_;
}

std::optional<size_t> ResponseTime::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                         std::span<const uint16_t> tried) {
    ensure_size(servers.size());
    const Candidates candidates(servers, tried);
    std::optional<size_t> best;
    double best_value = 0;
    for (size_t i = 0; i < servers.size(); ++i) {
        if (!candidates.contains(i)) continue;
        if (measured_[i].average < 0) return i;  // not measured yet: measure it now
        const double value = aged(measured_[i]);
        if (!best || value < best_value) {
            best = i;
            best_value = value;
        }
    }
    ++picks_;
    if (best) {
        // Its sample will be averaged with the value that won; until it comes, the unaged average
        // stands (see the header).
        measured_[*best].base = best_value;
        measured_[*best].fresh_at = picks_;
    }
    return best;
}

}  // namespace ringlb::balance
