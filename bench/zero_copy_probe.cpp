// zero_copy_probe: does zero-copy forwarding pay over plain copying on this machine?
//
// A deliberately minimal TCP relay, used to measure (not to ship). It listens on
// 127.0.0.1:LISTEN_PORT, and for every accepted connection connects to 127.0.0.1:TARGET_PORT and
// relays bytes both ways until both sides have closed. A half-close is passed on with
// shutdown(SHUT_WR). Only the way bytes are moved differs between modes, so the modes can be
// compared with each other (and with ringlb) under the same load:
//
//   copy          nonblocking epoll; recv() into a 64 KiB buffer, send() it on.
//   splice        nonblocking epoll; socket -> pipe -> socket with splice(2), one pipe per
//                 direction, enlarged to 1 MiB with F_SETPIPE_SZ when the kernel allows it.
//   msg_zerocopy  like copy, but send(MSG_ZEROCOPY) on sockets with SO_ZEROCOPY, from 4 rotating
//                 64 KiB buffers; a buffer is reused only after its completion notification has
//                 been read from the socket's error queue (MSG_ERRQUEUE).
//   uring_copy    io_uring recv / send, 4 rotating 64 KiB buffers per direction (one recv and one
//                 send in flight per direction).
//   uring_send_zc like uring_copy with IORING_OP_SEND_ZC; a buffer is reused only after its
//                 notification CQE (IORING_CQE_F_NOTIF).
//   uring_splice_linked
//                 io_uring IORING_OP_SPLICE socket -> pipe hard-linked (IOSQE_IO_HARDLINK: a plain
//                 link is cut whenever the first splice moves less than asked, which a socket's
//                 splice nearly always does) to IORING_OP_SPLICE pipe -> socket, one such chain
//                 in flight per direction, on
//                 blocking sockets and a 64 KiB pipe per direction (ringlb's default
//                 buffer_size). The kernel runs every splice on an io-wq worker thread; a worker
//                 waits in the first splice of a chain until bytes arrive.
//
// For the zero-copy modes the kernel reports whether it really avoided the copy; on SIGINT or
// SIGTERM the probe prints a one-line summary to stderr (bytes, connections, CPU time, and for
// the zero-copy modes how many sends the kernel copied anyway). Over loopback expect all of them
// to be copied: a zero-copy skb delivered to a local socket is copied on receive.
//
// Build (it uses ringlb's descriptor owner, net::UniqueFd):
//   cmake --build build --target zero_copy_probe
// Run (example, with iperf3):
//   iperf3 -s -p 19500 &
//   taskset -c 1 ./build/zero_copy_probe splice 19501 19500 &
//   iperf3 -c 127.0.0.1 -p 19501 -t 5
//   kill -INT %2      # prints the summary
//
// One thread, one event loop: the point is the cost of the copy path, not scalability. SIGINT
// and SIGTERM are blocked and arrive through a signalfd that the event loop watches like any
// other fd, so no state is shared with a signal handler.

#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ringlb/net/socket.hpp"

// Older libc / liburing headers may lack these; the values are kernel ABI.
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef IORING_SEND_ZC_REPORT_USAGE  // kernel >= 6.2, not in the liburing 2.3 header
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

