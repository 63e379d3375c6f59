#pragma once
// Master/standby: always the first eligible server in list order. The first server takes every
// session while it can; the next one takes over only while it cannot (tried for this client,
// weight 0, full), and sessions go back to the first as soon as it is eligible again.
#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class MasterStandby final : public Balancer {
public:
    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;
};

}  // namespace ringlb::balance
