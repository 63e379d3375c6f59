#pragma once
// Pipes for the splice path (socket -> pipe -> socket, no copy through user space), shared by both
// engines. Like receive buffers, a pipe is taken only once bytes have arrived and goes back as
// soon as the bytes in it have been sent on: a session that waits for bytes holds none.
//
// - Bounded: at most max_pipes per worker, made on demand and kept for reuse. When none can be had
//   (all in use, the kernel refuses one, or makes it smaller than asked), the caller moves those
//   bytes by copying instead; each such case is counted by cause.
// - Empty pipes only are reused: one given back with bytes in it (a session cut short) is closed.
// - Free pipes hold descriptors that clients may need: the owner trims the pool now and then
//   (pipes that stayed free since the last trim are closed) and empties it when descriptors run
//   short.
#include <sys/types.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <optional>
#include <vector>

#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

// The metrics name them (admin::kPipeFallbackNames, in this order).
enum class PipeFallback : uint8_t {
    PoolEmpty,     // every pipe of the pool is in use (max_pipes)
    Refused,       // no descriptors for a new pipe (EMFILE, ENFILE, the data path's descriptor ceiling)
    Shrunk,        // the kernel made it smaller than asked (pipe-user-pages-soft reached)
    ResizeFailed,  // F_SETPIPE_SZ to the size asked for failed
    Unsupported,   // splice or pipe2 itself refused (ENOSYS, EPERM: a seccomp filter; EINVAL): no more tries
};
constexpr size_t kPipeFallbackCauses = 5;

struct PipeStats {
    uint32_t in_use = 0;  // holding a direction's bytes
    uint32_t free = 0;    // made, empty, ready for reuse
    uint64_t taken = 0;   // times a pipe was handed out
    std::array<uint64_t, kPipeFallbackCauses> fallbacks{};
};

// What one attempt to move bytes from a socket into a pipe gave.
struct SpliceIn {
    enum class Outcome : uint8_t { Moved, WouldBlock, NoPipe, Done };
    Outcome outcome = Outcome::Done;
    int32_t result = 0;  // Moved: bytes; Done: 0 (end of stream) or -errno
    uint16_t pipe = 0;   // Moved: the pipe that holds them
};

class PipePool {
public:
    // `capacity`: the bytes each pipe must be able to hold (the bytes in flight per direction).
    // `descriptor_ceiling`: the data path's first descriptor number not to keep. Pipes are not
    // kept within the last sixteenth below it either: descriptors are numbered lowest first, so
    // that part is left to sessions, and pipes in use near the limit cannot take it from them.
    // `refuse_splice`: a test hook (RINGLB_FAULT splice-refused): every splice fails with EPERM, as
    // under a seccomp filter that forbids it.
    PipePool(uint32_t max_pipes, uint32_t capacity, int descriptor_ceiling = INT_MAX, bool refuse_splice = false);

    bool enabled() const { return max_pipes_ > 0; }
    // The errno with which the kernel refused splice or pipe2 itself (ENOSYS, EPERM, EINVAL); 0
    // while it has not. Once it has, no pipe is offered again.
    int refusal() const { return refusal_; }
    uint32_t max_pipes() const { return max_pipes_; }

    // Moves at most max_bytes waiting on `socket` (non-blocking) into a pipe taken for them.
    SpliceIn fill_from(int socket, uint32_t max_bytes);
    // Moves at most `length` bytes of `pipe` to `socket` (non-blocking): bytes moved, -EAGAIN when
    // the socket has no room, or -errno.
    int32_t drain_to(uint16_t pipe, int socket, uint32_t length);
    // `empty`: every byte put in was taken out; otherwise the pipe is closed, not reused.
    void give(uint16_t pipe, bool empty);

    // Closes the free pipes: all of them, or (`all` false) as many as stayed free since the last
    // trim, the ones used least recently first. Returns how many were closed.
    uint32_t trim(bool all);

    PipeStats stats() const;

private:
    struct Pipe {
        net::UniqueFd read;
        net::UniqueFd write;
    };
    static bool readable(int socket);
    static bool at_urgent_mark(int socket);
    std::optional<uint16_t> take();
    std::optional<uint16_t> make();
    void count_fallback(PipeFallback cause) { ++stats_.fallbacks[static_cast<size_t>(cause)]; }
    void close_pipe(uint16_t id);
    ssize_t splice_into(int socket, int pipe, uint32_t max_bytes) const;
    static bool refused_by_kernel(int error) { return error == ENOSYS || error == EPERM || error == EINVAL; }

    uint32_t max_pipes_;
    int capacity_;
    int descriptor_ceiling_;  // for pipes: the data path's, less a sixteenth
    std::vector<Pipe> pipes_;           // by id; a closed one has no descriptors
    std::vector<uint16_t> free_;        // empty and open, most recently used last
    size_t fewest_free_ = 0;            // the fewest free pipes since the last trim: none of them was needed
    std::vector<uint16_t> closed_ids_;  // ids to reuse for the next pipe made
    uint32_t open_ = 0;
    int refusal_ = 0;           // the kernel refused splice or pipe2 once: copy from then on
    bool refuse_splice_;        // test hook
    PipeStats stats_;
};

}  // namespace ringlb::engine
