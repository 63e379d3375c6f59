#include "soak_backend.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "prng_stream.hpp"

namespace ringlb::soak {

namespace {

constexpr std::size_t kChunk = 64 * 1024;
// Per connection and loop turn, so one fast stream cannot starve the others.
constexpr std::size_t kMaxReadPerTurn = 512 * 1024;
constexpr int kPollMs = 20;  // also the pacing granularity of slow readers

bool is_transient(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

// One accepted connection, driven by the header its client sends first.
class BackendStream {
public:
    BackendStream(UniqueFd fd, std::uint64_t run_seed, Ledger& ledger)
        : fd_(std::move(fd)), run_seed_(run_seed), ledger_(ledger) {}

    bool finished() const { return !fd_.valid(); }

    pollfd poll_entry(Clock::time_point now) const {
        short events = 0;
        if (record_.up_end == StreamEnd::Open && (!plan_ || pacer_.allowance(now, 1) > 0)) events |= POLLIN;
        if (wants_to_send()) events |= POLLOUT;
        return pollfd{fd_.get(), events, 0};
    }

    void handle(short revents, Clock::time_point now) {
        if (revents & POLLERR) {
            int error = 0;
            socklen_t length = sizeof error;
            ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &length);
            if (error != 0) return end_by_peer_reset();
        }
        // A hang-up is read at once even by a slow reader: it must not wait for its pace.
        const bool urgent = (revents & (POLLHUP | POLLERR)) != 0;
        if (revents & (POLLIN | POLLHUP | POLLERR)) read_some(now, urgent);
        if (!finished()) send_some();
        if (!finished() && record_.up_end == StreamEnd::CleanEof && record_.sent_fin) end_cleanly();
    }

    // The backend dies under the stream: RST, as the kernel sends for a crashed process that
    // left unread data.
    void kill() {
        record_.killed = true;
        close_abortively(fd_);
        report(StreamEnd::Reset);
    }

private:
    bool wants_to_send() const {
        if (!plan_ || record_.sent_fin || finished()) return false;
        if (plan_->server_replies_after_eof && record_.up_end != StreamEnd::CleanEof) return false;
        if (plan_->server_stalls && Clock::now() < stall_until_) return false;
        return true;
    }

    void read_some(Clock::time_point now, bool urgent) {
        std::uint8_t buffer[kChunk];
        std::size_t total = 0;
        while (!finished() && record_.up_end == StreamEnd::Open && total < kMaxReadPerTurn) {
            std::size_t want = plan_ ? sizeof buffer : kHeaderBytes - header_fill_;
            if (plan_ && !urgent) want = pacer_.allowance(now, want);
            if (want == 0) return;
            const ssize_t n = ::recv(fd_.get(), buffer, want, 0);
            if (n > 0) {
                total += static_cast<std::size_t>(n);
                take(std::span<const std::uint8_t>(buffer, static_cast<std::size_t>(n)), now);
            } else if (n == 0) {
                record_.up_end = StreamEnd::CleanEof;
                if (!plan_) return end_anonymous(StreamEnd::CleanEof);
                stall_until_ = now + kStall;
            } else if (!is_transient(errno)) {
                return end_by_peer_reset();
            } else if (errno != EINTR) {
                return;
            }
        }
    }

    void take(std::span<const std::uint8_t> bytes, Clock::time_point now) {
        if (!plan_) return take_header(bytes, now);
        pacer_.consumed(bytes.size());
        if (record_.mismatch) return;
        if (record_.received + bytes.size() > plan_->up_bytes) {
            record_.mismatch = plan_->up_bytes;  // more than the client ever sends
            return;
        }
        if (auto bad = inbound_->verify(bytes)) {
            record_.mismatch = *bad;
            return;
        }
        record_.received += bytes.size();
    }

    void take_header(std::span<const std::uint8_t> bytes, Clock::time_point now) {
        std::copy(bytes.begin(), bytes.end(), header_.begin() + static_cast<std::ptrdiff_t>(header_fill_));
        header_fill_ += bytes.size();
        if (header_fill_ < kHeaderBytes) return;
        plan_ = decode_header(header_);
        if (!plan_) {
            anonymous_.bad_magic = true;
            close_abortively(fd_);
            return end_anonymous(StreamEnd::Reset);
        }
        record_.plan = *plan_;
        inbound_.emplace(up_seed(run_seed_, plan_->id));
        outbound_.emplace(down_seed(run_seed_, plan_->id));
        // No smaller receive buffer here, unlike the client: shrinking it after the handshake
        // would drop segments the peer was already allowed to send and leave the stream to
        // retransmission backoff instead of testing ringlb.
        if (plan_->server_reads_slowly) pacer_ = ReadPacer(now, plan_->slow_for);
    }

    void send_some() {
        while (wants_to_send()) {
            if (pending_offset_ == pending_.size() && !refill()) return finish_sending();
            const ssize_t n = ::send(fd_.get(), pending_.data() + pending_offset_, pending_.size() - pending_offset_,
                                     MSG_NOSIGNAL);
            if (n > 0) {
                pending_offset_ += static_cast<std::size_t>(n);
                record_.sent += static_cast<std::uint64_t>(n);
            } else if (n < 0 && is_transient(errno)) {
                if (errno != EINTR) return;
            } else {
                record_.send_failed = true;
                return end_by_peer_reset();
            }
        }
    }

    // The next chunk of the planned down stream; false when all of it was handed to the kernel.
    bool refill() {
        const std::uint64_t left = plan_->server_send_limit() - outbound_->position();
        if (left == 0) return false;
        pending_.resize(static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk)));
        pending_offset_ = 0;
        outbound_->fill(pending_);
        return true;
    }

