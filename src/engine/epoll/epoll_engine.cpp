#include "ringlb/engine/epoll/epoll_engine.hpp"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace ringlb::engine {

namespace {

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

// Errors after which accept4 can be called again at once for the next connection.
bool is_per_connection_accept_error(int error) {
    return error == ECONNABORTED || error == EINTR || error == EPROTO || error == EPERM;
}

}  // namespace

EpollEngine::EpollEngine(const EngineOptions& options)
    : poll_fault_(options.fail_poll_after),
      epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)),
      budget_(options.budget ? options.budget
                             : std::make_shared<BufferBudget>(uint64_t{options.max_buffers} * options.buffer_size)),
      pool_(options.buffer_size, options.initial_buffers, options.max_buffers, *budget_),
      pipes_(options.max_pipes, options.pipe_capacity, options.pipe_descriptor_ceiling, options.refuse_splice),
      events_(256) {
    if (!epoll_fd_) throw net::SystemError("epoll_create1", errno);
    wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_fd_) throw net::SystemError("eventfd", errno);
    epoll_event event{};
    event.events = EPOLLIN | EPOLLET;
    event.data.fd = wake_fd_.get();
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &event) < 0)
        throw net::SystemError("epoll_ctl add eventfd", errno);
}

std::string EpollEngine::features() const {
    std::string text = "edge-triggered, " + std::to_string(pool_.made()) + " to " + std::to_string(pool_.max_count()) +
                       " buffers of " + std::to_string(pool_.buffer_size()) + " bytes taken on arrival";
    if (pipes_.enabled()) text += ", splice with up to " + std::to_string(pipes_.max_pipes()) + " pipes";
    return text;
}

EpollEngine::FdState& EpollEngine::state(int fd) {
    if (static_cast<size_t>(fd) >= fds_.size()) fds_.resize(static_cast<size_t>(fd) * 2 + 64);
    return fds_[static_cast<size_t>(fd)];
}

// Registers fd once for every edge it can give; requests then only change FdState.
void EpollEngine::watch(int fd, FdState& st) {
    if (st.registered) return;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &event) < 0)
        throw net::SystemError("epoll_ctl add fd " + std::to_string(fd), errno);
    st.registered = true;
}

void EpollEngine::complete(UserData user_data, int32_t result, bool more) {
    ready_.push_back(Completion{user_data, result, more, false, 0});
}

// ---- requests ----------------------------------------------------------------------------

void EpollEngine::accept(int listen_fd, UserData user_data) {
    FdState& st = state(listen_fd);
    watch(listen_fd, st);
    st.accepting = true;
    st.accept_data = user_data;
    try_accept(listen_fd, st);
}

void EpollEngine::connect(int fd, const net::SocketAddress& to, UserData user_data) {
    FdState& st = state(fd);
    watch(fd, st);
    if (::connect(fd, to.sockaddr_ptr(), to.length()) == 0) {
        complete(user_data, 0);
    } else if (errno == EINPROGRESS) {
        st.connecting = true;
        st.connect_data = user_data;
    } else {
        complete(user_data, -errno);
    }
}

void EpollEngine::recv(int fd, uint32_t max_bytes, UserData user_data) {
    FdState& st = state(fd);
    watch(fd, st);
    st.receiving = true;
    st.into_pipe = false;
    st.recv_max = max_bytes;
    st.recv_data = user_data;
    if (!st.drained) try_recv(fd, st);
}

void EpollEngine::send_parts(int fd, std::span<const SendPart> parts, UserData user_data, bool fin_follows) {
    const uint32_t gather = gathers_.store(parts);
    FdState& st = state(fd);
    watch(fd, st);
    st.sending = true;
    st.send_more = fin_follows;
    st.send_gather = gather;
    st.send_data_ud = user_data;
    try_send(fd, st);
}

void EpollEngine::finish_send(FdState& st, int32_t result) {
    st.sending = false;
    if (!st.from_pipe) gathers_.release(st.send_gather);
    st.from_pipe = false;
    complete(st.send_data_ud, result);
}

void EpollEngine::splice_in(int fd, uint32_t max_bytes, UserData user_data) {
    FdState& st = state(fd);
    watch(fd, st);
    st.receiving = true;
    st.into_pipe = true;
    st.recv_max = max_bytes;
    st.recv_data = user_data;
    if (!st.drained) try_splice_in(fd, st);
}

void EpollEngine::splice_out(uint16_t pipe, int fd, uint32_t length, UserData user_data) {
    FdState& st = state(fd);
    watch(fd, st);
    st.sending = true;
    st.from_pipe = true;
    st.send_pipe = pipe;
    st.send_length = length;
    st.send_data_ud = user_data;
    try_splice_out(fd, st);
}

