#include "ringlb/balance/balancer.hpp"

#include "ringlb/balance/least_conn.hpp"
#include "ringlb/balance/master_standby.hpp"
#include "ringlb/balance/power_of_two.hpp"
#include "ringlb/balance/random.hpp"
#include "ringlb/balance/response_time.hpp"
#include "ringlb/balance/round_robin.hpp"
#include "ringlb/balance/source_hash.hpp"

namespace ringlb::balance {

Candidates::Candidates(std::span<const Server> servers, std::span<const uint16_t> tried)
    : servers_(servers), tried_(tried) {
    bool any_backup = false;
    for (size_t i = 0; i < servers.size(); ++i) {
        if (!eligible(servers[i], i, tried)) continue;
        if (!servers[i].backup) {
            backup_tier_ = false;
            empty_ = false;
            return;
        }
        any_backup = true;
    }
    backup_tier_ = true;
    empty_ = !any_backup;
}

std::unique_ptr<Balancer> make_balancer(config::BalanceMode mode, bool failback) {
    switch (mode) {
        case config::BalanceMode::RoundRobin: return std::make_unique<RoundRobin>();
        case config::BalanceMode::MasterStandby: return std::make_unique<MasterStandby>(failback);
        case config::BalanceMode::LeastConn: return std::make_unique<LeastConn>();
        case config::BalanceMode::Random: return std::make_unique<Random>();
        case config::BalanceMode::PowerOfTwo: return std::make_unique<PowerOfTwo>();
        case config::BalanceMode::SourceHash: return std::make_unique<SourceHash>();
        case config::BalanceMode::ResponseTime: return std::make_unique<ResponseTime>();
    }
    return std::make_unique<RoundRobin>();
}

}  // namespace ringlb::balance
