#pragma once
// The Prometheus endpoint: render_prometheus() turns a Snapshot into the text exposition format
// 0.0.4, and MetricsServer serves it over a minimal HTTP/1.x server on the control thread's
// engine: GET /metrics, GET /healthz and GET /, one request per connection.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ringlb/admin/snapshot.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/net/socket.hpp"
#include "ringlb/net/unix_socket.hpp"
#include "ringlb/util/log.hpp"
#include "ringlb/util/throttled_log.hpp"

namespace ringlb::admin {

// Every family gets "# HELP" and "# TYPE" lines before its samples; label values are escaped
// (backslash, double quote, newline); histogram buckets are cumulative, in seconds.
std::string render_prometheus(const Snapshot& snapshot);

// Bounds that keep one client from crowding scrapers out; the defaults suit production.
struct MetricsLimits {
    size_t max_connections = 64;
    // Connections from one IP at most (TCP only): a reconnect flood from one address leaves
    // the other slots to the scrapers.
    size_t max_connections_per_ip = 8;
    // A request head must be complete this soon after connecting (a scraper sends it at once);
    // the whole exchange has connection_timeout.
    std::chrono::milliseconds head_timeout = std::chrono::seconds(2);
    std::chrono::milliseconds connection_timeout = std::chrono::seconds(10);
    std::chrono::milliseconds log_interval = std::chrono::seconds(10);  // floods: one summary line per interval
};

class MetricsServer final : public engine::Component {
public:
    static constexpr size_t kMaxRequestHead = size_t{8} * 1024;  // larger: 431 and close

    // Binds config.listen at once, an IP:port or a unix socket path (throws net::SystemError when
    // it cannot), and starts accepting through `dispatcher`. TCP peers not matching config.allow
    // are closed at once; on a unix socket the file's permissions decide instead. `snapshot` is
    // called on this thread for every GET /metrics.
    MetricsServer(engine::Dispatcher& dispatcher, const config::MetricsConfig& config,
                  std::function<Snapshot()> snapshot, Logger& log, MetricsLimits limits = {});
    // Closes whatever is still open. Requests still pending in the engine would then complete
    // into a dead component: call stop() and run the dispatcher until idle() first.
    ~MetricsServer() override;
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    // The address actually bound (with the port the kernel chose for port 0); unspecified
    // (family 0) for a unix socket.
    net::SocketAddress local_address() const { return bound_address_; }
    size_t open_connections() const;
    // Connections refused or timed out since start.
    const MetricsPortCounters& counters() const { return counters_; }

    // Stops accepting and ends every connection; their cancelled requests still complete.
    void stop();
    // stop() was called and every request has completed: the server may be destroyed.
    bool idle() const;

    void on_completion(const engine::Completion& completion) override;
    std::optional<Clock::time_point> on_tick(Clock::time_point now) override;

private:
    enum class Op : uint8_t { Accept = 1, Recv = 2, Send = 3, Shutdown = 4 };
    enum class Phase {
        ReadingHead,  // receiving until the blank line that ends the request head
        Sending,      // the response goes out piece by piece
        Draining,     // response sent and FIN queued: reading until the client closes, so that
                      // unread request bytes do not turn our close into a reset that eats the reply
        Closing,      // cancelled: waiting for the last request to complete before close()
    };
    struct Connection {
        net::UniqueFd fd;
        std::optional<net::IpKey> ip;  // counted against the per-IP cap while open (TCP only)
        uint32_t generation = 0;  // bumped on close: a stale completion never hits the next user
        Phase phase = Phase::ReadingHead;
        bool request_pending = false;  // at most one engine request per connection at a time
        std::string head;
        std::string response;
        size_t sent = 0;
        size_t drained = 0;
        Clock::time_point deadline{};       // of the whole exchange
        Clock::time_point head_deadline{};  // while ReadingHead
    };

    engine::Engine& engine() { return dispatcher_.engine(); }
    engine::UserData tag(Op op, uint32_t slot = 0, uint32_t generation = 0) const;

    void arm_accept();
    void on_accept(const engine::Completion& completion);
    void admit(net::UniqueFd fd);
    bool allowed(const net::SocketAddress& peer) const;
    size_t connections_from(const net::IpKey& ip) const;
    void close_listener_when_quiet();
    void close_listener();  // also removes our unix socket file

    void on_connection_completion(Connection& connection, uint32_t slot, Op op, const engine::Completion& completion);
    void on_head_bytes(Connection& connection, uint32_t slot);
    void on_sent(Connection& connection, uint32_t slot, int32_t result);
    void on_drained(Connection& connection, uint32_t slot, int32_t result);
    void start_response(Connection& connection, uint32_t slot, std::string response);
    void receive(Connection& connection, uint32_t slot, uint32_t max_bytes);
    void send_next_piece(Connection& connection, uint32_t slot);
    void close_connection(Connection& connection);
    void finish_close(Connection& connection);
    std::string answer(std::string_view head);
    std::optional<Clock::time_point> flush_throttled_logs(Clock::time_point now);

    engine::Dispatcher& dispatcher_;
    std::vector<net::ClientPattern> allow_;
    std::string token_;  // empty: no Authorization needed
    std::string unix_path_;  // empty: TCP
    std::function<Snapshot()> snapshot_;
    Logger& log_;
    uint8_t channel_ = 0;
    net::UniqueFd listen_fd_;
    net::SocketAddress bound_address_;
    bool accept_pending_ = false;
    bool stopping_ = false;
    std::optional<Clock::time_point> accept_retry_at_;  // after an accept error: no busy loop
    MetricsLimits limits_;
    std::vector<Connection> connections_;                 // limits_.max_connections slots; free: no fd
    MetricsPortCounters counters_;
    ThrottledLog not_allowed_log_;
    ThrottledLog refused_log_;
    ThrottledLog timeout_log_;
};

}  // namespace ringlb::admin
