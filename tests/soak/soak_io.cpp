#include "soak_io.hpp"

#include <sys/socket.h>

#include <algorithm>

namespace ringlb::soak {

void close_abortively(UniqueFd& fd) {
    if (!fd.valid()) return;
    const linger abortive{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
    fd.reset();
}

void shrink_receive_buffer(int fd) {
    const int bytes = 4096;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

std::size_t ReadPacer::allowance(Clock::time_point now, std::size_t wanted) const {
    if (!limited_ || now >= slow_until_) return wanted;
    const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - start_).count();
    // One second's worth up front, then the steady rate.
    const std::uint64_t budget = kBytesPerSecond + kBytesPerSecond * static_cast<std::uint64_t>(elapsed_ms) / 1000;
    if (budget <= consumed_) return 0;
    return static_cast<std::size_t>(std::min<std::uint64_t>(budget - consumed_, wanted));
}

}  // namespace ringlb::soak