namespace {

using ringlb::net::UniqueFd;

constexpr size_t kBufSize = size_t{64} * 1024;
constexpr int kRotatingBuffers = 4;  // per direction, for the zero-copy and io_uring modes
constexpr int kPipeSize = 1 << 20;

enum class Mode { Copy, Splice, MsgZerocopy, UringCopy, UringSendZc, UringSpliceLinked };

struct Stats {
    const char* mode = "";
    uint64_t connections = 0;
    uint64_t bytes = 0;                     // sent on, both directions together
    uint64_t failed_connections = 0;        // closed because of an error (reset, refused, ...);
                                            // iperf3 resets its data connections at test end
    uint64_t zc_sends = 0;                  // zero-copy sends that queued data
    uint64_t zc_notifications = 0;          // error-queue messages / notification CQEs
    uint64_t zc_notified_sends = 0;         // sends those notifications covered
    uint64_t zc_copied_sends = 0;           // ... of which the kernel copied anyway
    bool pipe_resize_refused = false;
};

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "zero_copy_probe: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

// A connection-level failure: reported, and the connection pair is closed. Resets and broken
// pipes are how peers sometimes end, so only the unexpected ones are printed.
bool conn_error(const char* what, int err) {
    if (err != ECONNRESET && err != EPIPE)
        std::fprintf(stderr, "zero_copy_probe: %s: %s\n", what, std::strerror(err));
    return false;
}

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// What one nonblocking call made by a pump() loop came to. Either it moved `bytes` (0 from a
// receive: EOF), or pump() has to return `pump_result` now: true when the call would block (the
// next readiness edge calls pump() again), false when it failed (reported; ends the pair).
struct IoStep {
    bool moved;
    size_t bytes;
    bool pump_result;
};

// Makes `call` (a syscall returning ssize_t and setting errno), retrying it on EINTR, and sorts
// the outcome for pump(). `what` names the call in error messages.
template <class Call>
IoStep nonblocking_call(const char* what, Call call) {
    for (;;) {
        const ssize_t n = call();
        if (n >= 0) return {true, size_t(n), true};
        if (errno != EINTR) return {false, 0, would_block(errno) || conn_error(what, errno)};
    }
}

void print_summary(const Stats& stats) {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const double cpu = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    std::fprintf(stderr,
                 "zero_copy_probe: mode=%s connections=%llu failed=%llu bytes=%llu cpu_s=%.2f "
                 "zc_sends=%llu zc_notifications=%llu zc_notified_sends=%llu "
                 "zc_copied_sends=%llu%s\n",
                 stats.mode, (unsigned long long)stats.connections,
                 (unsigned long long)stats.failed_connections,
                 (unsigned long long)stats.bytes, cpu, (unsigned long long)stats.zc_sends,
                 (unsigned long long)stats.zc_notifications,
                 (unsigned long long)stats.zc_notified_sends,
                 (unsigned long long)stats.zc_copied_sends,
                 stats.pipe_resize_refused ? " pipe_resize=refused" : "");
}

sockaddr_in loopback(uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

UniqueFd listen_on(uint16_t port, bool nonblocking) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
    if (!fd) die("socket");
    const int one = 1;
    if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
    const sockaddr_in addr = loopback(port);
    if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) die("bind");
    if (listen(fd.get(), 128) < 0) die("listen");
    return fd;
}

// A blocking connect is fine here: the target is on loopback, so it completes at once, and it
// keeps the relay loops free of a connecting state that has nothing to do with the copy path.
UniqueFd connect_to(uint16_t port) {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) die("socket");
    const sockaddr_in addr = loopback(port);
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) {
        std::fprintf(stderr, "zero_copy_probe: connect to 127.0.0.1:%u: %s\n", port,
                     std::strerror(errno));
        return UniqueFd();
    }
    return fd;
}

void set_nonblocking(int fd) {
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl(O_NONBLOCK)");
}

void enable_zerocopy(int fd) {
    const int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) < 0) die("SO_ZEROCOPY");
}

// ---------------------------------------------------------------------------------------------
// epoll modes: copy, splice, msg_zerocopy
// ---------------------------------------------------------------------------------------------

// Moves bytes from one socket to the other. Both sockets are nonblocking and registered
// edge-triggered, so pump() must go on until a syscall says EAGAIN (or there is nothing left to
// do); the next readiness edge on either socket calls it again.
class Direction {
public:
    Direction(int in, int out, Stats& stats) : in_(in), out_(out), stats_(stats) {}
    virtual ~Direction() = default;
    Direction(const Direction&) = delete;
    Direction& operator=(const Direction&) = delete;

    // Returns false on an error that ends the connection pair.
    virtual bool pump() = 0;

    // The source has closed, everything has been sent on, the half-close has been passed on,
    // and the kernel holds no reference to our buffers any more.
    bool finished() const { return shut_ && !kernel_holds_buffers(); }

protected:
    virtual bool kernel_holds_buffers() const { return false; }

    // Called once the source has said EOF and nothing is left to send.
    bool pass_on_eof() {
        if (!shut_) {
            if (shutdown(out_, SHUT_WR) < 0 && errno != ENOTCONN)
                return conn_error("shutdown", errno);
            shut_ = true;
        }
        return true;
    }

    int in_;
    int out_;
    Stats& stats_;
    bool eof_ = false;

private:
    bool shut_ = false;
};

// Classic: recv into a buffer, send it on.
class CopyDirection final : public Direction {
public:
    using Direction::Direction;

    bool pump() override {
        for (;;) {
            if (off_ < len_) {
                const IoStep sent = nonblocking_call("send", [&] {
                    return send(out_, buf_.get() + off_, len_ - off_, MSG_NOSIGNAL);
                });
                if (!sent.moved) return sent.pump_result;
                off_ += sent.bytes;
                stats_.bytes += sent.bytes;
                continue;
            }
            if (eof_) return pass_on_eof();
            const IoStep got =
                nonblocking_call("recv", [&] { return recv(in_, buf_.get(), kBufSize, 0); });
            if (!got.moved) return got.pump_result;
            if (got.bytes == 0) {
                eof_ = true;
                continue;
            }
            off_ = 0;
            len_ = got.bytes;
        }
    }

private:
    std::unique_ptr<char[]> buf_ = std::make_unique<char[]>(kBufSize);
    size_t off_ = 0;
    size_t len_ = 0;
};

