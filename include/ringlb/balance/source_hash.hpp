#pragma once
// Source hash: the client's IP picks a point on a consistent hash ring. Each server owns
// kPointsPerWeight x weight points (weights divided by their greatest common divisor first), at
// hashes of its address text and the point number; a client goes to the owner of the first point
// at or after its own hash, wrapping around. When that server is not a candidate (tried, full,
// weight 0, or the wrong backup tier) the walk continues clockwise to the next candidate, so the
// answer stays deterministic. Adding or removing one of N servers moves only about 1/N of the
// clients. The ring is built on first use and rebuilt when the servers or weights change
// (weights_changed(), or a different signature of the server list).
#include <cstdint>
#include <vector>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::balance {

class SourceHash final : public Balancer {
public:
    static constexpr unsigned kPointsPerWeight = 100;

    std::optional<size_t> pick(std::span<const Server> servers, const net::SocketAddress& client,
                               std::span<const uint16_t> tried) override;
    void weights_changed() override { ring_valid_ = false; }

    size_t ring_size() const { return ring_.size(); }  // for tests

private:
    struct Point {
        uint64_t hash;
        uint32_t server;
        bool operator<(const Point& other) const {
            return hash != other.hash ? hash < other.hash : server < other.server;
        }
    };

    static uint64_t signature(std::span<const Server> servers);
    void rebuild(std::span<const Server> servers);

    std::vector<Point> ring_;
    uint64_t signature_ = 0;
    bool ring_valid_ = false;
};

}  // namespace ringlb::balance
