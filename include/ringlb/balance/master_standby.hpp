#pragma once
// Master/standby: the first eligible server in list order takes every session; the next one
// takes over only while it cannot (down, tried for this client, weight 0, full).
// With failback (the default), sessions go back to an earlier server as soon as it is eligible
// again. Without it, the server that took over stays in use until it fails in turn, so a master
// that flaps does not drag clients back and forth.
#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class MasterStandby final : public Balancer {
public:
    explicit MasterStandby(bool failback = true) : failback_(failback) {}

    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;

private:
    bool failback_;
    std::optional<size_t> current_;  // without failback: the server in use until it fails
};

}  // namespace ringlb::balance