// socket -> pipe -> socket. The pipe is only refilled once it is empty, so an EAGAIN from the
// socket -> pipe splice always means "socket empty", never "pipe full".
class SpliceDirection final : public Direction {
public:
    SpliceDirection(int in, int out, Stats& stats) : Direction(in, out, stats) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe2");
        pipe_read_.reset(fds[0]);
        pipe_write_.reset(fds[1]);
        // Larger pipes mean fewer splice calls per byte. Refusal (pipe-max-size, or the
        // per-user pipe budget) is not fatal: the default 64 KiB pipe still works.
        const int size = fcntl(pipe_write_.get(), F_SETPIPE_SZ, kPipeSize);
        if (size > 0) {
            pipe_size_ = size_t(size);
        } else {
            stats_.pipe_resize_refused = true;
            const int current = fcntl(pipe_write_.get(), F_GETPIPE_SZ);
            pipe_size_ = current > 0 ? size_t(current) : 65536;
        }
    }

    bool pump() override {
        constexpr unsigned flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
        for (;;) {
            if (in_pipe_ > 0) {
                const IoStep sent = nonblocking_call("splice pipe->socket", [&] {
                    return splice(pipe_read_.get(), nullptr, out_, nullptr, in_pipe_, flags);
                });
                if (!sent.moved) return sent.pump_result;
                in_pipe_ -= sent.bytes;
                stats_.bytes += sent.bytes;
                continue;
            }
            if (eof_) return pass_on_eof();
            const IoStep got = nonblocking_call("splice socket->pipe", [&] {
                return splice(in_, nullptr, pipe_write_.get(), nullptr, pipe_size_, flags);
            });
            if (!got.moved) return got.pump_result;
            if (got.bytes == 0) {
                eof_ = true;
                continue;
            }
            in_pipe_ = got.bytes;
        }
    }

private:
    UniqueFd pipe_read_;
    UniqueFd pipe_write_;
    size_t pipe_size_ = 0;
    size_t in_pipe_ = 0;  // bytes spliced into the pipe and not yet out of it
};

// send(MSG_ZEROCOPY) from rotating buffers. The kernel pins the pages of each send and later
// queues a notification on the sending socket's error queue, covering a range of send
// sequence numbers (one number per send call that queued data, counted from 0 per socket).
// Until then the buffer must not be written to.
class MsgZerocopyDirection final : public Direction {
public:
    MsgZerocopyDirection(int in, int out, Stats& stats) : Direction(in, out, stats) {
        for (int i = 0; i < kRotatingBuffers; ++i) {
            buffers_[i].data = std::make_unique<char[]>(kBufSize);
            free_.push_back(i);
        }
    }

    ~MsgZerocopyDirection() override {
        // Torn down after an error with sends still unnotified: the kernel may still read
        // these pages, so never hand them back to the allocator. A deliberate, rare leak.
        if (kernel_holds_buffers())
            for (Buffer& b : buffers_) (void)b.data.release();
    }

    bool pump() override {
        for (;;) {
            if (!reap_notifications()) return false;
            if (!queued_.empty()) {
                if (!send_front()) return false;
                if (blocked_) return true;
                continue;
            }
            if (eof_) return pass_on_eof();
            // Every buffer is pinned by the kernel: the notification that frees one raises
            // EPOLLERR on out_, which calls pump() again.
            if (free_.empty()) return true;
            const int i = free_.front();
            const IoStep got = nonblocking_call(
                "recv", [&] { return recv(in_, buffers_[i].data.get(), kBufSize, 0); });
            if (!got.moved) return got.pump_result;
            if (got.bytes == 0) {
                eof_ = true;
                continue;
            }
            free_.pop_front();
            buffers_[i].len = got.bytes;
            buffers_[i].off = 0;
            queued_.push_back(i);
        }
    }

private:
    struct Buffer {
        std::unique_ptr<char[]> data;
        size_t len = 0;
        size_t off = 0;
        unsigned unnotified = 0;  // sends from this buffer still awaiting their notification
        bool queued = false;
    };

    bool kernel_holds_buffers() const override { return !buffer_of_send_.empty(); }

