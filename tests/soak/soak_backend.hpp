#pragma once
// The soak's servers, each a poll() loop on its own thread in the soak process:
// - StreamBackend follows the script in each stream's header (checks the client's bytes, sends
//   its own, half-closes or resets when told) and can be killed (every connection reset, the
//   port closed, as when a server process crashes) and restarted on the same port;
// - BlackholeBackend accepts connections and never reads or writes.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "soak_io.hpp"
#include "soak_ledger.hpp"

namespace ringlb::soak {

class StreamBackend {
public:
    StreamBackend(std::uint64_t run_seed, Ledger& ledger);
    ~StreamBackend();
    StreamBackend(const StreamBackend&) = delete;
    StreamBackend& operator=(const StreamBackend&) = delete;

    std::uint16_t port() const { return port_; }
    std::string endpoint() const { return test::loopback_endpoint(port_); }
    // Resets every open connection and closes the listening socket: connects are then refused.
    void kill();
    // Listens on the same port again (no-op while running).
    void restart();
    bool running() const { return run_ != nullptr; }
    // Connections this backend holds open right now (0 while killed).
    std::size_t open_connections() const;

private:
    class Run;
    std::uint64_t run_seed_;
    Ledger& ledger_;
    std::uint16_t port_ = 0;
    std::unique_ptr<Run> run_;
};

class BlackholeBackend {
public:
    BlackholeBackend();
    ~BlackholeBackend();
    BlackholeBackend(const BlackholeBackend&) = delete;
    BlackholeBackend& operator=(const BlackholeBackend&) = delete;

    std::string endpoint() const { return test::loopback_endpoint(port_); }
    std::uint64_t accepted() const { return accepted_.load(); }

private:
    void run();

    UniqueFd listener_;
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> accepted_{0};
    std::thread thread_;
};

}  // namespace ringlb::soak
