#include "ringlb/engine/pipe_pool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ringlb::engine {

namespace {

constexpr unsigned kSpliceFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;

}  // namespace

PipePool::PipePool(uint32_t max_pipes, uint32_t capacity, int descriptor_ceiling, bool refuse_splice)
    : max_pipes_(std::min<uint32_t>(max_pipes, UINT16_MAX)),
      capacity_(static_cast<int>(capacity)),
      descriptor_ceiling_(descriptor_ceiling == INT_MAX ? INT_MAX : descriptor_ceiling - descriptor_ceiling / 16),
      refuse_splice_(refuse_splice) {}

// A pipe that can hold `capacity_` bytes. Below that, the kernel shrank it: a user over
// pipe-user-pages-soft gets small pipes, and may not grow them either.
std::optional<uint16_t> PipePool::make() {
    int ends[2];
    if (::pipe2(ends, O_NONBLOCK | O_CLOEXEC) != 0) {
        const int error = errno;
        if (refused_by_kernel(error)) refusal_ = error;
        count_fallback(refusal_ != 0 ? PipeFallback::Unsupported : PipeFallback::Refused);
        return std::nullopt;
    }
    Pipe pipe{net::UniqueFd(ends[0]), net::UniqueFd(ends[1])};
    if (pipe.write.get() >= descriptor_ceiling_ || pipe.read.get() >= descriptor_ceiling_) {
        count_fallback(PipeFallback::Refused);
        return std::nullopt;
    }
    const int size = ::fcntl(pipe.write.get(), F_GETPIPE_SZ);
    if (size < capacity_ && ::fcntl(pipe.write.get(), F_SETPIPE_SZ, capacity_) < 0) {
        // 64 KiB is every pipe's default: smaller means the kernel gave less than usual.
        count_fallback(size < 65536 ? PipeFallback::Shrunk : PipeFallback::ResizeFailed);
        return std::nullopt;
    }
    uint16_t id;
    if (closed_ids_.empty()) {
        id = static_cast<uint16_t>(pipes_.size());
        pipes_.push_back(std::move(pipe));
    } else {
        id = closed_ids_.back();
        closed_ids_.pop_back();
        pipes_[id] = std::move(pipe);
    }
    ++open_;
    return id;
}

std::optional<uint16_t> PipePool::take() {
    if (refusal_ != 0) {
        count_fallback(PipeFallback::Unsupported);
        return std::nullopt;
    }
    if (!free_.empty()) {
        const uint16_t id = free_.back();
        free_.pop_back();
        fewest_free_ = std::min(fewest_free_, free_.size());
        return id;
    }
    if (open_ >= max_pipes_) {
        count_fallback(PipeFallback::PoolEmpty);
        return std::nullopt;
    }
    return make();
}

// Whether a read of `socket` would not block: bytes, the end of the stream or an error wait. Asked
// with poll(), which leaves a pending error for the splice to report: a read, even a peek, would
// take it, and the splice would then see a reset connection as a clean end of stream.
bool PipePool::readable(int socket) {
    pollfd ready{socket, POLLIN | POLLRDHUP, 0};
    return ::poll(&ready, 1, 0) != 0;
}

// Whether the next byte to read is TCP urgent (out-of-band) data.
bool PipePool::at_urgent_mark(int socket) {
    int at_mark = 0;
    return ::ioctl(socket, SIOCATMARK, &at_mark) == 0 && at_mark != 0;
}

SpliceIn PipePool::fill_from(int socket, uint32_t max_bytes) {
    // Engines try a socket before they know it has bytes. With no free pipe at hand, a new pipe
    // (or a fallback counted, and the direction sent to copying) is only for bytes that arrived.
    if (free_.empty() && !readable(socket)) return {SpliceIn::Outcome::WouldBlock, 0, 0};
    const auto pipe = take();
    if (!pipe) return {SpliceIn::Outcome::NoPipe, 0, 0};
    const ssize_t moved = splice_into(socket, pipes_[*pipe].write.get(), max_bytes);
    if (moved > 0) {
        ++stats_.taken;
        return {SpliceIn::Outcome::Moved, static_cast<int32_t>(moved), *pipe};
    }
    const int error = moved == 0 ? 0 : errno;
    if (refused_by_kernel(error)) {
        // Nothing was moved, so the bytes wait in the socket for a receive: this worker copies
        // from now on rather than fail every session that meets a kernel or a seccomp filter
        // without splice, and keeps no pipe it cannot use.
        refusal_ = error;
        close_pipe(*pipe);
        count_fallback(PipeFallback::Unsupported);
        return {SpliceIn::Outcome::NoPipe, 0, 0};
    }
    free_.push_back(*pipe);  // still empty
    if (error != EAGAIN) return {SpliceIn::Outcome::Done, -error, 0};
    // A splice always stops at TCP urgent (out-of-band) data, which only a receive gets past, and
    // then reports EAGAIN whatever waits behind it: the caller copies from there on (not counted
    // as a fallback: no pipe was lacking).
    if (at_urgent_mark(socket)) return {SpliceIn::Outcome::NoPipe, 0, 0};
    return {SpliceIn::Outcome::WouldBlock, 0, 0};
}

ssize_t PipePool::splice_into(int socket, int pipe, uint32_t max_bytes) const {
    if (refuse_splice_) {
        errno = EPERM;
        return -1;
    }
    return ::splice(socket, nullptr, pipe, nullptr, max_bytes, kSpliceFlags);
}

int32_t PipePool::drain_to(uint16_t pipe, int socket, uint32_t length) {
    const ssize_t moved = ::splice(pipes_[pipe].read.get(), nullptr, socket, nullptr, length, kSpliceFlags);
    return moved >= 0 ? static_cast<int32_t>(moved) : -errno;
}

void PipePool::give(uint16_t pipe, bool empty) {
    if (empty) {
        free_.push_back(pipe);
        return;
    }
    close_pipe(pipe);
}

void PipePool::close_pipe(uint16_t id) {
    pipes_[id] = Pipe{};
    closed_ids_.push_back(id);
    --open_;
}

uint32_t PipePool::trim(bool all) {
    const size_t count = all ? free_.size() : std::min(fewest_free_, free_.size());
    // free_ has the most recently used last: the front ones have waited longest.
    for (size_t i = 0; i < count; ++i) close_pipe(free_[i]);
    free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(count));
    fewest_free_ = free_.size();
    return static_cast<uint32_t>(count);
}

PipeStats PipePool::stats() const {
    PipeStats out = stats_;
    out.free = static_cast<uint32_t>(free_.size());
    out.in_use = open_ - out.free;
    return out;
}

}  // namespace ringlb::engine