    // Sends (part of) the oldest filled buffer. Sets blocked_ when the socket cannot take more.
    bool send_front() {
        blocked_ = false;
        const int i = queued_.front();
        Buffer& b = buffers_[i];
        b.queued = true;
        const ssize_t n =
            send(out_, b.data.get() + b.off, b.len - b.off, MSG_ZEROCOPY | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) return true;
            // ENOBUFS: the socket's option-memory budget for zero-copy state is spent; it
            // comes back with the notifications still outstanding.
            if (would_block(errno) || (errno == ENOBUFS && kernel_holds_buffers())) {
                blocked_ = true;
                return true;
            }
            return conn_error("send(MSG_ZEROCOPY)", errno);
        }
        buffer_of_send_[next_send_++] = i;
        ++b.unnotified;
        ++stats_.zc_sends;
        b.off += size_t(n);
        stats_.bytes += uint64_t(n);
        if (b.off == b.len) {
            queued_.pop_front();
            b.queued = false;  // now only waits for its notifications
        }
        return true;
    }

    // Reads every notification queued on out_ and frees the buffers they release.
    bool reap_notifications() {
        for (;;) {
            alignas(cmsghdr) char control[128];
            msghdr msg{};
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            const IoStep got = nonblocking_call("recvmsg(MSG_ERRQUEUE)",
                                                [&] { return recvmsg(out_, &msg, MSG_ERRQUEUE); });
            if (!got.moved) return got.pump_result;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
                const bool is_err = (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                                    (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR);
                if (!is_err) continue;
                sock_extended_err ee;
                std::memcpy(&ee, CMSG_DATA(c), sizeof ee);
                if (ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY) {
                    if (ee.ee_errno != 0) return conn_error("socket error queue", int(ee.ee_errno));
                    continue;
                }
                on_notification(ee.ee_info, ee.ee_data,
                                 (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0);
            }
        }
    }

    // [lo, hi] is an inclusive range of send numbers; it may wrap around 2^32.
    void on_notification(uint32_t lo, uint32_t hi, bool copied) {
        ++stats_.zc_notifications;
        for (uint32_t seq = lo;; ++seq) {
            ++stats_.zc_notified_sends;
            if (copied) ++stats_.zc_copied_sends;
            release_send(seq);
            if (seq == hi) break;
        }
    }

    void release_send(uint32_t seq) {
        const auto it = buffer_of_send_.find(seq);
        if (it == buffer_of_send_.end()) return;
        Buffer& b = buffers_[it->second];
        if (--b.unnotified == 0 && !b.queued) free_.push_back(it->second);
        buffer_of_send_.erase(it);
    }

    std::array<Buffer, kRotatingBuffers> buffers_;
    std::deque<int> free_;    // may be received into
    std::deque<int> queued_;  // received, not yet completely sent; in stream order
    std::unordered_map<uint32_t, int> buffer_of_send_;  // unnotified send number -> buffer
    uint32_t next_send_ = 0;
    bool blocked_ = false;
};

std::unique_ptr<Direction> make_direction(Mode mode, int in, int out, Stats& stats) {
    switch (mode) {
        case Mode::Copy: return std::make_unique<CopyDirection>(in, out, stats);
        case Mode::Splice: return std::make_unique<SpliceDirection>(in, out, stats);
        case Mode::MsgZerocopy: return std::make_unique<MsgZerocopyDirection>(in, out, stats);
        default: break;
    }
    std::fprintf(stderr, "zero_copy_probe: internal error: not an epoll mode\n");
    std::exit(1);
}

// A client connection and its upstream connection, relayed both ways.
struct EpollPair {
    UniqueFd client;
    UniqueFd upstream;
    std::unique_ptr<Direction> to_upstream;
    std::unique_ptr<Direction> to_client;
    bool closed = false;

    // Any readiness change on either socket may unblock either direction: pump both.
    void on_event(Stats& stats) {
        if (!to_upstream->pump() || !to_client->pump()) {
            ++stats.failed_connections;
            closed = true;
        } else if (to_upstream->finished() && to_client->finished()) {
            closed = true;
        }
    }
};

class EpollRelay {
public:
    // `stop` is the signalfd for SIGINT / SIGTERM; when it becomes readable, run() returns.
    EpollRelay(Mode mode, uint16_t listen_port, uint16_t target_port, UniqueFd stop, Stats& stats)
        : mode_(mode),
          target_port_(target_port),
          stats_(stats),
          listener_(listen_on(listen_port, true)),
          stop_(std::move(stop)),
          epoll_(epoll_create1(EPOLL_CLOEXEC)) {
        if (!epoll_) die("epoll_create1");
        watch(listener_.get(), EPOLLIN, &listener_);
        watch(stop_.get(), EPOLLIN, &stop_);
    }

