#pragma once
// The io_uring engine: one ring per worker thread. Receives draw from a provided-buffer ring,
// so a connection holds a buffer only from the moment bytes arrive until the send that carries
// them completes; accepts are multishot; each loop round is one submit-and-wait.
#include <liburing.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/engine/fault.hpp"
#include "ringlb/engine/gather_pool.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

class UringEngine final : public Engine {
public:
    // Throws EngineUnavailable (with the reason and a hint) when io_uring cannot be used here.
    explicit UringEngine(const EngineOptions& options);
    ~UringEngine() override;
    UringEngine(const UringEngine&) = delete;
    UringEngine& operator=(const UringEngine&) = delete;

    std::string_view name() const override { return "uring"; }
    std::string features() const override { return features_; }
    bool wants_nonblocking_sockets() const override { return false; }

    void accept(int listen_fd, UserData user_data) override;
    void connect(int fd, const net::SocketAddress& to, UserData user_data) override;
    void recv(int fd, uint32_t max_bytes, UserData user_data) override;
    void send_parts(int fd, std::span<const SendPart> parts, UserData user_data) override;
    void shutdown_write(int fd, UserData user_data) override;
    void cancel(int fd) override;
    void forget(int fd) override;

    std::byte* buffer_data(uint16_t buffer_id) override { return memory_.data(buffer_id); }
    void release_buffer(uint16_t buffer_id) override;
    uint32_t buffer_size() const override { return memory_.buffer_size(); }

    void wake() override;
    void poll(std::chrono::milliseconds timeout, CompletionHandler& handler) override;

private:
    // Recv: a one-shot receive answering one recv() call. Multishot: a receive that stays armed
    // on its socket and completes once per arrival of bytes (see Stream).
    enum class Kind : uint8_t { Accept, Connect, Recv, Send, Multishot };
    // The engine's own record of a request in the ring; the SQE carries its index + 1, so the
    // engine knows what completed (a recv that found no buffer, an accept that stopped) without
    // reading the caller's user_data.
    struct Request {
        UserData user_data = 0;
        int fd = -1;
        uint32_t length = 0;
        Kind kind = Kind::Recv;
        uint32_t gather = kNoGather;  // a send of several parts: its entry in gathers_
        bool orphaned = false;        // a multishot whose socket was forgotten: its bytes go back
    };
    static constexpr uint32_t kNoGather = UINT32_MAX;
    static constexpr uint32_t kNoRequest = UINT32_MAX;

    // What a multishot receive delivered before the core asked for it.
    struct Arrival {
        int32_t result = 0;
        bool has_buffer = false;
        uint16_t buffer_id = 0;
    };
    // The receive side of one socket when multishot receives are in use. The core still asks for
    // one receive at a time; the multishot stays armed between its asks, and what arrives in
    // between waits here, in order. A multishot ends by itself once it has received the room the
    // core had when it was armed, and is armed again when the core asks and nothing is waiting.
    struct Stream {
        uint32_t multishot = kNoRequest;  // the armed multishot receive, if any
        bool cancelling = false;          // cancel() or forget() has asked the kernel to end it
        bool has_waiter = false;          // a recv() the core made is not answered yet
        UserData waiter = 0;
        uint32_t room = 0;  // the waiter's max_bytes, for arming again after ENOBUFS
        std::vector<Arrival> early;  // arrivals nobody has asked for yet, oldest first
    };

    void set_up_ring(const EngineOptions& options);
    void set_up_buffer_ring();
    io_uring_sqe* next_sqe();
    uint32_t new_request(Kind kind, int fd, UserData user_data, uint32_t length = 0);
    void release_request(uint32_t index);
    void unlink_from_fd(uint32_t index);
    std::optional<uint16_t> take_buffer(const io_uring_cqe& cqe);
    void note_unavailable(const char* feature);
    void submit_recv(uint32_t request);
    Stream& stream(int fd);
    void arm_multishot(int fd, uint32_t max_bytes);
    bool probe_capped_multishot();
    void on_multishot(uint32_t index, const io_uring_cqe& cqe);
    void drop_early_arrivals(Stream& stream);
    void cancel_request(uint32_t request);
    void resubmit_parked_recvs();
    void offer_buffers();
    void adjust_window();
    void handle(const io_uring_cqe& cqe);
    void arm_wake_read();

    io_uring ring_{};
    BufferMemory memory_;
    io_uring_buf_ring* buffer_ring_ = nullptr;
    size_t buffer_ring_bytes_ = 0;
    // Only a window of the free buffers is offered to the kernel, taken from a LIFO stack: the
    // kernel consumes its ring in FIFO order, which would otherwise touch every buffer of the
    // pool in turn and make all of it resident. The window grows when receives find it empty.
    std::vector<uint16_t> free_buffers_;
    uint32_t offered_ = 0;  // buffers in the kernel's ring, not yet consumed
    static constexpr uint32_t kMinWindow = 64;
    uint32_t window_ = kMinWindow;
    bool short_of_buffers_ = false;  // a receive found the kernel's ring empty this round
    uint32_t peak_in_use_ = 0;       // most buffers held by sessions since the last change
    std::chrono::steady_clock::time_point last_window_change_{};
    std::vector<Request> requests_;
    std::vector<uint32_t> free_requests_;
    GatherPool gathers_;  // only sends of more than one part take an entry
    // The live requests of each fd (a socket has at most a connect, a recv and a send at once;
    // a shutdown is done directly), so cancel(fd) can name them: cancelling by user_data is a
    // hash lookup in the kernel, cancelling by fd scans every armed request, which made a mass
    // disconnect quadratic.
    std::vector<std::array<uint32_t, 4>> live_by_fd_;
    // Per fd: its last receive came back short, so the socket is most likely empty and the next
    // receive waits for readiness first (IORING_RECVSEND_POLL_FIRST) instead of the kernel
    // trying a recv that fails with EAGAIN before it arms the poll.
    std::vector<bool> drained_by_fd_;
    std::vector<uint32_t> parked_recvs_;  // recv requests that found the buffer ring empty
    bool multishot_recv_ = false;          // on when the start-up probe found capped multishot receives
    std::vector<Stream> streams_;          // by fd, for multishot receives
    std::vector<int> parked_streams_;      // sockets whose multishot found the buffer ring empty
    std::vector<Completion> completions_;
    std::vector<Completion> delivering_;
    std::string features_;
    std::string unavailable_;  // features this kernel refused, for the start-up line
    // wake(): another thread writes to this eventfd, on which a read is always armed.
    net::UniqueFd wake_fd_;
    uint64_t wake_value_ = 0;
    PollFault poll_fault_;
};

}  // namespace ringlb::engine
