#pragma once
// The io_uring engine: one ring per worker thread. Receives draw from a provided-buffer ring,
// so a connection holds a buffer only from the moment bytes arrive until the send that carries
// them completes; receives (where the kernel caps them) and accepts are multishot; each loop
// round is one submit-and-wait. Every completion goes straight to the caller: the engine keeps
// no queue of received bytes of its own.
#include <liburing.h>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
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
    void accept_one(int listen_fd, UserData user_data) override;
    void connect(int fd, const net::SocketAddress& to, UserData user_data) override;
    void recv(int fd, uint32_t max_bytes, UserData user_data) override;
    void send_parts(int fd, std::span<const SendPart> parts, UserData user_data, bool fin_follows) override;
    void shutdown_write(int fd, UserData user_data) override;
    void splice_in(int fd, uint32_t max_bytes, UserData user_data) override;
    void splice_out(uint16_t pipe, int fd, uint32_t length, UserData user_data) override;
    void release_pipe(uint16_t pipe, bool empty) override { pipes_.give(pipe, empty); }
    uint32_t trim_pipes(bool all) override { return pipes_.trim(all); }
    PipeStats pipe_stats() const override { return pipes_.stats(); }
    int splice_refusal() const override { return pipes_.refusal(); }
    void cancel(int fd) override;
    void forget(int fd) override;
    void abandon(net::UniqueFd fd, std::span<const uint16_t> held_buffers) override;

    std::byte* buffer_data(uint16_t buffer_id) override { return pool_.data(buffer_id); }
    void release_buffer(uint16_t buffer_id) override { pool_.give(buffer_id); }
    uint32_t buffer_size() const override { return pool_.buffer_size(); }
    BufferStats buffer_stats() const override;
    bool buffers_under_pressure() const override { return budget_->under_pressure(); }

    void wake() override;
    void poll(std::chrono::milliseconds timeout, CompletionHandler& handler) override;