    void run() {
        std::array<epoll_event, 64> events;
        bool stopping = false;
        while (!stopping) {
            const int n = epoll_wait(epoll_.get(), events.data(), int(events.size()), -1);
            if (n < 0) {
                if (errno == EINTR) continue;  // e.g. after SIGSTOP / SIGCONT
                die("epoll_wait");
            }
            for (int i = 0; i < n; ++i) {
                void* const source = events[i].data.ptr;
                if (source == &stop_)
                    stopping = true;  // the signal itself stays pending, blocked, until exit
                else if (source == &listener_)
                    accept_all();
                else
                    on_pair_event(static_cast<EpollPair*>(source));
            }
            // Freed only after the batch, since later events in it may point at the same pair.
            for (EpollPair* pair : closed_) pairs_.erase(pair);
            closed_.clear();
        }
    }

private:
    // `tag` comes back as the event's data.ptr: the address of the listener's or the signalfd's
    // UniqueFd member, or the EpollPair a connection socket belongs to.
    void watch(int fd, uint32_t events, void* tag) {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = tag;
        if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }

    void accept_all() {
        for (;;) {
            UniqueFd client(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
            if (!client) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                if (would_block(errno)) return;
                die("accept4");
            }
            UniqueFd upstream = connect_to(target_port_);
            if (!upstream) {
                ++stats_.failed_connections;
                continue;  // dropping `client` closes it
            }
            add_pair(std::move(client), std::move(upstream));
        }
    }

    void add_pair(UniqueFd client, UniqueFd upstream) {
        set_nonblocking(upstream.get());
        if (mode_ == Mode::MsgZerocopy) {
            enable_zerocopy(client.get());
            enable_zerocopy(upstream.get());
        }
        auto pair = std::make_unique<EpollPair>();
        pair->to_upstream = make_direction(mode_, client.get(), upstream.get(), stats_);
        pair->to_client = make_direction(mode_, upstream.get(), client.get(), stats_);
        pair->client = std::move(client);
        pair->upstream = std::move(upstream);
        // Edge-triggered (see Direction); EPOLLERR is reported without being asked for.
        constexpr uint32_t events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        watch(pair->client.get(), events, pair.get());
        watch(pair->upstream.get(), events, pair.get());
        ++stats_.connections;
        pairs_.emplace(pair.get(), std::move(pair));
    }

    void on_pair_event(EpollPair* pair) {
        if (pair->closed) return;  // both sockets can appear in one batch
        pair->on_event(stats_);
        if (pair->closed) closed_.push_back(pair);
    }

    Mode mode_;
    uint16_t target_port_;
    Stats& stats_;
    UniqueFd listener_;
    UniqueFd stop_;
    UniqueFd epoll_;
    std::unordered_map<EpollPair*, std::unique_ptr<EpollPair>> pairs_;
    std::vector<EpollPair*> closed_;  // closed during the current batch of events
};

// ---------------------------------------------------------------------------------------------
// io_uring modes: uring_copy, uring_send_zc, uring_splice_linked
// ---------------------------------------------------------------------------------------------

struct UringPair;
struct UringDirection;

// What a CQE completes. The request's address is the user_data of its SQE; each one lives as
// long as anything it describes can still complete.
struct UringRequest {
    enum class Kind { Accept, Stop, Recv, Send, SpliceIn, SpliceOut };  // a Send's notification CQE is a Send too
    Kind kind;
    UringDirection* direction = nullptr;  // for Recv and Send
    int buffer = 0;                       // for Recv and Send
};

// One direction of a pair. Per direction at most one recv and one send are in flight: the
// single send keeps the byte stream in order even when a send completes short.
struct UringDirection {
    struct Buffer {
        std::unique_ptr<char[]> data = std::make_unique<char[]>(kBufSize);
        size_t len = 0;
        size_t off = 0;
        unsigned unnotified = 0;  // zero-copy sends from this buffer without their notification
        bool queued = false;
        UringRequest recv_request{UringRequest::Kind::Recv};
        UringRequest send_request{UringRequest::Kind::Send};
    };

    UringPair* pair = nullptr;
    int in = -1;
    int out = -1;
    std::array<Buffer, kRotatingBuffers> buffers;
    std::deque<int> free{0, 1, 2, 3};
    std::deque<int> queued;  // received, not yet completely sent; in stream order
    bool recv_in_flight = false;
    bool send_in_flight = false;
    unsigned notifs_pending = 0;
    bool eof = false;
    bool shut = false;
    // uring_splice_linked only
    UniqueFd pipe_read;
    UniqueFd pipe_write;
    size_t in_pipe = 0;  // spliced in, not yet out
    bool splice_in_flight = false;
    bool splice_out_flight = false;
    UringRequest splice_in_request{UringRequest::Kind::SpliceIn};
    UringRequest splice_out_request{UringRequest::Kind::SpliceOut};

    bool busy() const {
        return recv_in_flight || send_in_flight || notifs_pending > 0 || splice_in_flight || splice_out_flight;
    }
    bool finished() const { return shut && !busy(); }
};
static_assert(kRotatingBuffers == 4, "UringDirection::free is initialised for 4 buffers");

