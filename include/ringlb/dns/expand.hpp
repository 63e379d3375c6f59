#pragma once
// DNS server entries as the workers see them. A rule is kept "as written" (with its dns entries,
// which is what `dump rules` writes) and handed to the workers "expanded": each dns entry replaced
// by one plain server per address its name resolves to. Expansion is a pure function of the rule
// and the latest address sets, so an unchanged set gives the same expanded rule (and the same
// rule_to_toml text), which is what keeps a rule's slot and state when nothing moved.
#include <chrono>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ringlb/config/config.hpp"
#include "ringlb/net/address.hpp"

namespace ringlb::dns {

// What a dns entry resolves: a name and the port its addresses get.
struct Endpoint {
    std::string name;
    uint16_t port = 0;

    auto operator<=>(const Endpoint&) const = default;
    std::string to_string() const { return name + ":" + std::to_string(port); }
    static Endpoint of(const config::ServerConfig& server) { return {server.dns_name, server.dns_port}; }
};

// The latest good address set of each name; a name missing here has not resolved yet.
using AddressSets = std::map<Endpoint, std::vector<net::SocketAddress>>;

// A total order on addresses (family, then IP bytes, then port), so that sets can be compared
// and expanded rules do not depend on the order a DNS server answered in.
bool address_less(const net::SocketAddress& a, const net::SocketAddress& b);
// Sorts and removes duplicates: the canonical form of one name's address set.
void canonicalize(std::vector<net::SocketAddress>& addresses);

// A name's addresses in places: an address keeps its place while the name keeps resolving to it,
// a new address takes the lowest free place (in address order), and a place left free holds an
// empty address (family 0) until a new one takes it. Named dns entries number their servers by
// place ("web1", "web2"), so a server keeps its name, its metrics series and its admin handle
// across answers in any order and across other addresses coming and going.
std::vector<net::SocketAddress> keep_places(const std::vector<net::SocketAddress>& places,
                                            std::vector<net::SocketAddress> addresses);

// `written` with each dns entry replaced, in place, by one server per address of its name (sorted,
// with the entry's weight, backup, max_connections and source; with a `name`, in place order and
// named name + place number, see keep_places); a name with no addresses yet contributes none. An address that is already a server earlier in the list is skipped, so a server appears
// once. `origin`, when given, receives for each expanded server the index of the written entry
// it came from.
config::RuleConfig expand_rule(const config::RuleConfig& written, const AddressSets& resolved,
                               std::vector<size_t>* origin = nullptr);

// Every dns entry of `rules`, once each, with the shortest resolve_interval any entry asks for.
struct Target {
    Endpoint endpoint;
    std::chrono::milliseconds interval{0};
};
std::vector<Target> targets_of(const std::vector<config::RuleConfig>& rules);

}  // namespace ringlb::dns
