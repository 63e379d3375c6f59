#pragma once
// Bandwidth limits (upload_rate / download_rate): a token bucket per session direction. A token
// is one byte; the bucket fills at the rate and holds at most burst() tokens. The session asks for
// its next receive only once min_chunk() tokens are there and receives at most the tokens it has,
// so a limited flow reads no faster than its rate and its buffers stay bounded. A receive may
// deliver a little more than it asked for (see Engine::recv): the bucket then goes into debt and
// the next receive waits that much longer. Engine-free: time is passed in.
#include <algorithm>
#include <cstdint>

#include "ringlb/core/timer_queue.hpp"

namespace ringlb::core {

// The parameters of one limit; rate 0 = unlimited.
struct ByteRate {
    uint64_t bytes_per_second = 0;

    bool limited() const { return bytes_per_second != 0; }
    // The smallest receive worth a syscall: 1/20 s of the rate, at least 512 bytes, at most 16 KiB.
    // Larger keeps the syscall rate low at high rates; smaller keeps a slow flow smooth.
    uint32_t min_chunk() const {
        return static_cast<uint32_t>(std::clamp<uint64_t>(bytes_per_second / 20, kMinChunk, kMaxChunk));
    }
    // What an idle session may send at once: 1/10 s of the rate, and never less than one chunk.
    uint64_t burst() const { return std::max<uint64_t>(bytes_per_second / 10, min_chunk()); }

    static constexpr uint64_t kMinChunk = 512;
    static constexpr uint64_t kMaxChunk = uint64_t{16} * 1024;
};

class TokenBucket {
public:
    // Tokens there at `now` (negative while in debt). A bucket never used starts full.
    int64_t available(const ByteRate& rate, Clock::time_point now);
    // Spends tokens for bytes received; may go into debt.
    void take(uint64_t bytes) { tokens_ -= static_cast<double>(bytes); }
    // When the bucket will hold `wanted` tokens (now or earlier: now). Call after available().
    Clock::time_point ready_at(const ByteRate& rate, uint64_t wanted, Clock::time_point now) const;

private:
    double tokens_ = 0;
    Clock::time_point refilled_{};  // epoch: never used
};

}  // namespace ringlb::core