struct UringPair {
    UniqueFd client;
    UniqueFd upstream;
    UringDirection to_upstream;
    UringDirection to_client;
    bool failing = false;  // an error occurred; waiting for in-flight requests before freeing
};

class UringRelay {
public:
    // `stop` is the signalfd for SIGINT / SIGTERM; when it becomes readable, run() returns.
    UringRelay(Mode mode, uint16_t listen_port, uint16_t target_port, UniqueFd stop, Stats& stats)
        : zero_copy_(mode == Mode::UringSendZc),
          splice_linked_(mode == Mode::UringSpliceLinked),
          target_port_(target_port),
          stats_(stats),
          listener_(listen_on(listen_port, false)),
          stop_(std::move(stop)) {
        const int ret = io_uring_queue_init(256, &ring_, 0);
        if (ret < 0) {
            errno = -ret;
            die("io_uring_queue_init");
        }
    }
    ~UringRelay() {
        // The pending accept holds a reference to the listening socket, and the ring is torn
        // down asynchronously after exit; shutting the listener down frees the port right away,
        // so the next run can bind it.
        shutdown(listener_.get(), SHUT_RDWR);
        io_uring_queue_exit(&ring_);
    }
    UringRelay(const UringRelay&) = delete;
    UringRelay& operator=(const UringRelay&) = delete;

    void run() {
        submit_accept();
        submit_stop_poll();
        while (!stopping_) {
            const int ret = io_uring_submit_and_wait(&ring_, 1);
            if (ret < 0) {
                if (ret == -EINTR) continue;
                errno = -ret;
                die("io_uring_submit_and_wait");
            }
            io_uring_cqe* cqe;
            unsigned head;
            unsigned seen = 0;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                ++seen;
                complete(*static_cast<UringRequest*>(io_uring_cqe_get_data(cqe)), cqe->res,
                         cqe->flags);
            }
            io_uring_cq_advance(&ring_, seen);
        }
    }