    void finish_sending() {
        if (plan_->server_action == ServerAction::Reset) {
            record_.reset_by_backend = true;
            close_abortively(fd_);
            return report(record_.up_end);
        }
        ::shutdown(fd_.get(), SHUT_WR);
        record_.sent_fin = true;
    }

    void end_by_peer_reset() {
        record_.peer_reset = true;
        if (record_.up_end == StreamEnd::Open) record_.up_end = StreamEnd::Reset;
        close_abortively(fd_);
        if (!plan_) return end_anonymous(StreamEnd::Reset);
        report(record_.up_end);
    }

    void end_cleanly() {
        fd_.reset();
        report(StreamEnd::CleanEof);
    }

    void end_anonymous(StreamEnd end) {
        fd_.reset();
        anonymous_.header_bytes = header_fill_;
        anonymous_.end = end;
        if (!reported_) ledger_.record_anonymous(anonymous_);
        reported_ = true;
    }

    void report(StreamEnd up_end) {
        if (reported_) return;
        reported_ = true;
        if (!plan_) {
            anonymous_.header_bytes = header_fill_;
            anonymous_.end = up_end;
            ledger_.record_anonymous(anonymous_);
            return;
        }
        if (record_.up_end == StreamEnd::Open) record_.up_end = up_end;
        ledger_.record_backend(record_);
    }

    UniqueFd fd_;
    std::uint64_t run_seed_;
    Ledger& ledger_;
    Header header_{};
    std::size_t header_fill_ = 0;
    std::optional<StreamPlan> plan_;
    std::optional<test::PrngStream> inbound_;
    std::optional<test::PrngStream> outbound_;
    std::vector<std::uint8_t> pending_;
    std::size_t pending_offset_ = 0;
    ReadPacer pacer_;
    Clock::time_point stall_until_{};  // a stalling server's reply is due then
    BackendRecord record_;
    AnonymousRecord anonymous_;
    bool reported_ = false;
};

}  // namespace

// One life of a StreamBackend: from listen to kill.
class StreamBackend::Run {
public:
    Run(std::uint16_t port, std::uint64_t run_seed, Ledger& ledger)
        : listener_(test::listen_on_loopback(port)), run_seed_(run_seed), ledger_(ledger) {
        thread_ = std::thread([this] { loop(); });
    }
    ~Run() {
        stopping_ = true;
        thread_.join();
        for (auto& stream : streams_)
            if (!stream->finished()) stream->kill();
    }
    std::uint16_t port() const { return test::local_port(listener_.get()); }
    std::size_t open_connections() const { return open_.load(); }

private:
    void loop() {
        std::vector<pollfd> fds;
        while (!stopping_) {
            Clock::time_point now = Clock::now();
            fds.clear();
            fds.push_back({listener_.get(), POLLIN, 0});
            for (auto& stream : streams_) fds.push_back(stream->poll_entry(now));
            if (::poll(fds.data(), fds.size(), kPollMs) < 0 && errno != EINTR) return;
            now = Clock::now();
            for (std::size_t i = 0; i < streams_.size(); ++i)
                if (!streams_[i]->finished()) streams_[i]->handle(fds[i + 1].revents, now);
            if (fds[0].revents & POLLIN) accept_all();
            std::erase_if(streams_, [](const auto& stream) { return stream->finished(); });
            open_ = streams_.size();
        }
    }

    void accept_all() {
        for (;;) {
            const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            streams_.push_back(std::make_unique<BackendStream>(UniqueFd(fd), run_seed_, ledger_));
        }
    }

    UniqueFd listener_;
    std::uint64_t run_seed_;
    Ledger& ledger_;
    std::vector<std::unique_ptr<BackendStream>> streams_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> open_{0};
    std::thread thread_;
};

StreamBackend::StreamBackend(std::uint64_t run_seed, Ledger& ledger) : run_seed_(run_seed), ledger_(ledger) {
    run_ = std::make_unique<Run>(0, run_seed_, ledger_);
    port_ = run_->port();
}

StreamBackend::~StreamBackend() = default;

void StreamBackend::kill() { run_.reset(); }

std::size_t StreamBackend::open_connections() const { return run_ ? run_->open_connections() : 0; }

void StreamBackend::restart() {
    if (!run_) run_ = std::make_unique<Run>(port_, run_seed_, ledger_);
}

// ---------------------------------------------------------------------------------------------

BlackholeBackend::BlackholeBackend() : listener_(test::listen_on_loopback(0)), port_(test::local_port(listener_.get())) {
    thread_ = std::thread([this] { run(); });
}

BlackholeBackend::~BlackholeBackend() {
    stopping_ = true;
    thread_.join();
}

void BlackholeBackend::run() {
    std::vector<UniqueFd> held;
    std::vector<pollfd> fds;
    while (!stopping_) {
        fds.clear();
        fds.push_back({listener_.get(), POLLIN, 0});
        // Only a hang-up is watched: the data ringlb sends stays unread.
        for (const auto& fd : held) fds.push_back({fd.get(), POLLRDHUP, 0});
        if (::poll(fds.data(), fds.size(), kPollMs) < 0 && errno != EINTR) return;
        for (std::size_t i = 0; i < held.size(); ++i)
            if (fds[i + 1].revents & (POLLRDHUP | POLLHUP | POLLERR)) close_abortively(held[i]);
        std::erase_if(held, [](const UniqueFd& fd) { return !fd.valid(); });
        if (!(fds[0].revents & POLLIN)) continue;
        for (int fd; (fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
            held.emplace_back(fd);
            ++accepted_;
        }
    }
    for (auto& fd : held) close_abortively(fd);
}

}  // namespace ringlb::soak
