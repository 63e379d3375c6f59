#include "ringlb/balance/balancer.hpp"

#include "ringlb/balance/round_robin.hpp"

namespace ringlb::balance {

std::unique_ptr<Balancer> make_balancer(config::BalanceMode mode) {
    switch (mode) {
        case config::BalanceMode::RoundRobin: return std::make_unique<RoundRobin>();
    }
    return std::make_unique<RoundRobin>();
}

}  // namespace ringlb::balance