private:
    io_uring_sqe* sqe() {
        io_uring_sqe* s = io_uring_get_sqe(&ring_);
        if (s == nullptr) {  // submission queue full: flush it and retry
            io_uring_submit(&ring_);
            s = io_uring_get_sqe(&ring_);
            if (s == nullptr) {
                std::fprintf(stderr, "zero_copy_probe: io_uring submission queue full\n");
                std::exit(1);
            }
        }
        return s;
    }

    void submit_accept() {
        io_uring_sqe* s = sqe();
        io_uring_prep_accept(s, listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        io_uring_sqe_set_data(s, &accept_request_);
    }

    // A poll rather than a read: readiness is all run() needs, and the signal itself may stay
    // pending (blocked) until exit.
    void submit_stop_poll() {
        io_uring_sqe* s = sqe();
        io_uring_prep_poll_add(s, stop_.get(), POLLIN);
        io_uring_sqe_set_data(s, &stop_request_);
    }

    void complete(UringRequest& request, int res, unsigned flags) {
        switch (request.kind) {
            case UringRequest::Kind::Accept: on_accept(res); return;
            case UringRequest::Kind::Stop: on_stop(res); return;
            case UringRequest::Kind::Recv: on_recv(*request.direction, request.buffer, res); break;
            case UringRequest::Kind::SpliceIn: on_splice_in(*request.direction, res); break;
            case UringRequest::Kind::SpliceOut: on_splice_out(*request.direction, res); break;
            case UringRequest::Kind::Send:
                if (flags & IORING_CQE_F_NOTIF)
                    on_notification(*request.direction, request.buffer, res);
                else
                    on_send(*request.direction, request.buffer, res, flags);
                break;
        }
        UringPair* pair = request.direction->pair;  // `request` dies with the pair
        advance(pair->to_upstream);
        advance(pair->to_client);
        maybe_free(pair);
    }

    void on_stop(int res) {
        if (res < 0) {
            errno = -res;
            die("poll(signalfd)");
        }
        stopping_ = true;
    }

    void on_accept(int res) {
        submit_accept();
        if (res < 0) {
            if (res == -EINTR || res == -ECONNABORTED) return;
            errno = -res;
            die("accept");
        }
        UniqueFd client(res);
        UniqueFd upstream = connect_to(target_port_);
        if (!upstream) {
            ++stats_.failed_connections;
            return;
        }
        auto* pair = new UringPair;  // freed in maybe_free() once nothing is in flight
        pair->client = std::move(client);
        pair->upstream = std::move(upstream);
        init_direction(pair->to_upstream, pair, pair->client.get(), pair->upstream.get());
        init_direction(pair->to_client, pair, pair->upstream.get(), pair->client.get());
        ++stats_.connections;
        advance(pair->to_upstream);
        advance(pair->to_client);
    }

    void init_direction(UringDirection& d, UringPair* pair, int in, int out) const {
        d.pair = pair;
        d.in = in;
        d.out = out;
        d.splice_in_request.direction = &d;
        d.splice_out_request.direction = &d;
        if (splice_linked_) {
            int fds[2];
            if (pipe2(fds, O_CLOEXEC) < 0) die("pipe2");  // blocking: io-wq workers wait on it
            d.pipe_read.reset(fds[0]);
            d.pipe_write.reset(fds[1]);
        }
        for (int i = 0; i < kRotatingBuffers; ++i) {
            d.buffers[i].recv_request.direction = &d;
            d.buffers[i].recv_request.buffer = i;
            d.buffers[i].send_request.direction = &d;
            d.buffers[i].send_request.buffer = i;
        }
    }

    // Starts whatever this direction can do now.
    void advance(UringDirection& d) {
        if (d.pair->failing) return;
        if (splice_linked_) {
            advance_spliced(d);
            return;
        }
        if (!d.send_in_flight && !d.queued.empty()) {
            const int i = d.queued.front();
            UringDirection::Buffer& b = d.buffers[i];
            io_uring_sqe* s = sqe();
            if (zero_copy_)
                io_uring_prep_send_zc(s, d.out, b.data.get() + b.off, b.len - b.off, MSG_NOSIGNAL,
                                      IORING_SEND_ZC_REPORT_USAGE);
            else
                io_uring_prep_send(s, d.out, b.data.get() + b.off, b.len - b.off, MSG_NOSIGNAL);
            io_uring_sqe_set_data(s, &b.send_request);
            d.send_in_flight = true;
        }
        if (!d.recv_in_flight && !d.eof && !d.free.empty()) {
            const int i = d.free.front();
            d.free.pop_front();
            io_uring_sqe* s = sqe();
            io_uring_prep_recv(s, d.in, d.buffers[i].data.get(), kBufSize, 0);
            io_uring_sqe_set_data(s, &d.buffers[i].recv_request);
            d.recv_in_flight = true;
        }
        if (d.eof && d.queued.empty() && !d.shut) {
            if (shutdown(d.out, SHUT_WR) < 0 && errno != ENOTCONN) fail(d, "shutdown", errno);
            d.shut = true;
        }
    }

    // One chain (socket -> pipe, then pipe -> socket) at a time; bytes a short splice out left
    // in the pipe go on alone first.
    void advance_spliced(UringDirection& d) {
        if (d.splice_in_flight || d.splice_out_flight) return;
        if (d.in_pipe > 0) {
            submit_splice_out(d, d.in_pipe);
        } else if (!d.eof) {
            io_uring_sqe* s = sqe();
            io_uring_prep_splice(s, d.in, -1, d.pipe_write.get(), -1, kBufSize, 0);
            io_uring_sqe_set_data(s, &d.splice_in_request);
            s->flags |= IOSQE_IO_HARDLINK;
            d.splice_in_flight = true;
            submit_splice_out(d, kBufSize);
        } else if (!d.shut) {
            if (shutdown(d.out, SHUT_WR) < 0 && errno != ENOTCONN) fail(d, "shutdown", errno);
            d.shut = true;
        }
    }

    void submit_splice_out(UringDirection& d, size_t length) {
        io_uring_sqe* s = sqe();
        io_uring_prep_splice(s, d.pipe_read.get(), -1, d.out, -1, unsigned(length), 0);
        io_uring_sqe_set_data(s, &d.splice_out_request);
        d.splice_out_flight = true;
    }

    void on_splice_in(UringDirection& d, int res) {
        d.splice_in_flight = false;
        if (res > 0) {
            d.in_pipe += size_t(res);
        } else {
            // The hard-linked splice out runs anyway and waits on the empty pipe: with no writer
            // left it ends with 0.
            d.pipe_write.reset();
            if (res == 0)
                d.eof = true;
            else if (!d.pair->failing)
                fail(d, "splice socket->pipe", -res);
        }
    }

    void on_splice_out(UringDirection& d, int res) {
        d.splice_out_flight = false;
        if (res > 0) {
            d.in_pipe -= size_t(res);
            stats_.bytes += uint64_t(res);
        } else if (res < 0 && !d.pair->failing) {
            fail(d, "splice pipe->socket", -res);
        }
    }

    void on_recv(UringDirection& d, int buffer, int res) {
        d.recv_in_flight = false;
        if (res <= 0) {
            d.free.push_front(buffer);
            if (res == 0)
                d.eof = true;
            else if (!d.pair->failing)
                fail(d, "recv", -res);
            return;
        }
        UringDirection::Buffer& b = d.buffers[buffer];
        b.len = size_t(res);
        b.off = 0;
        b.queued = true;
        d.queued.push_back(buffer);
    }

    void on_send(UringDirection& d, int buffer, int res, unsigned flags) {
        d.send_in_flight = false;
        UringDirection::Buffer& b = d.buffers[buffer];
        if (flags & IORING_CQE_F_MORE) {  // a notification CQE will follow for this send
            ++b.unnotified;
            ++d.notifs_pending;
        }
        if (res < 0) {
            if (!d.pair->failing) fail(d, zero_copy_ ? "send_zc" : "send", -res);
            return;
        }
        if (zero_copy_) ++stats_.zc_sends;
        b.off += size_t(res);
        stats_.bytes += uint64_t(res);
        if (b.off == b.len) {
            d.queued.pop_front();
            b.queued = false;
            if (b.unnotified == 0) d.free.push_back(buffer);
        }
    }

    void on_notification(UringDirection& d, int buffer, int res) {
        UringDirection::Buffer& b = d.buffers[buffer];
        --b.unnotified;
        --d.notifs_pending;
        ++stats_.zc_notifications;
        ++stats_.zc_notified_sends;
        if (uint32_t(res) & IORING_NOTIF_USAGE_ZC_COPIED) ++stats_.zc_copied_sends;
        if (b.unnotified == 0 && !b.queued) d.free.push_back(buffer);
    }

    // Stops the pair: shutting both sockets down completes the pending recvs, and the pair is
    // freed once no request or notification refers to it any more.
    void fail(UringDirection& d, const char* what, int err) {
        conn_error(what, err);
        ++stats_.failed_connections;
        d.pair->failing = true;
        shutdown(d.pair->client.get(), SHUT_RDWR);
        shutdown(d.pair->upstream.get(), SHUT_RDWR);
    }

    static void maybe_free(UringPair* pair) {
        const bool done = pair->failing
                              ? !pair->to_upstream.busy() && !pair->to_client.busy()
                              : pair->to_upstream.finished() && pair->to_client.finished();
        if (done) delete pair;
    }

    bool zero_copy_;
    bool splice_linked_;
    uint16_t target_port_;
    Stats& stats_;
    UniqueFd listener_;
    UniqueFd stop_;
    io_uring ring_{};
    UringRequest accept_request_{UringRequest::Kind::Accept};
    UringRequest stop_request_{UringRequest::Kind::Stop};
    bool stopping_ = false;
};

