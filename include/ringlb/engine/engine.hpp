#pragma once
// The engine interface: a proactor. The core asks for operations (accept, connect, recv, send,
// shutdown) and later receives one completion per operation through poll(). The io_uring engine
// hands the requests to the kernel; the epoll engine performs each syscall when readiness
// arrives. Neither ever completes a request inside the call that asked for it, so the core never
// re-enters itself.
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ringlb/engine/pipe_pool.hpp"
#include "ringlb/net/address.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

using UserData = uint64_t;  // opaque to the engine; the core packs slot, generation and op in it

struct Completion {
    UserData user_data = 0;
    int32_t result = 0;       // >= 0: bytes moved or accepted fd; < 0: -errno
    bool more = false;        // accept and recv: the request stays armed and will complete again
    bool has_buffer = false;  // recv only: result bytes are in buffer `buffer_id`
    uint16_t buffer_id = 0;
    bool has_pipe = false;  // splice_in only: result bytes are in pipe `pipe_id`
    uint16_t pipe_id = 0;
    // recv only: the peer's FIN came right behind these bytes, and the engine has seen it already;
    // no byte will follow. (The end of the stream may still complete on its own as well.)
    bool end_follows = false;
};

// One piece of a gathered send: the bytes of several receive buffers leave in one request.
struct SendPart {
    const std::byte* data = nullptr;
    uint32_t length = 0;
};
constexpr size_t kMaxSendParts = 8;
constexpr uint32_t kMaxReceiveBuffer = 32 * 1024;

class BufferBudget;

class CompletionHandler {
public:
    // Called once per poll() after waiting, before that round's completions: a handler can take
    // one timestamp for the whole batch instead of one per completion.
    virtual void on_batch_start() {}
    virtual void on_completion(const Completion& completion) = 0;

protected:
    ~CompletionHandler() = default;
};

// Completions of requests an engine performs at once, during the handler's own call (a splice or
// send on a ready socket, a shutdown), are handed over after that call returns, in the same
// poll(): in up to this many passes over what each pass produced. A stream whose every request
// completes at once moves several steps per round without a trip through the kernel for each, and
// still cannot hold the worker from the others.
constexpr unsigned kDeliveryPasses = 4;

struct EngineOptions {
    // Bytes per receive buffer. 32 KiB: in side-by-side iperf3 runs over loopback, one stream
    // through a saturated worker moved 15-30 % more than with 16 KiB; a chunk's 16-bit offsets
    // allow no more.
    uint32_t buffer_size = kMaxReceiveBuffer;
    uint32_t initial_buffers = 2048;  // receive buffers ready at start; more are made on demand
    uint32_t max_buffers = 65536;     // the most this engine's pool may hold (at most 65,536)
    // The receive-buffer memory the whole process may hold (max_buffer_memory), shared by every
    // worker's engine; null: the engine's own, of max_buffers buffers.
    std::shared_ptr<BufferBudget> budget;
    uint32_t queue_depth = 1024;  // submission queue entries (io_uring)
    uint32_t completion_queue_entries = 0;  // io_uring; 0 = 8 x queue_depth (completions can outnumber submissions)
    // io_uring: receive with multishot requests capped by the caller's room, where the kernel
    // takes such caps (a start-up probe tells); otherwise one request per receive.
    bool multishot_recv = true;
    // The splice path: pipes this engine may hold at once (0: none, every byte is copied), each
    // able to hold pipe_capacity bytes.
    uint32_t max_pipes = 0;
    uint32_t pipe_capacity = 64 * 1024;
    // A pipe whose descriptors would be numbered this or above is closed again (counted as
    // refused): the descriptors above stay for the control thread, as for sessions.
    int pipe_descriptor_ceiling = INT_MAX;
    // Test hooks (see app/faults.hpp): poll() fails on its N-th call and every later one (0 =
    // never); io_uring counts as unavailable, so "auto" falls back to epoll; every splice fails
    // with EPERM.
    uint32_t fail_poll_after = 0;
    bool refuse_uring = false;
    bool refuse_splice = false;
};

// What the receive buffers of one engine are doing, for the metrics.
struct BufferStats {
    uint32_t held = 0;     // by sessions: received bytes not yet sent on
    uint32_t offered = 0;  // waiting in the kernel for bytes to arrive (io_uring)
    uint32_t made = 0;     // buffers this engine's pool has made so far
    uint32_t resident_free = 0;  // free buffers whose pages are not given back yet
};

class Engine {
public:
    virtual ~Engine() = default;

    virtual std::string_view name() const = 0;  // "uring" or "epoll"
    virtual std::string features() const = 0;   // what the start-up log line shows in brackets
    // Whether sockets handed to this engine should be O_NONBLOCK (accepted ones are made so by it).
    virtual bool wants_nonblocking_sockets() const = 0;

