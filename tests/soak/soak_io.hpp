#pragma once
// Small socket and pacing helpers shared by the soak's clients and backends.
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "net_util.hpp"

namespace ringlb::soak {

using test::Clock;
using test::UniqueFd;
using namespace std::chrono_literals;

// Closes with SO_LINGER 0: the peer gets a RST instead of a FIN, as after a crash.
void close_abortively(UniqueFd& fd);

// A small receive buffer, so a slow reader pushes back on ringlb within a few KiB instead of
// the megabytes the kernel would otherwise absorb.
void shrink_receive_buffer(int fd);

// Lets a slow reader take 1 KiB per second for a while (then anything), so slow and fast
// readers share ringlb at once.
class ReadPacer {
public:
    ReadPacer() = default;  // unlimited
    ReadPacer(Clock::time_point start, std::chrono::milliseconds slow_for)
        : slow_until_(start + slow_for), start_(start), limited_(true) {}

    // How many of `wanted` bytes may be read now (0 = wait).
    std::size_t allowance(Clock::time_point now, std::size_t wanted) const;
    void consumed(std::size_t bytes) { consumed_ += bytes; }

private:
    static constexpr std::uint64_t kBytesPerSecond = 1024;
    Clock::time_point slow_until_{};
    Clock::time_point start_{};
    std::uint64_t consumed_ = 0;
    bool limited_ = false;
};

}  // namespace ringlb::soak
