#pragma once
// The client half of the integrity test: many connections driven by one poll() loop, each
// sending and receiving a seeded pseudo-random stream at the same time (full duplex, so a proxy
// that only moves one direction at a time, or loses/reorders bytes, is caught).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ringlb::test {

struct StreamClientResult {
    std::uint64_t id = 0;
    bool connected = false;
    std::uint64_t sent = 0;      // stream bytes, without the 8-byte id
    std::uint64_t received = 0;  // verified stream bytes
    std::optional<std::uint64_t> first_mismatch;
    bool saw_eof = false;
    std::string error;  // "" or what went wrong (reset, timeout, ...)

    bool ok(std::uint64_t expected) const {
        return connected && sent == expected && received == expected && !first_mismatch && saw_eof &&
               error.empty();
    }
    std::string describe() const;
};

// Opens `count` connections to 127.0.0.1:port with ids first_id, first_id+1, ...; each sends its
// id (8 bytes, little endian), then `bytes_each_way` bytes of PrngStream(client_to_server_seed(id))
// and shuts down writing, while verifying `bytes_each_way` bytes of
// PrngStream(server_to_client_seed(id)) followed by EOF. Stops at `timeout`.
std::vector<StreamClientResult> run_stream_clients(std::uint16_t port, unsigned count, std::uint64_t first_id,
                                                   std::uint64_t bytes_each_way,
                                                   std::chrono::milliseconds timeout);

}  // namespace ringlb::test
