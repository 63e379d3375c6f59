#include "backends.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "prng_stream.hpp"

namespace ringlb::test {

// ---------------------------------------------------------------------------------------------
// PollServer

namespace {
constexpr std::size_t kIoChunk = 64 * 1024;
// Bound on bytes read from one connection per loop turn, so one busy connection cannot starve
// the others (and the stop flag) forever.
constexpr std::size_t kMaxReadPerTurn = 1024 * 1024;
constexpr int kPollIntervalMs = 20;  // how quickly stop() is noticed
}  // namespace

struct PollServer::Connection {
    UniqueFd fd;
    std::unique_ptr<BackendSession> session;
    std::vector<std::uint8_t> pending;  // produced but not yet sent
    std::size_t pending_offset = 0;
    bool read_eof = false;
    bool write_shut = false;
    bool closed = false;

    bool has_pending() const { return pending_offset < pending.size(); }

    void close(bool reset) {
        if (closed) return;
        closed = true;
        fd.reset();
        session->on_closed(reset);
    }

    // Reads what is available (bounded per turn); closes the connection on a reset or error.
    void read_available() {
        std::uint8_t buffer[kIoChunk];
        std::size_t total = 0;
        while (!read_eof && !closed && total < kMaxReadPerTurn) {
            ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
            if (n > 0) {
                total += static_cast<std::size_t>(n);
                session->on_receive(std::span<const std::uint8_t>(buffer, static_cast<std::size_t>(n)));
            } else if (n == 0) {
                read_eof = true;
                session->on_peer_eof();
            } else if (errno == EINTR) {
                continue;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            } else {
                close(true);
            }
        }
    }

    // Sends what the session produces until the socket is full or the session has nothing more,
    // then applies the session's decision about the drained state.
    void pump_output() {
        while (!closed && !write_shut) {
            if (!has_pending()) {
                pending.resize(kIoChunk);
                pending.resize(session->produce(std::span<std::uint8_t>(pending)));
                pending_offset = 0;
                if (pending.empty()) break;
            }
            ssize_t n = ::send(fd.get(), pending.data() + pending_offset, pending.size() - pending_offset,
                               MSG_NOSIGNAL);
            if (n > 0) {
                pending_offset += static_cast<std::size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return;
            } else {
                close(true);
                return;
            }
        }
        if (closed) return;
        if (!has_pending()) apply(session->when_drained());
        if (!closed && read_eof && write_shut) close(false);
    }

    void apply(WhenDrained decision) {
        if (decision == WhenDrained::ShutdownWrite && !write_shut) {
            ::shutdown(fd.get(), SHUT_WR);
            write_shut = true;
        } else if (decision == WhenDrained::Close) {
            close(false);
        }
    }
};

namespace {
// A listening socket on an IPv4 address other than 127.0.0.1 (which listen_on_loopback covers).
UniqueFd listen_on_ipv4(const std::string& ip, std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) throw std::system_error(errno, std::generic_category(), "socket");
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (::inet_pton(AF_INET, ip.c_str(), &address.sin_addr) != 1)
        throw std::invalid_argument("not an IPv4 address: " + ip);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
        throw std::system_error(errno, std::generic_category(), "bind " + ip + ":" + std::to_string(port));
    if (::listen(fd.get(), 4096) != 0) throw std::system_error(errno, std::generic_category(), "listen");
    return fd;
}
}  // namespace

PollServer::PollServer(std::uint16_t port, std::string ipv4) : ipv4_(std::move(ipv4)) {
    listener_ = ipv4_ == "127.0.0.1" ? listen_on_loopback(port) : listen_on_ipv4(ipv4_, port);
    port_ = local_port(listener_.get());
}

PollServer::~PollServer() { stop(); }

void PollServer::start(SessionFactory factory) {
    factory_ = std::move(factory);
    thread_ = std::thread([this] { run(); });
}

void PollServer::stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
    listener_.reset();
}

