#include "ringlb/core/server_connections.hpp"

namespace ringlb::core {

ServerConnections::Handle ServerConnections::count(std::string_view rule_id, const net::SocketAddress& server) {
    std::string key = std::string(rule_id) + '\n' + server.to_string();  // a rule id never holds a newline
    std::lock_guard lock(mutex_);
    std::weak_ptr<Count>& entry = table_[key];
    if (Handle existing = entry.lock()) return existing;
    // The last holder's release removes the entry, unless a new count took its place meanwhile.
    Handle fresh(new Count(0), [this, key](Count* count) {
        delete count;
        forget(key);
    });
    entry = fresh;
    return fresh;
}

void ServerConnections::forget(const std::string& key) {
    std::lock_guard lock(mutex_);
    const auto it = table_.find(key);
    if (it != table_.end() && it->second.expired()) table_.erase(it);
}

size_t ServerConnections::tracked() const {
    std::lock_guard lock(mutex_);
    return table_.size();
}

}  // namespace ringlb::core
