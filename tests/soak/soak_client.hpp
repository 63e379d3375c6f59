#pragma once
// The soak's clients: each ClientDriver is one thread with one poll() loop that keeps a number
// of scripted streams open through ringlb, starting a new one whenever one ends, until told to
// stop starting; then it lets the open ones finish (or declares them hung at their deadline).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "soak_io.hpp"
#include "soak_ledger.hpp"

namespace ringlb::soak {

struct DriverSettings {
    std::uint16_t port = 0;          // ringlb's listener
    std::uint64_t run_seed = 0;
    std::uint64_t first_id = 1;      // this driver runs ids first_id, first_id + stride, ...
    std::uint64_t id_stride = 1;
    unsigned concurrency = 75;       // streams open at once
    Clock::time_point stop_starting; // no new stream after this
    std::chrono::milliseconds stream_deadline{90'000};  // a stream open this long is hung
};

class ClientDriver {
public:
    ClientDriver(const DriverSettings& settings, Ledger& ledger);
    ~ClientDriver();
    ClientDriver(const ClientDriver&) = delete;
    ClientDriver& operator=(const ClientDriver&) = delete;

    void join();
    std::uint64_t started() const { return started_.load(); }
    std::uint64_t open_streams() const { return open_.load(); }

private:
    void run();

    DriverSettings settings_;
    Ledger& ledger_;
    std::atomic<std::uint64_t> started_{0};
    std::atomic<std::uint64_t> open_{0};
    std::thread thread_;
};

}  // namespace ringlb::soak
