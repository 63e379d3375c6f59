#include "ringlb/balance/master_standby.hpp"

namespace ringlb::balance {

std::optional<size_t> MasterStandby::pick(std::span<const Server> servers, const net::SocketAddress& /*client*/,
                                          std::span<const uint16_t> tried) {
    const Candidates candidates(servers, tried);
    if (!failback_ && current_ && *current_ < servers.size() && candidates.contains(*current_)) return current_;
    for (size_t i = 0; i < servers.size(); ++i) {
        if (candidates.contains(i)) {
            current_ = i;
            return i;
        }
    }
    return std::nullopt;
}

}  // namespace ringlb::balance
