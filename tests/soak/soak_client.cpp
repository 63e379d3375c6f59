#include "soak_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <vector>

#include "prng_stream.hpp"

namespace ringlb::soak {

namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kMaxReadPerTurn = 512 * 1024;
constexpr int kPollMs = 20;

bool is_transient(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

// A non-blocking connect to 127.0.0.1:port; a slow reader shrinks its receive buffer first
// (before the handshake, so the window is small from the start).
UniqueFd start_connect(std::uint16_t port, bool small_receive_buffer) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return fd;
    if (small_receive_buffer) shrink_receive_buffer(fd.get());
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 && errno != EINPROGRESS)
        return {};
    return fd;
}

// One scripted stream from the client's side.
class ClientStream {
public:
    ClientStream(const StreamPlan& plan, const DriverSettings& settings, Clock::time_point now)
        : outbound_(up_seed(settings.run_seed, plan.id)),
          inbound_(down_seed(settings.run_seed, plan.id)),
          deadline_(now + settings.stream_deadline) {
        record_.plan = plan;
        const Header header = encode_header(plan);
        pending_.assign(header.begin(), header.end());
        if (plan.client_reads_slowly) pacer_ = ReadPacer(now, plan.slow_for);
        fd_ = start_connect(settings.port, plan.client_reads_slowly);
        if (!fd_.valid()) {
            record_.connect_failed = true;
            record_.connect_error = errno;
        }
    }

    bool finished() const { return !fd_.valid(); }
    const ClientRecord& record() const { return record_; }

    pollfd poll_entry(Clock::time_point now) const {
        if (!record_.connected) return pollfd{fd_.get(), POLLOUT, 0};
        short events = 0;
        if (record_.down_end == StreamEnd::Open && pacer_.allowance(now, 1) > 0) events |= POLLIN;
        if (!done_sending()) events |= POLLOUT;
        return pollfd{fd_.get(), events, 0};
    }

    void handle(short revents, Clock::time_point now) {
        if (now >= deadline_) {
            record_.hung = true;
            return close_abortively(fd_);
        }
        if (!record_.connected) return revents ? finish_connect() : void();
        const bool urgent = (revents & (POLLHUP | POLLERR)) != 0;
        if (revents & (POLLIN | POLLHUP | POLLERR)) read_some(now, urgent);
        if (!finished() && !done_sending()) send_some();
        if (!finished() && record_.down_end == StreamEnd::CleanEof && record_.sent_fin) fd_.reset();
    }

private:
    bool done_sending() const { return record_.sent_fin || record_.reset_by_client || record_.send_failed; }

    void finish_connect() {
        int error = 0;
        socklen_t length = sizeof error;
        if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
        if (error == ECONNRESET) {
            // ringlb accepted and then reset the connection before this thread looked at it (its
            // backend was killed, say): a reset stream, not a refused one.
            record_.connected = true;
            record_.down_end = StreamEnd::Reset;
            return fd_.reset();
        }
        if (error != 0) {
            record_.connect_failed = true;
            record_.connect_error = error;
            return fd_.reset();
        }
        record_.connected = true;
        record_.local_port = test::local_port(fd_.get());
        if (record_.plan.client_action == ClientAction::ResetAtConnect) reset_now();
    }

    void reset_now() {
        record_.reset_by_client = true;
        close_abortively(fd_);
    }

    void read_some(Clock::time_point now, bool urgent) {
        std::uint8_t buffer[kChunk];
        std::size_t total = 0;
        while (record_.down_end == StreamEnd::Open && total < kMaxReadPerTurn) {
            const std::size_t want = urgent ? sizeof buffer : pacer_.allowance(now, sizeof buffer);
            if (want == 0) return;
            const ssize_t n = ::recv(fd_.get(), buffer, want, 0);
            if (n > 0) {
                total += static_cast<std::size_t>(n);
                verify(std::span<const std::uint8_t>(buffer, static_cast<std::size_t>(n)));
            } else if (n == 0) {
                record_.down_end = StreamEnd::CleanEof;
            } else if (!is_transient(errno)) {
                record_.down_end = StreamEnd::Reset;
                return close_abortively(fd_);
            } else if (errno != EINTR) {
                return;
            }
        }
    }