private:
    // SpliceIn / SpliceOut: a poll for readiness in the ring; the splice itself is done here once
    // the socket is ready (IORING_OP_SPLICE would run every one on a kernel worker thread).
    enum class Kind : uint8_t { Accept, Connect, Recv, Send, SpliceIn, SpliceOut };
    // The engine's own record of a request in the ring; the SQE carries its index + 1, so the
    // engine knows what completed (a recv that found no buffer, an accept that stopped) without
    // reading the caller's user_data.
    struct Request {
        UserData user_data = 0;
        int fd = -1;
        // Recv: the bytes it may still deliver (a multishot's total; a one-shot's length).
        uint32_t length = 0;
        uint32_t gather = kNoGather;  // a send of several parts: its entry in gathers_
        uint32_t serial = 0;          // tells a parked entry from a later request in the same place
        uint32_t round = 0;           // send: the loop round in which it was asked for
        // recv: where in completions_ its last bytes wait, and in which round they were put there
        // (so that the end of the stream, completing right behind them, can be announced with them)
        uint32_t delivery = UINT32_MAX;
        uint32_t delivery_round = 0;
        uint16_t pipe = 0;            // SpliceOut: the pipe whose bytes go to fd
        Kind kind = Kind::Recv;
        bool multishot = false;  // a recv that stays armed and completes once per arrival
        bool cancelled = false;  // a cancel was asked for: it must complete, never be parked again
        bool parked = false;     // a recv that found the buffer ring empty, waiting for buffers
        bool orphaned = false;   // its fd was abandoned: its completions go nowhere
    };
    struct Parked {
        uint32_t request;
        uint32_t serial;
    };
    // A descriptor handed over by abandon(), closed once its last request has completed.
    struct Abandoned {
        net::UniqueFd fd;
        std::vector<uint16_t> buffers;  // read by its requests; free once they are done
    };
    static constexpr uint32_t kNoGather = UINT32_MAX;
    static constexpr uint32_t kNoRequest = UINT32_MAX;

    void set_up_ring(const EngineOptions& options);
    void set_up_buffer_ring();
    io_uring_sqe* next_sqe();
    uint32_t new_request(Kind kind, int fd, UserData user_data, uint32_t length = 0);
    void release_request(uint32_t index);
    bool has_live_requests(int fd) const;
    std::optional<uint16_t> take_buffer(const io_uring_cqe& cqe);
    void note_unavailable(const char* feature);
    void submit_recv(uint32_t request);
    bool probe_capped_multishot();
    void cancel_request(uint32_t request);
    void park(uint32_t request);
    void resubmit_parked_recvs();
    void finish_abandoned(int fd);
    struct WaitPlan {
        unsigned completions;
        std::chrono::microseconds timeout;
    };
    static constexpr unsigned kMaxBatch = 16;
    static constexpr std::chrono::microseconds kBatchWindow{200};
    static constexpr unsigned kMaxBackOff = 4096;           // rounds
    WaitPlan plan_wait(std::chrono::milliseconds timeout) const;
    void note_batch_outcome(const WaitPlan& plan, unsigned harvested);
    void offer_buffers();
    void adjust_window(std::chrono::steady_clock::time_point now);
    void handle(const io_uring_cqe& cqe);
    void handle_recv(uint32_t index, const io_uring_cqe& cqe);
    void announce_end(const Request& request);
    void handle_poll(uint32_t index, const io_uring_cqe& cqe);
    void arm_wake_read();
    void arm_poll(uint32_t request);
    bool try_splice(uint32_t request);
    void make_nonblocking(int fd);

    io_uring ring_{};
    std::shared_ptr<BufferBudget> budget_;
    BufferPool pool_;
    PipePool pipes_;
    io_uring_buf_ring* buffer_ring_ = nullptr;
    size_t buffer_ring_bytes_ = 0;
    uint32_t ring_entries_ = 0;
    // Only a window of free buffers is offered to the kernel, the warmest of the pool's stack: the
    // kernel consumes its ring in FIFO order, which would otherwise touch every buffer in turn and
    // make all of them resident. The window doubles for a round in which receives found the ring
    // empty, and halves after a quiet second.
    uint32_t offered_ = 0;  // buffers in the kernel's ring, not yet consumed
    static constexpr uint32_t kMinWindow = 64;
    uint32_t window_ = kMinWindow;
    bool short_of_buffers_ = false;  // a receive found the kernel's ring empty this round
    uint32_t peak_held_ = 0;         // most buffers held by sessions since the last change
    std::chrono::steady_clock::time_point last_window_change_{};
    std::vector<Request> requests_;
    std::vector<uint32_t> free_requests_;
    uint32_t next_serial_ = 0;
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
    // Per fd: its last send did not complete in the io_uring_enter that submitted it (its reader
    // is behind), so the next one is not counted on to complete at once (plan_wait).
    std::vector<bool> slow_send_by_fd_;
    // Per fd: made O_NONBLOCK for the splice path (splice(2) blocks on a blocking socket whatever
    // its flags say).
    std::vector<bool> nonblocking_by_fd_;
    uint32_t round_ = 0;  // loop rounds (poll calls) so far
    std::deque<Parked> parked_;  // receives that found the buffer ring empty, oldest first
    std::vector<Abandoned> abandoned_;
    bool multishot_recv_ = false;  // on when the start-up probe found capped multishot receives
    std::vector<Completion> completions_;
    std::vector<Completion> delivering_;
    std::string features_;
    std::string unavailable_;  // features this kernel refused, for the start-up line
    // wake(): another thread writes to this eventfd, on which a read is always armed.
    net::UniqueFd wake_fd_;
    uint64_t wake_value_ = 0;
    PollFault poll_fault_;
    // What the next wait is planned on (plan_wait): receives completed in the last round, sends
    // submitted since it.
    unsigned receives_last_round_ = 0;
    unsigned sends_this_round_ = 0;
    // Sends of a stream's last bytes asked for since the last round: the kernel may hold their last
    // segment back for the shutdown the core makes on their completion, which most often comes
    // during the submission, so that round waits for one completion, not a batch. (A send that
    // waits for its reader instead is not waited for: a reader that stops must not take batching
    // from the worker.)
    unsigned final_sends_this_round_ = 0;
    // Back-off after batches that came back short (note_batch_outcome).
    unsigned plain_rounds_left_ = 0;
    unsigned back_off_span_ = 0;
};

}  // namespace ringlb::engine
