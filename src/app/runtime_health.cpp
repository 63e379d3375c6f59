// Active health checks: the checker's targets follow the rules, its verdicts go to every worker.
#include "ringlb/app/runtime.hpp"

#include <unordered_map>

#include "ringlb/health/active.hpp"

namespace ringlb::app {

// Checks are keyed by rule id, not by slot: a rule changed by a reload or by DNS gets a new slot,
// but the checker keeps each server's state by address, so a server already UP stays UP and
// the change causes no outage.
uint32_t Runtime::health_key(const std::string& rule_id) {
    const auto [entry, added] = health_keys_.try_emplace(rule_id, static_cast<uint32_t>(health_keys_.size()));
    return entry->second;
}

const health::CheckTarget* Runtime::health_target(uint32_t key) const {
    for (const health::CheckTarget& target : health_targets_)
        if (target.rule_key == key) return &target;
    return nullptr;
}

template <typename Visit>
void Runtime::for_each_checked(const config::RuleConfig& rule, Visit visit) const {
    const auto key = health_keys_.find(rule.id);
    const health::CheckTarget* target = key == health_keys_.end() ? nullptr : health_target(key->second);
    if (!target) return;
    // The first index of each address, as a scan of the target's list would find it; a map keeps
    // this linear for rules with many servers.
    std::unordered_map<net::SocketAddress, size_t, net::SocketAddressHash> index;
    for (size_t i = 0; i < target->servers.size(); ++i) index.emplace(target->servers[i], i);
    for (size_t i = 0; i < rule.servers.size(); ++i) {
        const auto found = index.find(rule.servers[i].address);
        if (found != index.end()) visit(i, key->second, found->second);
    }
}

// For each server of `rule`, whether the checker has it UP right now (by address, as the
// checker keeps each server's state across changes of its rule).
std::vector<bool> Runtime::checked_up(const config::RuleConfig& rule) const {
    std::vector<bool> up(rule.servers.size(), false);
    for_each_checked(rule, [&](size_t server, uint32_t key, size_t checked) { up[server] = checker_->is_up(key, checked); });
    return up;
}

std::vector<health::ActiveChecker::Counts> Runtime::check_counts(const config::RuleConfig& rule) const {
    std::vector<health::ActiveChecker::Counts> counts(rule.servers.size());
    for_each_checked(rule, [&](size_t server, uint32_t key, size_t checked) { counts[server] = checker_->counts(key, checked); });
    return counts;
}

void Runtime::update_health_targets() {
    std::vector<health::CheckTarget> targets;
    for (size_t slot = 0; slot < slots_.size(); ++slot) {
        const auto& rule = slots_[slot].live;
        if (!rule || !rule->health.enabled) continue;
        health::CheckTarget target;
        target.rule_key = health_key(rule->id);
        target.rule_id = rule->id;
        for (const config::ServerConfig& server : rule->servers) {
            target.servers.push_back(server.address);
            target.sources.push_back(server.source.enabled() ? server.source : rule->source);
        }
        target.check = rule->health;
        targets.push_back(std::move(target));
    }
    health_targets_ = targets;  // first: set_targets may report at once
    checker_->set_targets(std::move(targets));
}

void Runtime::on_health_report(uint32_t key, size_t server, bool up) {
    const health::CheckTarget* target = health_target(key);
    if (!target || server >= target->servers.size()) return;
    const auto slot = live_slot(target->rule_id);
    if (!slot) return;
    const auto& servers = slots_[*slot].live->servers;
    for (size_t index = 0; index < servers.size(); ++index) {
        if (servers[index].address != target->servers[server]) continue;
        for (auto& worker : workers_)
            worker->post([slot = *slot, index, up](core::Forwarder& forwarder) {
                forwarder.set_server_checked(slot, index, up);
            });
    }
}

}  // namespace ringlb::app
