#include "ringlb/dns/expand.hpp"

#include <algorithm>
#include <tuple>
#include <unordered_set>

namespace ringlb::dns {

namespace {

config::ServerConfig server_at(const config::ServerConfig& entry, const net::SocketAddress& address) {
    config::ServerConfig server;
    server.address = address;
    server.weight = entry.weight;
    server.backup = entry.backup;
    server.max_connections = entry.max_connections;
    server.source = entry.source;
    return server;
}

}  // namespace

bool address_less(const net::SocketAddress& a, const net::SocketAddress& b) {
    // IpKey maps IPv4 into IPv6 space, so the family goes first to keep IPv4 addresses together.
    const net::IpKey ip_a = net::IpKey::of(a), ip_b = net::IpKey::of(b);
    const int family_a = a.family(), family_b = b.family();
    const uint16_t port_a = a.port(), port_b = b.port();
    return std::tie(family_a, ip_a.hi, ip_a.lo, port_a) < std::tie(family_b, ip_b.hi, ip_b.lo, port_b);
}

void canonicalize(std::vector<net::SocketAddress>& addresses) {
    std::sort(addresses.begin(), addresses.end(), address_less);
    addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
}

std::vector<net::SocketAddress> keep_places(const std::vector<net::SocketAddress>& places,
                                            std::vector<net::SocketAddress> addresses) {
    canonicalize(addresses);
    std::vector<net::SocketAddress> kept(places.size());
    std::vector<bool> placed(addresses.size(), false);
    for (size_t place = 0; place < places.size(); ++place) {
        if (places[place].family() == 0) continue;
        const auto found = std::lower_bound(addresses.begin(), addresses.end(), places[place], address_less);
        if (found == addresses.end() || *found != places[place]) continue;  // gone: its place is free
        kept[place] = *found;
        placed[static_cast<size_t>(found - addresses.begin())] = true;
    }
    size_t free_place = 0;
    for (size_t i = 0; i < addresses.size(); ++i) {
        if (placed[i]) continue;
        while (free_place < kept.size() && kept[free_place].family() != 0) ++free_place;
        if (free_place == kept.size()) kept.emplace_back();
        kept[free_place] = addresses[i];
    }
    while (!kept.empty() && kept.back().family() == 0) kept.pop_back();
    return kept;
}

config::RuleConfig expand_rule(const config::RuleConfig& written, const AddressSets& resolved,
                               std::vector<size_t>* origin) {
    config::RuleConfig expanded = written;
    expanded.servers.clear();
    if (origin) origin->clear();
    // A set of the addresses taken so far keeps this linear: rules may list 100,000 servers.
    std::unordered_set<net::SocketAddress, net::SocketAddressHash> taken;
    taken.reserve(written.servers.size());
    const auto add = [&](const config::ServerConfig& server, size_t from) {
        if (!taken.insert(server.address).second) return;
        expanded.servers.push_back(server);
        if (origin) origin->push_back(from);
    };
    for (size_t i = 0; i < written.servers.size(); ++i) {
        const config::ServerConfig& entry = written.servers[i];
        if (!entry.is_dns()) {
            add(entry, i);
            continue;
        }
        const auto found = resolved.find(Endpoint::of(entry));
        if (found == resolved.end()) continue;
        if (!entry.name.empty()) {
            for (size_t place = 0; place < found->second.size(); ++place) {
                if (found->second[place].family() == 0) continue;
                config::ServerConfig server = server_at(entry, found->second[place]);
                server.name = entry.name + std::to_string(place + 1);
                add(server, i);
            }
            continue;
        }
        std::vector<net::SocketAddress> addresses = found->second;
        std::erase_if(addresses, [](const net::SocketAddress& address) { return address.family() == 0; });
        canonicalize(addresses);
        for (const net::SocketAddress& address : addresses) add(server_at(entry, address), i);
    }
    return expanded;
}

std::vector<Target> targets_of(const std::vector<config::RuleConfig>& rules) {
    std::map<Endpoint, std::chrono::milliseconds> intervals;
    for (const config::RuleConfig& rule : rules) {
        for (const config::ServerConfig& server : rule.servers) {
            if (!server.is_dns()) continue;
            const auto [it, inserted] = intervals.emplace(Endpoint::of(server), server.resolve_interval);
            if (!inserted) it->second = std::min(it->second, server.resolve_interval);
        }
    }
    std::vector<Target> targets;
    targets.reserve(intervals.size());
    for (const auto& [endpoint, interval] : intervals) targets.push_back({endpoint, interval});
    return targets;
}

}  // namespace ringlb::dns
