#include "ringlb/balance/source_hash.hpp"

#include <algorithm>
#include <numeric>
#include <string>

namespace ringlb::balance {
namespace {

// A 64-bit finalizer with good avalanche (the splitmix64 output function).
uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

// FNV-1a over the text, then mixed: a stable hash that does not depend on the standard library.
uint64_t hash_text(std::string_view text) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (unsigned char c : text) {
        h ^= c;
        h *= 0x100000001B3ULL;
    }
    return mix(h);
}

uint64_t combine(uint64_t seed, uint64_t value) { return mix(seed ^ (value + 0x9E3779B97F4A7C15ULL + (seed << 6))); }

uint64_t hash_client(const net::SocketAddress& client) {
    const net::IpKey key = net::IpKey::of(client);
    return mix(combine(mix(key.hi), key.lo));
}

}  // namespace

uint64_t SourceHash::signature(std::span<const Server> servers) {
    // Cheap enough for every pick: the binary IP, port and weight of each server, in order.
    uint64_t h = mix(servers.size());
    for (const Server& server : servers) {
        const net::IpKey key = net::IpKey::of(server.address);
        h = combine(h, key.hi);
        h = combine(h, key.lo);
        h = combine(h, (uint64_t{server.address.port()} << 32) | server.weight);
    }
    return h;
}

void SourceHash::rebuild(std::span<const Server> servers) {
    unsigned divisor = 0;
    for (const Server& server : servers) divisor = std::gcd(divisor, server.weight);
    ring_.clear();
    for (size_t i = 0; i < servers.size(); ++i) {
        if (servers[i].weight == 0) continue;
        const uint64_t base = hash_text(servers[i].address.to_string());
        const uint64_t points = uint64_t{kPointsPerWeight} * (servers[i].weight / divisor);
        for (uint64_t replica = 0; replica < points; ++replica)
            ring_.push_back({combine(base, replica), static_cast<uint32_t>(i)});
    }
    std::sort(ring_.begin(), ring_.end());
    signature_ = signature(servers);
    ring_valid_ = true;
}

std::optional<size_t> SourceHash::pick(std::span<const Server> servers, const net::SocketAddress& client,
                                       std::span<const uint16_t> tried) {
    if (!ring_valid_ || signature(servers) != signature_) rebuild(servers);
    const Candidates candidates(servers, tried);
    if (candidates.empty() || ring_.empty()) return std::nullopt;
    const uint64_t h = hash_client(client);
    auto it = std::lower_bound(ring_.begin(), ring_.end(), Point{h, 0});
    for (size_t step = 0; step < ring_.size(); ++step, ++it) {
        if (it == ring_.end()) it = ring_.begin();
        if (candidates.contains(it->server)) return it->server;
    }
    return std::nullopt;
}

}  // namespace ringlb::balance