void EpollEngine::shutdown_write(int fd, UserData user_data) {
    complete(user_data, ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno);
}

void EpollEngine::cancel(int fd) {
    FdState& st = state(fd);
    if (st.accepting) complete(st.accept_data, -ECANCELED);
    if (st.connecting) complete(st.connect_data, -ECANCELED);
    if (st.receiving) complete(st.recv_data, -ECANCELED);
    if (st.sending) finish_send(st, -ECANCELED);
    st.accepting = st.connecting = st.receiving = st.sending = st.waiting_for_buffer = st.into_pipe = false;
}

void EpollEngine::forget(int fd) {
    // close() removes the fd from the epoll set; only our bookkeeping must go.
    FdState& st = state(fd);
    if (st.sending && !st.from_pipe) gathers_.release(st.send_gather);
    st = FdState{};
}

// Nothing of fd is in the kernel: its requests end here without completions, and the buffers
// its send was reading are free at once.
void EpollEngine::abandon(net::UniqueFd fd, std::span<const uint16_t> held_buffers) {
    forget(fd.get());
    for (const uint16_t buffer : held_buffers) pool_.give(buffer);
}

// ---- the syscalls, performed when the socket is ready --------------------------------------

void EpollEngine::try_accept(int fd, FdState& st) {
    while (st.accepting) {
        const int client = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client >= 0) {
            complete(st.accept_data, client, true);
            continue;
        }
        const int error = errno;
        if (would_block(error)) return;  // drained: the next edge brings more
        if (is_per_connection_accept_error(error)) continue;
        st.accepting = false;  // EMFILE and the like: the core decides when to try again
        complete(st.accept_data, -error, false);
    }
}

void EpollEngine::try_connect_result(int fd, FdState& st) {
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
    if (error == EINPROGRESS || error == EALREADY) return;
    st.connecting = false;
    complete(st.connect_data, -error);
}

void EpollEngine::try_recv(int fd, FdState& st) {
    if (report_held_error(st)) return;
    const auto taken = pool_.take();
    if (!taken) {
        if (!st.waiting_for_buffer) buffer_waiters_.push_back(fd);
        st.waiting_for_buffer = true;
        return;
    }
    const uint16_t buffer = *taken;
    const uint32_t wanted = std::min(st.recv_max, pool_.buffer_size());
    const ssize_t n = ::recv(fd, pool_.data(buffer), wanted, 0);
    if (n <= 0) pool_.give(buffer);
    if (n > 0) {
        st.drained = static_cast<uint32_t>(n) < wanted && !st.peer_closed;
        st.receiving = false;
        Completion completion{st.recv_data, static_cast<int32_t>(n), false, true, buffer};
        if (st.peer_closed && static_cast<uint32_t>(n) < wanted)
            completion.result += read_to_end(fd, st, pool_.data(buffer), static_cast<uint32_t>(n), wanted,
                                             completion.end_follows);
        ready_.push_back(completion);
        return;
    }
    const int error = n == 0 ? 0 : errno;
    if (n < 0 && would_block(error)) {
        st.drained = !st.peer_closed;
        return;
    }
    st.receiving = false;
    complete(st.recv_data, -error);
}

// The peer's FIN has been reported and a read came back short of its room: the rest of the
// stream is most likely already here. Reads on into the same buffer (from `have` up to `room`
// bytes) and returns how many more bytes came; `ended` says the end of the stream was reached,
// so the core can hand the FIN on with the last bytes instead of after them. At the end of every
// stream this costs one recv() more, which the end's own completion would have cost anyway. An
// error met here is held for the next receive: a reset must not pass for a clean end.
int32_t EpollEngine::read_to_end(int fd, FdState& st, std::byte* data, uint32_t have, uint32_t room, bool& ended) {
    uint32_t got = have;
    while (got < room) {
        const ssize_t n = ::recv(fd, data + got, room - got, 0);
        if (n > 0) {
            got += static_cast<uint32_t>(n);
            continue;
        }
        ended = n == 0;
        if (n < 0 && !would_block(errno)) st.held_error = errno;
        break;
    }
    return static_cast<int32_t>(got - have);
}

bool EpollEngine::report_held_error(FdState& st) {
    if (st.held_error == 0) return false;
    st.receiving = false;
    st.into_pipe = false;
    complete(st.recv_data, -std::exchange(st.held_error, 0));
    return true;
}

