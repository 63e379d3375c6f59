#pragma once
// Server lists and a client address shared by the balancer unit tests.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "ringlb/balance/balancer.hpp"

namespace ringlb::test {

// Servers on 127.0.0.1:9000, 9001, ... with the given weights.
inline std::vector<balance::Server> make_servers(std::initializer_list<unsigned> weights) {
    std::vector<balance::Server> servers;
    uint16_t port = 9000;
    for (unsigned weight : weights) {
        balance::Server server;
        server.address = *net::SocketAddress::parse("127.0.0.1:" + std::to_string(port++));
        server.weight = weight;
        servers.push_back(server);
    }
    return servers;
}

// `count` servers of weight 1.
inline std::vector<balance::Server> make_servers(size_t count) {
    std::vector<balance::Server> servers;
    for (size_t i = 0; i < count; ++i) {
        balance::Server server;
        server.address = *net::SocketAddress::parse("127.0.0.1:" + std::to_string(9000 + i));
        servers.push_back(server);
    }
    return servers;
}

inline const net::SocketAddress client = *net::SocketAddress::parse("192.0.2.1:5000");

}  // namespace ringlb::test