// ---------------------------------------------------------------------------------------------

// Blocks SIGINT and SIGTERM and returns a signalfd that becomes readable when one is pending:
// the event loop watches it and stops, so nothing is shared with a signal handler. Called
// before any socket exists; a signal that comes earlier still ends the process as before.
UniqueFd stop_signal_fd() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) < 0) die("sigprocmask");
    UniqueFd fd(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd) die("signalfd");
    return fd;
}

bool parse_mode(std::string_view s, Mode& mode) {
    constexpr std::pair<std::string_view, Mode> kModes[] = {
        {"copy", Mode::Copy},
        {"splice", Mode::Splice},
        {"msg_zerocopy", Mode::MsgZerocopy},
        {"uring_copy", Mode::UringCopy},
        {"uring_send_zc", Mode::UringSendZc},
        {"uring_splice_linked", Mode::UringSpliceLinked},
    };
    for (const auto& [name, m] : kModes)
        if (s == name) {
            mode = m;
            return true;
        }
    return false;
}

bool parse_port(const char* s, uint16_t& port) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535) return false;
    port = uint16_t(v);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Mode mode{};
    uint16_t listen_port = 0;
    uint16_t target_port = 0;
    if (argc != 4 || !parse_mode(argv[1], mode) || !parse_port(argv[2], listen_port) ||
        !parse_port(argv[3], target_port)) {
        std::fprintf(stderr,
                     "usage: %s MODE LISTEN_PORT TARGET_PORT\n"
                     "  MODE: copy | splice | msg_zerocopy | uring_copy | uring_send_zc | uring_splice_linked\n"
                     "  relays 127.0.0.1:LISTEN_PORT <-> 127.0.0.1:TARGET_PORT; SIGINT/SIGTERM "
                     "prints a summary and exits\n",
                     argc > 0 ? argv[0] : "zero_copy_probe");
        return 2;
    }
    UniqueFd stop = stop_signal_fd();
    signal(SIGPIPE, SIG_IGN);  // splice() to a closed socket would otherwise kill us

    Stats stats{.mode = argv[1]};
    if (mode == Mode::UringCopy || mode == Mode::UringSendZc || mode == Mode::UringSpliceLinked) {
        UringRelay relay(mode, listen_port, target_port, std::move(stop), stats);
        relay.run();
    } else {
        EpollRelay relay(mode, listen_port, target_port, std::move(stop), stats);
        relay.run();
    }
    print_summary(stats);  // after the relay's teardown, whose CPU time counts too
    return 0;
}