    void verify(std::span<const std::uint8_t> bytes) {
        pacer_.consumed(bytes.size());
        if (record_.mismatch) return;
        if (record_.received + bytes.size() > record_.plan.down_bytes) {
            record_.mismatch = record_.plan.down_bytes;  // more than any backend sends
            return;
        }
        if (auto bad = inbound_.verify(bytes)) {
            record_.mismatch = *bad;
            return;
        }
        record_.received += bytes.size();
    }

    // Bytes of the up stream this client sends in all: the plan's reset point cuts it short.
    std::uint64_t send_limit() const {
        const StreamPlan& plan = record_.plan;
        return plan.client_action == ClientAction::ResetMidStream ? plan.client_reset_at : plan.up_bytes;
    }

    void send_some() {
        while (!done_sending()) {
            if (pending_offset_ == pending_.size() && !refill()) return finish_sending();
            const ssize_t n = ::send(fd_.get(), pending_.data() + pending_offset_, pending_.size() - pending_offset_,
                                     MSG_NOSIGNAL);
            if (n > 0) {
                count_sent(static_cast<std::size_t>(n));
            } else if (n < 0 && is_transient(errno)) {
                if (errno != EINTR) return;
            } else {
                record_.send_failed = true;
                return close_abortively(fd_);
            }
        }
    }

    void count_sent(std::size_t n) {
        pending_offset_ += n;
        const std::size_t header_part = std::min(header_unsent_, n);
        header_unsent_ -= header_part;
        record_.sent += n - header_part;
    }

    bool refill() {
        const std::uint64_t left = send_limit() - outbound_.position();
        if (left == 0) return false;
        pending_.resize(static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk)));
        pending_offset_ = 0;
        outbound_.fill(pending_);
        return true;
    }

    void finish_sending() {
        if (record_.plan.client_action == ClientAction::ResetMidStream) return reset_now();
        ::shutdown(fd_.get(), SHUT_WR);
        record_.sent_fin = true;
    }

    UniqueFd fd_;
    test::PrngStream outbound_;
    test::PrngStream inbound_;
    Clock::time_point deadline_;
    std::vector<std::uint8_t> pending_;
    std::size_t pending_offset_ = 0;
    std::size_t header_unsent_ = kHeaderBytes;
    ReadPacer pacer_;
    ClientRecord record_;
};

}  // namespace

ClientDriver::ClientDriver(const DriverSettings& settings, Ledger& ledger) : settings_(settings), ledger_(ledger) {
    thread_ = std::thread([this] { run(); });
}

ClientDriver::~ClientDriver() { join(); }

void ClientDriver::join() {
    if (thread_.joinable()) thread_.join();
}

void ClientDriver::run() {
    std::vector<std::unique_ptr<ClientStream>> streams;
    std::vector<pollfd> fds;
    std::uint64_t next_id = settings_.first_id;
    for (;;) {
        Clock::time_point now = Clock::now();
        while (now < settings_.stop_starting && streams.size() < settings_.concurrency) {
            streams.push_back(std::make_unique<ClientStream>(plan_stream(settings_.run_seed, next_id), settings_, now));
            next_id += settings_.id_stride;
            ++started_;
        }
        // Ended streams (including failed connects) go to the ledger before anything else.
        std::erase_if(streams, [this](const auto& stream) {
            if (!stream->finished()) return false;
            ledger_.record_client(stream->record());
            return true;
        });
        open_ = streams.size();
        if (streams.empty() && now >= settings_.stop_starting) return;
        fds.clear();
        for (const auto& stream : streams) fds.push_back(stream->poll_entry(now));
        if (::poll(fds.data(), fds.size(), kPollMs) < 0 && errno != EINTR) return;
        now = Clock::now();
        for (std::size_t i = 0; i < streams.size(); ++i) streams[i]->handle(fds[i].revents, now);
    }
}

}  // namespace ringlb::soak
