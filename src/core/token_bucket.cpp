#include "ringlb/core/token_bucket.hpp"

#include <chrono>
#include <cmath>

namespace ringlb::core {

int64_t TokenBucket::available(const ByteRate& rate, Clock::time_point now) {
    const auto burst = static_cast<double>(rate.burst());
    if (refilled_ == Clock::time_point{}) {
        tokens_ = burst;
    } else if (now > refilled_) {
        const std::chrono::duration<double> elapsed = now - refilled_;
        tokens_ = std::min(burst, tokens_ + elapsed.count() * static_cast<double>(rate.bytes_per_second));
    }
    refilled_ = std::max(refilled_, now);
    return static_cast<int64_t>(std::floor(tokens_));
}

Clock::time_point TokenBucket::ready_at(const ByteRate& rate, uint64_t wanted, Clock::time_point now) const {
    const double missing = static_cast<double>(wanted) - tokens_;
    if (missing <= 0 || rate.bytes_per_second == 0) return now;
    const std::chrono::duration<double> wait(missing / static_cast<double>(rate.bytes_per_second));
    // Rounded up, so the timer never fires a hair before the tokens are there.
    return now + std::chrono::ceil<std::chrono::microseconds>(wait);
}

}  // namespace ringlb::core
