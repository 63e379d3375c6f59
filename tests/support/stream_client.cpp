#include "stream_client.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "backends.hpp"
#include "net_util.hpp"
#include "prng_stream.hpp"

namespace ringlb::test {

std::string StreamClientResult::describe() const {
    std::ostringstream out;
    out << "client side of connection id=" << id << (connected ? "" : " (connect failed)") << ": sent " << sent
        << ", received " << received;
    if (first_mismatch) out << ", FIRST MISMATCH at stream offset " << *first_mismatch;
    out << (saw_eof ? ", saw EOF" : ", no EOF");
    if (!error.empty()) out << ", error: " << error;
    return out.str();
}

namespace {

constexpr std::size_t kChunk = 64 * 1024;

class StreamConnection {
public:
    StreamConnection(std::uint64_t id, std::uint64_t bytes_each_way)
        : outbound_(client_to_server_seed(id)), inbound_(server_to_client_seed(id)), total_(bytes_each_way) {
        result_.id = id;
        for (int b = 0; b < 8; ++b) pending_.push_back(static_cast<std::uint8_t>(id >> (8 * b)));
    }

    void connect(std::uint16_t port) {
        fd_ = connect_to(port, Family::V4, 5s);
        result_.connected = fd_.valid();
        if (!fd_.valid()) result_.error = "connect failed";
    }

    bool done() const { return !result_.error.empty() || (result_.saw_eof && write_shut_); }

    pollfd poll_entry() const {
        short events = 0;
        if (!result_.saw_eof) events |= POLLIN;
        if (!write_shut_) events |= POLLOUT;
        return pollfd{fd_.get(), events, 0};
    }

    void handle(short revents) {
        if (revents & (POLLIN | POLLHUP | POLLERR)) read_available();
        if (!done() && (revents & (POLLOUT | POLLERR))) write_available();
    }

    void give_up(const std::string& why) {
        if (result_.error.empty()) result_.error = why;
    }
    const StreamClientResult& result() const { return result_; }

private:
    void read_available() {
        std::uint8_t buffer[kChunk];
        for (;;) {
            ssize_t n = ::recv(fd_.get(), buffer, sizeof buffer, 0);
            if (n > 0) {
                verify(std::span<const std::uint8_t>(buffer, static_cast<std::size_t>(n)));
                continue;
            }
            if (n == 0) {
                result_.saw_eof = true;
                return;
            }
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) give_up(std::string("recv: ") + std::strerror(errno));
            return;
        }
    }

    void verify(std::span<const std::uint8_t> bytes) {
        if (result_.first_mismatch) return;
        if (result_.received + bytes.size() > total_) {
            give_up("received more than " + std::to_string(total_) + " bytes");
            return;
        }
        if (auto bad = inbound_.verify(bytes)) {
            result_.first_mismatch = *bad;
            return;
        }
        result_.received += bytes.size();
    }

    void write_available() {
        while (!write_shut_) {
            if (pending_offset_ == pending_.size()) refill();
            if (pending_.empty()) {
                ::shutdown(fd_.get(), SHUT_WR);
                write_shut_ = true;
                return;
            }
            ssize_t n = ::send(fd_.get(), pending_.data() + pending_offset_, pending_.size() - pending_offset_,
                               MSG_NOSIGNAL);
            if (n > 0) {
                pending_offset_ += static_cast<std::size_t>(n);
                count_sent(static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            give_up(std::string("send: ") + std::strerror(errno));
            return;
        }
    }

    // Next chunk of the outbound stream; empty when everything was generated.
    void refill() {
        std::uint64_t left = total_ - outbound_.position();
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
        pending_.resize(n);
        pending_offset_ = 0;
        outbound_.fill(pending_);
    }

    // Counts stream bytes handed to the kernel (the 8 id bytes go first and are not counted).
    void count_sent(std::size_t n) {
        std::size_t id_part = std::min(id_bytes_unsent_, n);
        id_bytes_unsent_ -= id_part;
        result_.sent += n - id_part;
    }

    UniqueFd fd_;
    PrngStream outbound_;
    PrngStream inbound_;
    std::uint64_t total_;
    std::vector<std::uint8_t> pending_;
    std::size_t pending_offset_ = 0;
    std::size_t id_bytes_unsent_ = 8;
    bool write_shut_ = false;
    StreamClientResult result_;
};

}  // namespace

std::vector<StreamClientResult> run_stream_clients(std::uint16_t port, unsigned count, std::uint64_t first_id,
                                                   std::uint64_t bytes_each_way,
                                                   std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::vector<StreamConnection> connections;
    connections.reserve(count);
    for (unsigned i = 0; i < count; ++i) {
        connections.emplace_back(first_id + i, bytes_each_way);
        connections.back().connect(port);
    }

    std::vector<pollfd> fds;
    std::vector<StreamConnection*> active;
    for (;;) {
        fds.clear();
        active.clear();
        for (auto& c : connections) {
            if (c.done()) continue;
            fds.push_back(c.poll_entry());
            active.push_back(&c);
        }
        if (active.empty()) break;
        int left = millis_until(deadline);
        if (left == 0) {
            for (auto* c : active) c->give_up("timeout: no EOF/data before the deadline");
            break;
        }
        if (::poll(fds.data(), fds.size(), std::min(left, 1000)) < 0 && errno != EINTR) break;
        for (std::size_t i = 0; i < active.size(); ++i)
            if (fds[i].revents) active[i]->handle(fds[i].revents);
    }

    std::vector<StreamClientResult> results;
    for (const auto& c : connections) results.push_back(c.result());
    return results;
}

}  // namespace ringlb::test
