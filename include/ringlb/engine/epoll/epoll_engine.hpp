#pragma once
// The fallback engine: edge-triggered epoll. Each request is tried at once (the data is often
// already there); if the socket is not ready it waits for the readiness edge, then the syscall
// is performed and reported as the same completion io_uring would give.
#include <sys/epoll.h>

#include <deque>
#include <memory>
#include <vector>

#include "ringlb/engine/buffer_pool.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/engine/fault.hpp"
#include "ringlb/engine/gather_pool.hpp"
#include "ringlb/net/socket.hpp"

namespace ringlb::engine {

class EpollEngine final : public Engine {
public:
    explicit EpollEngine(const EngineOptions& options);

    std::string_view name() const override { return "epoll"; }
    std::string features() const override;
    bool wants_nonblocking_sockets() const override { return true; }

    void accept(int listen_fd, UserData user_data) override;
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
    BufferStats buffer_stats() const override { return {pool_.in_use(), 0, pool_.made(), pool_.resident_free()}; }
    bool buffers_under_pressure() const override { return budget_->under_pressure(); }

    void wake() override;
    void poll(std::chrono::milliseconds timeout, CompletionHandler& handler) override;

private:
    // What is waiting on one fd. At most one request of each kind, as the core guarantees.
    struct FdState {
        bool registered = false;
        bool accepting = false;
        bool connecting = false;
        bool receiving = false;
        bool sending = false;
        bool waiting_for_buffer = false;
        bool into_pipe = false;  // receiving: by splice_in
        bool from_pipe = false;  // sending: by splice_out, of send_pipe
        bool send_more = false;  // sending: the FIN follows these bytes (MSG_MORE)
        // An error a read past a short one met (read_to_end): the next receive reports it, since
        // the kernel reports a socket's error only once.
        int held_error = 0;
        // The last read came back short: the socket is empty until its next readable edge, so a
        // new recv() waits for that edge instead of spending a syscall on EAGAIN.
        bool drained = false;
        // The peer's FIN or an error was reported: it may sit behind data still unread, with no
        // further edge to announce it, so reads stay speculative from then on.
        bool peer_closed = false;
        uint32_t recv_max = 0;
        uint32_t send_gather = 0;  // sending: its entry in gathers_
        uint16_t send_pipe = 0;
        uint32_t send_length = 0;  // from_pipe: bytes to move
        UserData accept_data = 0;
        UserData connect_data = 0;
        UserData recv_data = 0;
        UserData send_data_ud = 0;
    };

    FdState& state(int fd);
    void watch(int fd, FdState& st);
    void complete(UserData user_data, int32_t result, bool more = false);

    void try_accept(int fd, FdState& st);
    void try_connect_result(int fd, FdState& st);
    void try_recv(int fd, FdState& st);
    int32_t read_to_end(int fd, FdState& st, std::byte* data, uint32_t have, uint32_t room, bool& ended);
    bool report_held_error(FdState& st);
    void try_send(int fd, FdState& st);
    void try_splice_in(int fd, FdState& st);
    void try_splice_out(int fd, FdState& st);
    void retry_buffer_waiters();
    void finish_send(FdState& st, int32_t result);

    PollFault poll_fault_;
    net::UniqueFd epoll_fd_;
    net::UniqueFd wake_fd_;  // an eventfd in the epoll set: wake() writes to it
    std::shared_ptr<BufferBudget> budget_;
    BufferPool pool_;
    PipePool pipes_;
    std::vector<FdState> fds_;
    // The parts of each send until its socket takes them: pooled, so the per-fd state (one per
    // descriptor, idle ones included) stays small.
    GatherPool gathers_;
    std::deque<int> buffer_waiters_;  // receives that found no buffer, oldest first
    std::vector<Completion> ready_;
    std::vector<Completion> delivering_;
    std::vector<epoll_event> events_;
};

}  // namespace ringlb::engine
