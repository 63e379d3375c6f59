#pragma once
// Response time: the eligible server with the lowest moving average of connect time
// (exponentially weighted, alpha 0.3). Servers without a sample yet come first, in list order,
// so every server gets measured.
#include <vector>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class ResponseTime final : public Balancer {
public:
    static constexpr double kAlpha = 0.3;

    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;
    void connect_time(size_t server, std::chrono::microseconds elapsed) override;

    // The moving average in microseconds; negative when the server has no sample (for tests).
    double average(size_t server) const { return server < averages_.size() ? averages_[server] : -1.0; }

private:
    std::vector<double> averages_;  // microseconds; < 0 = no sample yet
};

}  // namespace ringlb::balance