bool PollServer::wait_finished(std::size_t count, std::chrono::milliseconds timeout) const {
    auto deadline = Clock::now() + timeout;
    while (finished_.load() < count) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

void PollServer::accept_all(std::vector<std::unique_ptr<Connection>>& connections) {
    for (;;) {
        int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or a transient error: poll will tell us again
        auto connection = std::make_unique<Connection>();
        connection->fd.reset(fd);
        connection->session = factory_();
        ++accepted_;
        ++open_;
        connection->pump_output();
        connections.push_back(std::move(connection));
    }
}

void PollServer::run() {
    std::vector<std::unique_ptr<Connection>> connections;
    std::vector<pollfd> fds;
    while (!stopping_) {
        fds.clear();
        fds.push_back({listener_.get(), POLLIN, 0});
        for (auto& c : connections) {
            short events = 0;
            if (!c->read_eof) events |= POLLIN;
            if (c->has_pending()) events |= POLLOUT;
            fds.push_back({c->fd.get(), events, 0});
        }
        if (::poll(fds.data(), fds.size(), kPollIntervalMs) < 0 && errno != EINTR) break;

        // connections[i] is fds[i + 1]; accepting appends, so handle existing ones first.
        std::size_t existing = connections.size();
        for (std::size_t i = 0; i < existing; ++i) {
            Connection& c = *connections[i];
            short revents = fds[i + 1].revents;
            if (revents & (POLLIN | POLLHUP | POLLERR)) c.read_available();
            if (!c.closed && (revents & (POLLOUT | POLLERR | POLLHUP | POLLIN))) c.pump_output();
            // POLLERR with the read side already at EOF would otherwise spin forever.
            if (!c.closed && c.read_eof && (revents & POLLERR)) c.close(true);
            // Give time-dependent sessions their turn even without socket events.
            if (!c.closed && !c.has_pending()) c.pump_output();
        }
        if (fds[0].revents & POLLIN) accept_all(connections);

        auto gone = std::remove_if(connections.begin(), connections.end(), [this](auto& c) {
            if (!c->closed) return false;
            --open_;
            ++finished_;
            return true;
        });
        connections.erase(gone, connections.end());
    }
    for (auto& c : connections) c->close(false);
}

// ---------------------------------------------------------------------------------------------
// Sessions

namespace {

// Hands out the bytes of a string, front to back.
std::size_t take_from(std::string& source, std::span<std::uint8_t> out) {
    std::size_t n = std::min(source.size(), out.size());
    std::memcpy(out.data(), source.data(), n);
    source.erase(0, n);
    return n;
}

class NameSession final : public BackendSession {
public:
    explicit NameSession(std::string line) : unsent_(std::move(line)) {}
    void on_peer_eof() override { eof_ = true; }
    std::size_t produce(std::span<std::uint8_t> out) override { return take_from(unsent_, out); }
    WhenDrained when_drained() override { return eof_ ? WhenDrained::Close : WhenDrained::KeepOpen; }

private:
    std::string unsent_;
    bool eof_ = false;
};

class EchoSession final : public BackendSession {
public:
    EchoSession(const std::string& after_eof, std::chrono::milliseconds delay)
        : after_eof_(after_eof), delay_(delay) {}
    void on_receive(std::span<const std::uint8_t> bytes) override {
        unsent_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    void on_peer_eof() override { reply_at_ = Clock::now() + delay_; }
    std::size_t produce(std::span<std::uint8_t> out) override {
        if (reply_at_ && !replied_ && Clock::now() >= *reply_at_) {
            unsent_ += after_eof_;
            replied_ = true;
        }
        return take_from(unsent_, out);
    }
    WhenDrained when_drained() override { return replied_ ? WhenDrained::ShutdownWrite : WhenDrained::KeepOpen; }

private:
    const std::string& after_eof_;
    std::chrono::milliseconds delay_;
    std::string unsent_;
    std::optional<Clock::time_point> reply_at_;  // set at EOF
    bool replied_ = false;
};

class PullOrEchoSession final : public BackendSession {
public:
    explicit PullOrEchoSession(std::uint64_t pull_bytes) : pull_bytes_(pull_bytes) {}
    void on_receive(std::span<const std::uint8_t> bytes) override {
        if (mode_ == Mode::Echo) {
            unsent_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
            return;
        }
        if (mode_ == Mode::Pull) return;  // anything after the request is ignored
        head_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        if (head_[0] != 'P') {
            mode_ = Mode::Echo;
            unsent_ = std::move(head_);
        } else if (head_.size() >= 9) {
            std::uint64_t id = 0;
            for (int i = 0; i < 8; ++i) id |= std::uint64_t{static_cast<std::uint8_t>(head_[1 + i])} << (8 * i);
            stream_.emplace(server_to_client_seed(id));
            mode_ = Mode::Pull;
        }
    }
    void on_peer_eof() override { eof_ = true; }
    std::size_t produce(std::span<std::uint8_t> out) override {
        if (mode_ == Mode::Echo) return take_from(unsent_, out);
        if (mode_ != Mode::Pull) return 0;
        const auto count = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), pull_bytes_ - stream_->position()));
        stream_->fill(out.first(count));
        return count;
    }
    WhenDrained when_drained() override {
        if (mode_ == Mode::Pull) return stream_->position() == pull_bytes_ ? WhenDrained::ShutdownWrite : WhenDrained::KeepOpen;
        return eof_ && mode_ == Mode::Echo ? WhenDrained::ShutdownWrite : WhenDrained::KeepOpen;
    }

private:
    enum class Mode { Undecided, Echo, Pull };
    std::uint64_t pull_bytes_;
    Mode mode_ = Mode::Undecided;
    std::string head_;
    std::string unsent_;
    std::optional<PrngStream> stream_;
    bool eof_ = false;
};

}  // namespace

