#include "ringlb/core/server_connections.hpp"

namespace ringlb::core {

// A count and what its last holder needs to take it out of the table: one allocation per server
// (the handle shares it, pointing at the count inside).
struct ServerConnections::Entry {
    Count count{0};
    ServerConnections* table;
    std::shared_ptr<const std::string> rule_id;  // shared by the rule's entries built together
    net::SocketAddress server;

    Entry(ServerConnections* owner, std::shared_ptr<const std::string> rule, const net::SocketAddress& address)
        : table(owner), rule_id(std::move(rule)), server(address) {}
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    ~Entry() { table->forget(*rule_id, server); }
};

ServerConnections::Handle ServerConnections::count(std::string_view rule_id, const net::SocketAddress& server) {
    return counts(rule_id, {server}).front();
}

std::vector<ServerConnections::Handle> ServerConnections::counts(std::string_view rule_id,
                                                                 const std::vector<net::SocketAddress>& servers) {
    if (servers.empty()) return {};  // no table for a rule without servers: nothing would remove it
    const auto shared_id = std::make_shared<const std::string>(rule_id);
    std::vector<Handle> handles;
    handles.reserve(servers.size());
    std::lock_guard lock(mutex_);
    RuleCounts& rule = table_[*shared_id];
    // The rule's earlier version, if any, holds mostly the same servers.
    rule.reserve(servers.size());
    for (const net::SocketAddress& server : servers) handles.push_back(count_locked(shared_id, rule, server));
    return handles;
}

ServerConnections::Handle ServerConnections::count_locked(const std::shared_ptr<const std::string>& rule_id,
                                                          RuleCounts& rule, const net::SocketAddress& server) {
    std::weak_ptr<Count>& slot = rule[server];
    if (Handle existing = slot.lock()) return existing;
    // An expired slot is taken over: its entry's release, still to come, then finds the slot in
    // use and leaves it (forget).
    auto entry = std::make_shared<Entry>(this, rule_id, server);
    Handle fresh(entry, &entry->count);
    slot = fresh;
    return fresh;
}

void ServerConnections::forget(const std::string& rule_id, const net::SocketAddress& server) {
    std::lock_guard lock(mutex_);
    const auto rule = table_.find(rule_id);
    if (rule == table_.end()) return;
    const auto slot = rule->second.find(server);
    if (slot == rule->second.end() || !slot->second.expired()) return;
    rule->second.erase(slot);
    if (rule->second.empty()) table_.erase(rule);
}

size_t ServerConnections::tracked() const {
    std::lock_guard lock(mutex_);
    size_t tracked = 0;
    for (const auto& [rule_id, rule] : table_) tracked += rule.size();
    return tracked;
}

}  // namespace ringlb::core