// A splice that moved fewer bytes than asked does not mean the socket is empty (the pipe may have
// run out of slots for many small segments), so only EAGAIN waits for the next edge.
void EpollEngine::try_splice_in(int fd, FdState& st) {
    if (report_held_error(st)) return;
    const SpliceIn in = pipes_.fill_from(fd, st.recv_max);
    if (in.outcome == SpliceIn::Outcome::WouldBlock) {
        st.drained = !st.peer_closed;
        return;
    }
    st.receiving = false;
    st.into_pipe = false;
    if (in.outcome == SpliceIn::Outcome::Moved) {
        Completion completion{st.recv_data, in.result, false, false, 0};
        completion.has_pipe = true;
        completion.pipe_id = in.pipe;
        ready_.push_back(completion);
    } else {
        complete(st.recv_data, in.outcome == SpliceIn::Outcome::NoPipe ? -ENOBUFS : in.result);
    }
}

void EpollEngine::try_splice_out(int fd, FdState& st) {
    const int32_t moved = pipes_.drain_to(st.send_pipe, fd, st.send_length);
    if (moved == -EAGAIN) return;
    finish_send(st, moved);
}

void EpollEngine::try_send(int fd, FdState& st) {
    if (st.from_pipe) {
        try_splice_out(fd, st);
        return;
    }
    const ssize_t n = ::sendmsg(fd, gathers_.message(st.send_gather), MSG_NOSIGNAL | (st.send_more ? MSG_MORE : 0));
    if (n < 0 && would_block(errno)) return;
    finish_send(st, n >= 0 ? static_cast<int32_t>(n) : -errno);
}

// Oldest first, and only while buffers are to be had: a receive that still finds none goes back
// to the head of the line.
void EpollEngine::retry_buffer_waiters() {
    while (!buffer_waiters_.empty()) {
        const int fd = buffer_waiters_.front();
        buffer_waiters_.pop_front();
        FdState& st = state(fd);
        if (!st.waiting_for_buffer) continue;  // cancelled or forgotten meanwhile
        st.waiting_for_buffer = false;
        if (!st.receiving) continue;
        try_recv(fd, st);
        if (st.waiting_for_buffer) {  // none to be had: it stays first in line
            buffer_waiters_.pop_back();
            buffer_waiters_.push_front(fd);
            return;
        }
    }
}

// ---- the loop ----------------------------------------------------------------------------

void EpollEngine::wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake_fd_.get(), &one, sizeof one);  // EAGAIN: already pending
}

void EpollEngine::poll(std::chrono::milliseconds timeout, CompletionHandler& handler) {
    if (poll_fault_.strikes()) throw net::SystemError("epoll_wait (RINGLB_FAULT)", EBADF);
    pool_.tick(std::chrono::steady_clock::now());
    retry_buffer_waiters();
    const int wait_ms = ready_.empty() ? static_cast<int>(timeout.count()) : 0;
    const int count = ::epoll_wait(epoll_fd_.get(), events_.data(), static_cast<int>(events_.size()), wait_ms);
    if (count < 0 && errno != EINTR) throw net::SystemError("epoll_wait", errno);
    for (int i = 0; i < count; ++i) {
        const int fd = events_[static_cast<size_t>(i)].data.fd;
        const uint32_t flags = events_[static_cast<size_t>(i)].events;
        if (fd == wake_fd_.get()) {
            uint64_t count_ignored = 0;
            [[maybe_unused]] const ssize_t read_bytes = ::read(fd, &count_ignored, sizeof count_ignored);
            continue;
        }
        FdState& st = state(fd);
        const bool failed = (flags & (EPOLLERR | EPOLLHUP)) != 0;
        if (flags & (EPOLLIN | EPOLLRDHUP) || failed) {
            st.drained = false;
            if (flags & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) st.peer_closed = true;
            if (st.accepting) try_accept(fd, st);
            if (st.receiving && st.into_pipe) try_splice_in(fd, st);
            else if (st.receiving && !st.waiting_for_buffer) try_recv(fd, st);
        }
        if (flags & EPOLLOUT || failed) {
            if (st.connecting) try_connect_result(fd, st);
            if (st.sending) try_send(fd, st);
        }
    }
    // Handlers submit new requests, which may complete at once into ready_: those are handed over
    // in this same round, a few passes at most (see kDeliveryPasses), the rest next round.
    handler.on_batch_start();
    for (unsigned pass = 0; pass < kDeliveryPasses && !ready_.empty(); ++pass) {
        delivering_.swap(ready_);
        for (const Completion& completion : delivering_) handler.on_completion(completion);
        delivering_.clear();
    }
}

}  // namespace ringlb::engine