class WriteFirstSession final : public BackendSession {
public:
    WriteFirstSession(WriteFirstBackend& owner, std::string greeting)
        : owner_(owner), unsent_(std::move(greeting)) {}
    void on_receive(std::span<const std::uint8_t> bytes) override {
        received_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    std::size_t produce(std::span<std::uint8_t> out) override { return take_from(unsent_, out); }
    WhenDrained when_drained() override { return WhenDrained::ShutdownWrite; }
    void on_closed(bool) override { owner_.record(std::move(received_)); }

private:
    WriteFirstBackend& owner_;
    std::string unsent_;
    std::string received_;
};

class StreamCheckSession final : public BackendSession {
public:
    explicit StreamCheckSession(StreamCheckBackend& owner) : owner_(owner) {}

    void on_receive(std::span<const std::uint8_t> bytes) override {
        bytes = take_id(bytes);
        if (bytes.empty() || result_.first_mismatch) return;
        if (auto bad = inbound_->verify(bytes)) {
            result_.first_mismatch = *bad;
            return;
        }
        result_.received += bytes.size();
    }
    void on_peer_eof() override { result_.saw_eof = true; }

    std::size_t produce(std::span<std::uint8_t> out) override {
        if (!outbound_) return 0;  // the stream is seeded from the id, which has not arrived yet
        std::uint64_t left = owner_.bytes_each_way() - result_.sent;
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, out.size()));
        outbound_->fill(out.first(n));
        result_.sent += n;
        return n;
    }
    WhenDrained when_drained() override {
        bool all_sent = outbound_ && result_.sent == owner_.bytes_each_way();
        return all_sent ? WhenDrained::ShutdownWrite : WhenDrained::KeepOpen;
    }
    void on_closed(bool reset) override {
        result_.reset = reset;
        owner_.record(result_);
    }

private:
    // Consumes id bytes from the front of `bytes`; returns the rest.
    std::span<const std::uint8_t> take_id(std::span<const std::uint8_t> bytes) {
        while (!result_.id_received && !bytes.empty()) {
            result_.id |= std::uint64_t{bytes.front()} << (8 * id_bytes_);
            bytes = bytes.subspan(1);
            if (++id_bytes_ == 8) {
                result_.id_received = true;
                inbound_.emplace(client_to_server_seed(result_.id));
                outbound_.emplace(server_to_client_seed(result_.id));
            }
        }
        return bytes;
    }

    StreamCheckBackend& owner_;
    StreamCheckBackend::Result result_;
    unsigned id_bytes_ = 0;
    std::optional<PrngStream> inbound_;
    std::optional<PrngStream> outbound_;
};

// ---------------------------------------------------------------------------------------------
// Backends

NameBackend::NameBackend(std::string name, std::uint16_t port, std::string ipv4)
    : PollServer(port, std::move(ipv4)), name_(std::move(name)) {
    start([line = name_ + "\n"] { return std::make_unique<NameSession>(line); });
}

EchoBackend::EchoBackend(std::string after_eof, std::chrono::milliseconds after_eof_delay)
    : after_eof_(std::move(after_eof)), after_eof_delay_(after_eof_delay) {
    start([this] { return std::make_unique<EchoSession>(after_eof_, after_eof_delay_); });
}

PullOrEchoBackend::PullOrEchoBackend(std::uint64_t pull_bytes) : pull_bytes_(pull_bytes) {
    start([this] { return std::make_unique<PullOrEchoSession>(pull_bytes_); });
}

WriteFirstBackend::WriteFirstBackend(std::string greeting) : greeting_(std::move(greeting)) {
    start([this] { return std::make_unique<WriteFirstSession>(*this, greeting_); });
}

void WriteFirstBackend::record(std::string bytes) {
    std::lock_guard lock(mutex_);
    received_.push_back(std::move(bytes));
}

std::vector<std::string> WriteFirstBackend::received() const {
    std::lock_guard lock(mutex_);
    return received_;
}

std::uint64_t client_to_server_seed(std::uint64_t connection_id) { return derive_seed(connection_id, 1); }
std::uint64_t server_to_client_seed(std::uint64_t connection_id) { return derive_seed(connection_id, 2); }

StreamCheckBackend::StreamCheckBackend(std::uint64_t bytes_each_way) : bytes_each_way_(bytes_each_way) {
    start([this] { return std::make_unique<StreamCheckSession>(*this); });
}

void StreamCheckBackend::record(const Result& result) {
    std::lock_guard lock(mutex_);
    results_.push_back(result);
}

std::vector<StreamCheckBackend::Result> StreamCheckBackend::results() const {
    std::lock_guard lock(mutex_);
    return results_;
}

std::string StreamCheckBackend::Result::describe() const {
    std::ostringstream out;
    out << "backend side of connection id=" << id << (id_received ? "" : " (id incomplete)")
        << ": received " << received << ", sent " << sent;
    if (first_mismatch) out << ", FIRST MISMATCH at stream offset " << *first_mismatch;
    out << (saw_eof ? ", saw EOF" : ", no EOF") << (reset ? ", ended by reset/error" : "");
    return out.str();
}

}  // namespace ringlb::test