    // Repeating request: completes once per accepted connection (more = true) until it completes
    // with more = false (an error, or the kernel ended it), after which the caller re-arms.
    virtual void accept(int listen_fd, UserData user_data) = 0;
    // One connection, then more = false: for a listening socket several workers accept on. A
    // request that stays armed may stay first in line for every connection, so the others would
    // get none; one that re-arms after each connection takes its turn behind them.
    virtual void accept_one(int listen_fd, UserData user_data) { accept(listen_fd, user_data); }
    virtual void connect(int fd, const net::SocketAddress& to, UserData user_data) = 0;
    // The engine takes a buffer only once bytes arrive: an idle connection holds none. Each
    // completion names one buffer (at most buffer_size() bytes); the caller gives it back with
    // release_buffer(). A receive may complete several times (more = true: it stays armed) until
    // it has delivered max_bytes in total, reached the end of the stream or an error, or the
    // engine ended it (more = false); the caller asks again only after that. So max_bytes is the
    // room the caller has, and every completion must find a place in it: a caller may receive up
    // to one buffer past max_bytes when max_bytes is more than one buffer.
    virtual void recv(int fd, uint32_t max_bytes, UserData user_data) = 0;
    // Sends the parts (at most kMaxSendParts) in order, as one write. The bytes must stay valid
    // until the completion arrives; the span itself only during the call. May complete short.
    // `fin_follows`: these are the stream's last bytes, and the caller calls shutdown_write() as
    // soon as they are all sent. The kernel may then hold a last part-filled segment back
    // (MSG_MORE) so that the FIN leaves in it: one segment fewer, and one acknowledgement fewer
    // from the reader. The engine hands over the completion of such a send done at once without
    // waiting for a batch of others, so that segment waits only for the caller's reaction.
    virtual void send_parts(int fd, std::span<const SendPart> parts, UserData user_data, bool fin_follows) = 0;
    void send(int fd, const std::byte* data, uint32_t length, UserData user_data) {
        const SendPart part{data, length};
        send_parts(fd, {&part, 1}, user_data, false);
    }
    virtual void shutdown_write(int fd, UserData user_data) = 0;

    // The splice path. splice_in waits for bytes on fd, then moves at most max_bytes of them into a
    // pipe taken from the engine's pool only then (so a socket waiting for bytes holds none): the
    // completion names the pipe (has_pipe). 0 is the end of the stream, -errno an error, and
    // -ENOBUFS that no pipe was to be had, or that the bytes cannot be spliced (they wait behind
    // TCP urgent data): they are still in the socket, for recv().
    virtual void splice_in(int fd, uint32_t max_bytes, UserData user_data) = 0;
    // Moves at most `length` bytes of the pipe to fd once it has room; may complete short.
    virtual void splice_out(uint16_t pipe, int fd, uint32_t length, UserData user_data) = 0;
    // The caller is done with a pipe: `empty` when every byte splice_in put in went out again.
    virtual void release_pipe(uint16_t pipe, bool empty) = 0;
    // Closes free pipes (see PipePool::trim): every one, or those no splice needed since the last
    // trim. Returns how many.
    virtual uint32_t trim_pipes(bool all) = 0;
    virtual PipeStats pipe_stats() const = 0;
    // The errno with which the kernel (or a seccomp filter) refused splice itself, 0 while it has
    // not: once it has, no direction should ask for splice again.
    virtual int splice_refusal() const = 0;
    // Every request still pending on fd completes soon: with its real result or -ECANCELED.
    virtual void cancel(int fd) = 0;
    // Drops what the engine knows of fd; call with nothing pending on it, right before close().
    virtual void forget(int fd) = 0;
    // For a session that must go although requests on fd have not completed: the engine takes
    // the descriptor and the buffers those requests may still read (a send's), ends the requests,
    // drops their completions and closes the descriptor once the kernel holds none of them, so
    // its number is not reused while a request could still act on it.
    virtual void abandon(net::UniqueFd fd, std::span<const uint16_t> held_buffers) = 0;

    virtual std::byte* buffer_data(uint16_t buffer_id) = 0;
    virtual void release_buffer(uint16_t buffer_id) = 0;
    virtual uint32_t buffer_size() const = 0;
    virtual BufferStats buffer_stats() const = 0;
    // The process's receive-buffer memory is above about three quarters of its cap: sessions whose
    // sends are not moving should take no more than one buffer per direction.
    virtual bool buffers_under_pressure() const = 0;

    // Thread-safe, the one call another thread may make: a poll() waiting now (or the next one)
    // returns soon, without a completion. Workers use it to notice messages from the control thread.
    virtual void wake() = 0;

    // Submits what was asked, waits up to `timeout` for completions and hands each to `handler`.
    virtual void poll(std::chrono::milliseconds timeout, CompletionHandler& handler) = 0;
};

// The requested engine cannot run here; what() says why and how to fix it.
class EngineUnavailable : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace ringlb::engine
