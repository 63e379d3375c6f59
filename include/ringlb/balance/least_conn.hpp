#pragma once
// Least connections: the eligible server with the fewest connections (connects in progress and
// established sessions, over all workers) relative to its weight (a.conns * b.weight < b.conns * a.weight). Among equally loaded servers the search starts one
// past the previous pick, so ties rotate instead of always landing on the first server.
#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class LeastConn final : public Balancer {
public:
    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;

private:
    size_t start_ = 0;  // where the next search begins
};

}  // namespace ringlb::balance
