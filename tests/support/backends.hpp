#pragma once
// Backends that run as a thread inside the test process on 127.0.0.1:<port> (or another IPv4
// loopback address such as 127.0.0.2, for tests that need servers on distinct addresses). One poll() loop per
// backend serves all its connections (thousands, for the concurrency test) without a thread each.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "net_util.hpp"

namespace ringlb::test {

// What a session wants once everything it produced has been sent.
enum class WhenDrained {
    KeepOpen,       // wait: more input (and maybe more output) is expected
    ShutdownWrite,  // send FIN; keep reading until the peer's EOF, then close
    Close,          // close the socket now
};

// The behaviour of one accepted connection. All calls come from the backend's thread.
class BackendSession {
public:
    virtual ~BackendSession() = default;
    virtual void on_receive(std::span<const std::uint8_t> bytes) { (void)bytes; }
    virtual void on_peer_eof() {}
    // Copies the next bytes to send into `out` and returns how many; 0 = nothing right now.
    // Also called on every loop turn (at least every 20 ms), so output may depend on time.
    virtual std::size_t produce(std::span<std::uint8_t> out) { (void)out; return 0; }
    virtual WhenDrained when_drained() = 0;
    // The connection is gone: `reset` = it ended with an error (reset, EPIPE) instead of cleanly.
    virtual void on_closed(bool reset) { (void)reset; }
};

// The poll() loop and the listening socket shared by all backends. Derived classes call start()
// at the end of their constructor and stop() in their destructor (so no session outlives the
// state it points to).
class PollServer {
public:
    PollServer(const PollServer&) = delete;
    PollServer& operator=(const PollServer&) = delete;
    virtual ~PollServer();

    std::uint16_t port() const { return port_; }
    std::string endpoint() const { return ipv4_ + ":" + std::to_string(port_); }
    std::size_t accepted() const { return accepted_.load(); }
    std::size_t open_connections() const { return open_.load(); }
    std::size_t finished() const { return finished_.load(); }
    // Waits until finished() >= count. False on timeout.
    bool wait_finished(std::size_t count, std::chrono::milliseconds timeout) const;
    // Stops the loop, closes every connection and the listening socket (new connects are then
    // refused) and joins the thread. Idempotent.
    void stop();

protected:
    using SessionFactory = std::function<std::unique_ptr<BackendSession>()>;
    // Listens on <ipv4>:port; 0 = any free port.
    explicit PollServer(std::uint16_t port = 0, std::string ipv4 = "127.0.0.1");
    void start(SessionFactory factory);

private:
    struct Connection;
    void run();
    void accept_all(std::vector<std::unique_ptr<Connection>>& connections);

    UniqueFd listener_;
    std::string ipv4_;
    std::uint16_t port_ = 0;
    SessionFactory factory_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> accepted_{0};
    std::atomic<std::size_t> open_{0};
    std::atomic<std::size_t> finished_{0};
    std::thread thread_;
};

// On each accept writes "<name>\n", then reads (and discards) until EOF and closes.
class NameBackend final : public PollServer {
public:
    // port 0 = any free port; a given port lets a test restart a stopped backend on its address.
    // `ipv4` another loopback address (127.0.0.2, ...) puts backends on distinct addresses.
    explicit NameBackend(std::string name, std::uint16_t port = 0, std::string ipv4 = "127.0.0.1");
    ~NameBackend() override { stop(); }
    const std::string& name() const { return name_; }

private:
    std::string name_;
};

// Echoes everything until EOF; then, `after_eof_delay` later, sends `after_eof` (may be empty),
// shuts down writing and closes. The delay makes a proxy that tears the session down as soon as
// one side sent FIN lose the late reply instead of winning a race.
class EchoBackend final : public PollServer {
public:
    explicit EchoBackend(std::string after_eof = "", std::chrono::milliseconds after_eof_delay = 0ms);
    ~EchoBackend() override { stop(); }

private:
    std::string after_eof_;
    std::chrono::milliseconds after_eof_delay_;
};

// Sends `greeting` and shuts down its writing side at once, then keeps reading what the client
// sends until EOF and records it (so the test can check that the client->server direction
// survived the server's FIN).
class WriteFirstBackend final : public PollServer {
public:
    explicit WriteFirstBackend(std::string greeting);
    ~WriteFirstBackend() override { stop(); }
    // What each finished connection received, in the order they finished.
    std::vector<std::string> received() const;

private:
    friend class WriteFirstSession;
    void record(std::string bytes);

    std::string greeting_;
    mutable std::mutex mutex_;
    std::vector<std::string> received_;
};

// Serves two kinds of client on one port, told apart by their first byte. 'P' and an 8-byte id
// (little endian) ask for `pull_bytes` bytes of PrngStream(server_to_client_seed(id)), then a FIN;
// any other first byte makes the connection an echo of every byte (that one included) until EOF.
// For tests where clients that never read and fresh interactive clients share one rule.
class PullOrEchoBackend final : public PollServer {
public:
    explicit PullOrEchoBackend(std::uint64_t pull_bytes);
    ~PullOrEchoBackend() override { stop(); }

private:
    std::uint64_t pull_bytes_;
};

// Seeds of the two directions of one integrity connection, derived from its 8-byte id.
std::uint64_t client_to_server_seed(std::uint64_t connection_id);
std::uint64_t server_to_client_seed(std::uint64_t connection_id);

// The server half of the integrity test. Each connection starts with the client's 8-byte id
// (little endian); then the client sends `bytes_each_way` bytes of PrngStream(client_to_server_
// seed(id)) which are verified as they arrive, while the backend sends `bytes_each_way` bytes of
// PrngStream(server_to_client_seed(id)) and then shuts down writing.
class StreamCheckBackend final : public PollServer {
public:
    struct Result {
        std::uint64_t id = 0;
        bool id_received = false;
        std::uint64_t received = 0;  // stream bytes after the id
        std::uint64_t sent = 0;
        std::optional<std::uint64_t> first_mismatch;
        bool saw_eof = false;
        bool reset = false;
        bool ok(std::uint64_t expected) const {
            return id_received && received == expected && sent == expected && !first_mismatch &&
                   saw_eof && !reset;
        }
        std::string describe() const;
    };

    explicit StreamCheckBackend(std::uint64_t bytes_each_way);
    ~StreamCheckBackend() override { stop(); }
    std::uint64_t bytes_each_way() const { return bytes_each_way_; }
    std::vector<Result> results() const;

private:
    friend class StreamCheckSession;
    void record(const Result& result);

    std::uint64_t bytes_each_way_;
    mutable std::mutex mutex_;
    std::vector<Result> results_;
};

}  // namespace ringlb::test
