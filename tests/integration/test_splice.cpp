// The splice path (rule key zero_copy) against the real binary: streams arrive byte for byte and
// the metrics prove they went socket -> pipe -> socket; FINs, resets, stalled readers, hostile
// clients, idle timeouts, held ClientHellos and PROXY headers, and the operator's kill all behave
// on it as on the copy path; and every pipe goes back to its pool.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "openssl_tools.hpp"
#include "prng_stream.hpp"
#include "proc_stats.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

// The ports of one ringlb: its rule's listener, its admin port and its metrics listener.
struct Ports {
    std::uint16_t listen = find_free_port();
    std::uint16_t admin = find_free_port();
    std::uint16_t metrics = find_free_port();
};

GlobalSpec observed(const Ports& ports, std::vector<std::string> global_lines = {}) {
    GlobalSpec global;
    global.extra_lines = std::move(global_lines);
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(ports.admin) + "\"",
                             "[metrics]", "listen = \"" + loopback_endpoint(ports.metrics) + "\""};
    return global;
}

RuleSpec zero_copy_rule(const std::string& id, std::uint16_t port, const std::string& server,
                        const std::string& zero_copy = "splice", std::vector<std::string> extra = {}) {
    RuleSpec rule = one_server_rule(id, port, server);
    rule.extra_lines = std::move(extra);
    rule.extra_lines.push_back("zero_copy = \"" + zero_copy + "\"");
    return rule;
}

// "name{labels}" -> value of every sample of GET /metrics; empty when the scrape failed.
using Samples = std::map<std::string, double>;

Samples scrape(std::uint16_t metrics_port) {
    Samples samples;
    UniqueFd fd = connect_to(metrics_port);
    if (!fd.valid() || !send_all(fd.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) return samples;
    const std::string response = read_until_closed(fd.get(), 5s).data;
    const size_t body = response.find("\r\n\r\n");
    if (body == std::string::npos) return samples;
    std::istringstream lines(response.substr(body + 4));
    std::string line;
    while (std::getline(lines, line)) {
        const size_t space = line.rfind(' ');
        if (line.empty() || line[0] == '#' || space == std::string::npos) continue;
        samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
    return samples;
}

// The value of one sample; -1 when absent (so a missing family never passes for 0).
double value(const Samples& samples, const std::string& key) {
    const auto found = samples.find(key);
    return found == samples.end() ? -1 : found->second;
}

// The sum of a per-worker family (ringlb_pipes_in_use{worker="0"} + ...); -1 when absent.
double over_workers(const Samples& samples, const std::string& family) {
    double total = 0;
    bool any = false;
    for (auto it = samples.lower_bound(family + "{"); it != samples.end() && it->first.rfind(family + "{", 0) == 0; ++it) {
        total += it->second;
        any = true;
    }
    return any ? total : -1;
}

double spliced(const Samples& samples, const std::string& rule, const char* direction) {
    return value(samples, "ringlb_spliced_bytes_total{rule=\"" + rule + "\",direction=\"" + direction + "\"}");
}

double forwarded(const Samples& samples, const std::string& rule, const char* direction) {
    return value(samples, "ringlb_rule_bytes_total{rule=\"" + rule + "\",direction=\"" + direction + "\"}");
}

// Scrapes until `done` holds (counters move when completions are handled, a moment after the
// peers have their bytes); returns the last scrape either way.
Samples scrape_until(std::uint16_t metrics_port, const std::function<bool(const Samples&)>& done,
                     std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    Samples samples = scrape(metrics_port);
    while (!done(samples) && Clock::now() < deadline) {
        std::this_thread::sleep_for(20ms);
        samples = scrape(metrics_port);
    }
    return samples;
}

// Every session ended and every pipe back in its pool.
Samples scrape_until_released(std::uint16_t metrics_port) {
    return scrape_until(metrics_port, [](const Samples& s) {
        return value(s, "ringlb_sessions_active") == 0 && over_workers(s, "ringlb_pipes_in_use") == 0;
    });
}

std::string describe(const Samples& samples, const std::string& rule) {
    std::ostringstream out;
    out << "forwarded up " << forwarded(samples, rule, "up") << " down " << forwarded(samples, rule, "down")
        << "; spliced up " << spliced(samples, rule, "up") << " down " << spliced(samples, rule, "down")
        << "; sessions active " << value(samples, "ringlb_sessions_active") << "; pipes in use "
        << over_workers(samples, "ringlb_pipes_in_use") << " free " << over_workers(samples, "ringlb_pipes_free")
        << " taken " << over_workers(samples, "ringlb_pipes_taken_total") << "; fallbacks pool_empty "
        << value(samples, "ringlb_splice_fallbacks_total{cause=\"pool_empty\"}") << " refused "
        << value(samples, "ringlb_splice_fallbacks_total{cause=\"refused\"}") << " shrunk "
        << value(samples, "ringlb_splice_fallbacks_total{cause=\"shrunk\"}");
    return out.str();
}

std::string pseudo_random_bytes(std::size_t size, std::uint64_t seed) {
    std::string bytes(size, '\0');
    PrngStream(seed).fill({reinterpret_cast<std::uint8_t*>(bytes.data()), size});
    return bytes;
}

std::string id_bytes(std::uint64_t id) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((id >> (8 * i)) & 0xFF);
    return bytes;
}

// What asks PullOrEchoBackend for the stream of `id`.
std::string pull_request(std::uint64_t id) {
    std::string request(1, 'P');
    request += id_bytes(id);
    return request;
}

// `size` pseudo-random bytes that PullOrEchoBackend echoes (any first byte but 'P').
std::string echo_request(std::size_t size, std::uint64_t seed) {
    std::string request = pseudo_random_bytes(size, seed);
    request[0] = 'E';
    return request;
}

void set_int_option(int fd, int level, int name, int value) {
    REQUIRE(::setsockopt(fd, level, name, &value, sizeof value) == 0);
}

long long elapsed_ms(Clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// One session of StreamCheckBackend carrying `bytes` each way at once: both ends verify every
// byte, then the metrics must show every byte of both directions moved by splice.
void one_full_duplex_session_all_spliced(std::uint64_t bytes) {
    StreamCheckBackend backend(bytes);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("bulk", ports.listen, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const auto start = Clock::now();
    const auto results = run_stream_clients(ports.listen, 1, 0x5B11CE00, bytes, 600s);
    const std::uint64_t mib = bytes / kMiB;
    MESSAGE(mib, " MiB each way through one splicing session in ", elapsed_ms(start), " ms");
    REQUIRE(results.size() == 1);
    CHECK_MESSAGE(results[0].ok(bytes), results[0].describe());
    REQUIRE(backend.wait_finished(1, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(bytes), result.describe());

    // Up: the 8-byte id, then the stream. Every byte of each direction was spliced.
    const Samples samples = scrape_until(ports.metrics, [&](const Samples& s) {
        return forwarded(s, "bulk", "up") == double(bytes + 8) && forwarded(s, "bulk", "down") == double(bytes) &&
               over_workers(s, "ringlb_pipes_in_use") == 0;
    });
    INFO(describe(samples, "bulk"));
    CHECK(forwarded(samples, "bulk", "up") == double(bytes + 8));
    CHECK(forwarded(samples, "bulk", "down") == double(bytes));
    CHECK(spliced(samples, "bulk", "up") == double(bytes + 8));
    CHECK(spliced(samples, "bulk", "down") == double(bytes));
    CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
    CHECK(over_workers(samples, "ringlb_pipes_taken_total") > 0);
    CHECK_CLEAN_EXIT(ringlb);
}

// A raw server for one connection: reads `read_before_reset` bytes, sends `send_before_reset`
// bytes of PrngStream(kResetStreamSeed), then closes with SO_LINGER 0, which sends a reset
// instead of a FIN.
constexpr std::uint64_t kResetStreamSeed = 0x4E5E7;

class ResettingServer {
public:
    ResettingServer(std::uint64_t read_before_reset, std::uint64_t send_before_reset)
        : listener_(listen_on_loopback(0)), port_(local_port(listener_.get())),
          thread_([this, read_before_reset, send_before_reset] { run(read_before_reset, send_before_reset); }) {}
    ~ResettingServer() {
        stop_ = true;
        thread_.join();
    }
    std::string endpoint() const { return loopback_endpoint(port_); }
    bool reset_sent() const { return reset_sent_.load(); }

private:
    bool wait_for(int fd, short events, Clock::time_point deadline) {
        while (!stop_ && Clock::now() < deadline) {
            pollfd p{fd, events, 0};
            if (::poll(&p, 1, 50) == 1) return true;
        }
        return false;
    }

    void run(std::uint64_t read_before_reset, std::uint64_t send_before_reset) {
        const auto deadline = Clock::now() + 30s;
        if (!wait_for(listener_.get(), POLLIN, deadline)) return;
        UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!connection.valid()) return;
        std::vector<std::uint8_t> buffer(64 * 1024);
        std::uint64_t received = 0;
        while (received < read_before_reset) {
            if (!wait_for(connection.get(), POLLIN, deadline)) return;
            const ssize_t n = ::recv(connection.get(), buffer.data(), buffer.size(), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
            if (n > 0) received += static_cast<std::uint64_t>(n);
        }
        PrngStream stream(kResetStreamSeed);
        while (stream.position() < send_before_reset) {
            const auto size = static_cast<size_t>(std::min<std::uint64_t>(buffer.size(), send_before_reset - stream.position()));
            stream.fill({buffer.data(), size});
            for (size_t sent = 0; sent < size;) {
                if (!wait_for(connection.get(), POLLOUT, deadline)) return;
                const ssize_t n = ::send(connection.get(), buffer.data() + sent, size - sent, MSG_NOSIGNAL);
                if (n < 0 && errno != EAGAIN && errno != EINTR) return;
                if (n > 0) sent += static_cast<size_t>(n);
            }
        }
        reset_sent_ = true;  // before the client can see the reset
        const linger abort{1, 0};
        ::setsockopt(connection.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
        connection.reset();
    }

    UniqueFd listener_;
    std::uint16_t port_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> reset_sent_{false};
    std::thread thread_;
};

// A raw echo server for one connection that starts reading only `delay` after it accepted it,
// so the path towards it fills up first.
class LateEchoServer {
public:
    explicit LateEchoServer(std::chrono::milliseconds delay)
        : listener_(listen_on_loopback(0)), port_(local_port(listener_.get())), thread_([this, delay] { run(delay); }) {}
    ~LateEchoServer() {
        stop_ = true;
        thread_.join();
    }
    std::string endpoint() const { return loopback_endpoint(port_); }

private:
    void run(std::chrono::milliseconds delay) {
        const auto deadline = Clock::now() + 60s;
        UniqueFd connection;
        while (!stop_ && !connection.valid() && Clock::now() < deadline) {
            pollfd p{listener_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) == 1) connection = UniqueFd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        }
        if (!connection.valid()) return;
        std::this_thread::sleep_for(delay);
        std::vector<char> buffer(64 * 1024);
        while (!stop_ && Clock::now() < deadline) {
            pollfd p{connection.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) != 1) continue;
            const ssize_t n = ::recv(connection.get(), buffer.data(), buffer.size(), 0);
            if (n <= 0) return;
            if (!send_all(connection.get(), std::string_view(buffer.data(), static_cast<size_t>(n)), 20s)) return;
        }
    }

    UniqueFd listener_;
    std::uint16_t port_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// How a connection ended for a client: the first thing the kernel reported.
struct Ending {
    std::uint64_t received = 0;
    std::uint64_t verified = 0;  // leading bytes that matched the expected stream
    bool mismatch = false;
    std::string end = "timeout";  // "EOF", or strerror of the first error (send or receive)
    int error = 0;
};

// Reads (verifying against `expected` when given) and, when `send_bulk`, sends bulk bytes at the
// same time, until the connection reports EOF or an error.
Ending run_until_ended(int fd, std::optional<PrngStream> expected, bool send_bulk, std::chrono::milliseconds timeout) {
    set_nonblocking(fd);
    Ending ending;
    const std::string chunk(64 * 1024, 'b');
    std::vector<std::uint8_t> buffer(256 * 1024);
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        pollfd p{fd, static_cast<short>(POLLIN | (send_bulk ? POLLOUT : 0)), 0};
        if (::poll(&p, 1, millis_until(deadline)) <= 0) continue;
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
            if (n > 0) {
                ending.received += static_cast<std::uint64_t>(n);
                if (expected && !ending.mismatch) {
                    if (expected->verify({buffer.data(), static_cast<size_t>(n)})) ending.mismatch = true;
                    else ending.verified += static_cast<std::uint64_t>(n);
                }
                continue;
            }
            if (n == 0) {
                ending.end = "EOF";
                return ending;
            }
            if (errno != EAGAIN && errno != EINTR) {
                ending.error = errno;
                ending.end = std::strerror(errno);
                return ending;
            }
        }
        if (send_bulk && (p.revents & POLLOUT)) {
            if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0 && errno != EAGAIN && errno != EINTR) {
                ending.error = errno;
                ending.end = std::strerror(errno);
                return ending;
            }
        }
    }
    return ending;
}

// The sum over the `worker N ...` lines of `show stats` of one `name=N` field; -1 when absent.
long long worker_field_total(const AdminReply& stats, const std::string& name) {
    long long total = -1;
    const std::string key = " " + name + "=";
    for (size_t at = stats.body.find(key); at != std::string::npos; at = stats.body.find(key, at + 1))
        total = std::max(total, 0LL) + std::stoll(stats.body.substr(at + key.size()));
    return total;
}

// The id of the one session `show sessions` lists; "" when there is not exactly one.
std::string only_session_id(std::uint16_t admin_port) {
    const AdminReply sessions = admin_command(admin_port, "show sessions");
    const size_t at = sessions.body.find("session ");
    if (!sessions.ok() || at == std::string::npos || sessions.body.find("session ", at + 1) != std::string::npos) return "";
    return sessions.body.substr(at + 8, sessions.body.find(' ', at + 8) - at - 8);
}

// A listener whose connections are never accepted, so never read: the kernel completes their
// handshakes and takes a few KiB of each (SO_RCVBUF 4096) before the path stops.
struct SilentBackend {
    UniqueFd fd = listen_on_loopback(0);
    SilentBackend() {
        // Connections the kernel completes for the listener take its receive buffer size.
        set_int_option(fd.get(), SOL_SOCKET, SO_RCVBUF, 4096);
    }
    std::string endpoint() const { return loopback_endpoint(local_port(fd.get())); }
};

std::size_t unsent_bytes(int fd) {
    int bytes = 0;
    REQUIRE(::ioctl(fd, SIOCOUTQ, &bytes) == 0);
    return static_cast<std::size_t>(bytes);
}

// An echo of `request` through `port` on a fresh connection: how long it took; nullopt when it
// did not come back right within 2 s.
std::optional<std::chrono::milliseconds> echo_time(std::uint16_t port, const std::string& request) {
    UniqueFd client = connect_to(port);
    if (!client.valid()) return std::nullopt;
    const auto start = Clock::now();
    if (!send_all(client.get(), request, 2s)) return std::nullopt;
    if (read_exactly(client.get(), request.size(), 2s).data != request) return std::nullopt;
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

}  // namespace

TEST_CASE("splice: 256 MiB each way at once through one session arrive byte for byte, every byte spliced") {
    one_full_duplex_session_all_spliced(256 * kMiB);
}

TEST_CASE("splice: the start-up line names splice and its pipes; zero_copy = \"off\" splices nothing") {
    EchoBackend echo;
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports, {"max_pipes = 77"}),
                                       {zero_copy_rule("copy", ports.listen, echo.endpoint(), "off")}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string first = ringlb.first_log_line();
    INFO("first log line: ", first);
    CHECK(first.find(test_engine() == "uring" ? "splice(polled, 77 pipes)" : "splice with up to 77 pipes") !=
          std::string::npos);

    const std::string payload = pseudo_random_bytes(4 * kMiB, 3);
    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    REQUIRE(send_all(client.get(), payload, 20s));
    CHECK((read_exactly(client.get(), payload.size(), 20s).data == payload));
    const Samples samples = scrape_until(ports.metrics, [&](const Samples& s) {
        return forwarded(s, "copy", "down") == double(payload.size());
    });
    INFO(describe(samples, "copy"));
    CHECK(forwarded(samples, "copy", "down") == double(payload.size()));
    CHECK(spliced(samples, "copy", "up") == 0);
    CHECK(spliced(samples, "copy", "down") == 0);
    CHECK(over_workers(samples, "ringlb_pipes_taken_total") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("zero_copy = \"auto\": a bulk stream goes by splice, a keep-alive exchange of small pairs takes no pipe") {
    constexpr std::uint64_t kBulk = 256 * kMiB;
    constexpr std::uint64_t kPullId = 0xA070B01C;
    PullOrEchoBackend backend(kBulk);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("auto", ports.listen, backend.endpoint(), "auto")}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    SUBCASE("256 MiB server -> client: at least 90 % of it spliced, every byte right") {
        UniqueFd client = connect_to(ports.listen);
        REQUIRE(client.valid());
        const auto start = Clock::now();
        REQUIRE(send_all(client.get(), pull_request(kPullId)));
        const Ending ending = run_until_ended(client.get(), PrngStream(server_to_client_seed(kPullId)), false, 120s);
        MESSAGE("256 MiB pulled under zero_copy = \"auto\" in ", elapsed_ms(start), " ms");
        CHECK(ending.end == "EOF");
        CHECK(ending.received == kBulk);
        CHECK(ending.verified == kBulk);
        CHECK_FALSE(ending.mismatch);
        const Samples samples = scrape_until(ports.metrics, [&](const Samples& s) {
            return forwarded(s, "auto", "down") == double(kBulk) && over_workers(s, "ringlb_pipes_in_use") == 0;
        });
        INFO(describe(samples, "auto"));
        CHECK(forwarded(samples, "auto", "down") == double(kBulk));
        CHECK(spliced(samples, "auto", "down") >= 0.9 * double(kBulk));
        CHECK(spliced(samples, "auto", "up") == 0);  // 9 bytes: never bulk
        CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
    }
    SUBCASE("2,000 round trips of 64 bytes on one connection: no pipe taken, every byte echoed") {
        UniqueFd client = connect_to(ports.listen);
        REQUIRE(client.valid());
        set_int_option(client.get(), IPPROTO_TCP, TCP_NODELAY, 1);
        const Samples before = scrape(ports.metrics);
        REQUIRE(over_workers(before, "ringlb_pipes_taken_total") >= 0);
        PrngStream requests(0xC0FFEE);
        int wrong = 0;
        for (int i = 0; i < 2000 && wrong == 0; ++i) {
            std::string request(64, '\0');
            requests.fill({reinterpret_cast<std::uint8_t*>(request.data()), request.size()});
            request[0] = 'E';  // not 'P': PullOrEchoBackend echoes
            REQUIRE(send_all(client.get(), request, 2s));
            if (read_exactly(client.get(), request.size(), 2s).data != request) ++wrong;
        }
        CHECK(wrong == 0);
        const Samples after = scrape_until(ports.metrics, [&](const Samples& s) {
            return forwarded(s, "auto", "down") == 2000.0 * 64;
        });
        INFO(describe(after, "auto"));
        CHECK(forwarded(after, "auto", "up") == 2000.0 * 64);
        CHECK(forwarded(after, "auto", "down") == 2000.0 * 64);
        CHECK(over_workers(after, "ringlb_pipes_taken_total") == over_workers(before, "ringlb_pipes_taken_total"));
        CHECK(spliced(after, "auto", "up") == 0);
        CHECK(spliced(after, "auto", "down") == 0);
    }
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: half-close in either direction passes the FIN on after every byte, the other way keeps flowing") {
    const std::string payload = pseudo_random_bytes(4 * kMiB, 11);

    SUBCASE("client FIN first: the server sees all bytes and EOF, and its later reply arrives whole") {
        // "bye" comes 300 ms after the backend saw the FIN: the session must stay up for it.
        EchoBackend backend("bye", 300ms);
        const Ports ports;
        RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("half", ports.listen, backend.endpoint())}));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        UniqueFd client = connect_to(ports.listen);
        REQUIRE(client.valid());
        REQUIRE(send_all(client.get(), payload, 20s));  // EchoBackend buffers its echo: no deadlock
        REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
        const ReadResult reply = read_until_closed(client.get(), 20s);
        CHECK(reply.data.size() == payload.size() + 3);
        CHECK((reply.data == payload + "bye"));  // "bye" is sent only after the backend's EOF
        CHECK(std::string(to_string(reply.end)) == "EOF");
        CHECK(backend.wait_finished(1, 5s));
        const Samples samples = scrape_until_released(ports.metrics);
        INFO(describe(samples, "half"));
        CHECK(spliced(samples, "half", "up") == double(payload.size()));
        CHECK(spliced(samples, "half", "down") == double(payload.size() + 3));
        CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
        CHECK_CLEAN_EXIT(ringlb);
    }
    SUBCASE("server FIN first: the client gets all bytes and EOF, and what it sends after still arrives") {
        WriteFirstBackend backend(payload);
        const Ports ports;
        RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("half", ports.listen, backend.endpoint())}));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        UniqueFd client = connect_to(ports.listen);
        REQUIRE(client.valid());
        const ReadResult first = read_until_closed(client.get(), 20s);
        CHECK(first.data.size() == payload.size());
        CHECK((first.data == payload));
        REQUIRE(std::string(to_string(first.end)) == "EOF");
        std::this_thread::sleep_for(300ms);  // time for a proxy that wrongly ends at the first FIN
        const std::string answer = pseudo_random_bytes(4 * kMiB, 12);
        REQUIRE(send_all(client.get(), answer, 20s));
        REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
        REQUIRE(backend.wait_finished(1, 10s));
        const auto received = backend.received();
        REQUIRE(received.size() == 1);
        CHECK(received[0].size() == answer.size());
        CHECK((received[0] == answer));
        CHECK(read_until_closed(client.get(), 5s).end == ReadEnd::Eof);
        const Samples samples = scrape_until_released(ports.metrics);
        INFO(describe(samples, "half"));
        CHECK(spliced(samples, "half", "down") == double(payload.size()));
        CHECK(spliced(samples, "half", "up") == double(answer.size()));
        CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
        CHECK_CLEAN_EXIT(ringlb);
    }
}

// A clean FIN would tell the client its stream ended complete: a server's reset must reach it as
// a reset, whichever way the bytes were going.
TEST_CASE("splice: a server that resets mid-stream resets the client too; the session and its pipes are released") {
    std::uint64_t read_before_reset = 0, send_before_reset = 0, client_sends = 0;
    bool client_keeps_sending = false;
    SUBCASE("while the client sends bulk") {
        read_before_reset = 2 * kMiB;
        client_keeps_sending = true;
    }
    SUBCASE("after it read everything the client sent (the client waits, reading)") {
        read_before_reset = client_sends = 2 * kMiB;
    }
    SUBCASE("while the server sends bulk to a reading client") {
        send_before_reset = 8 * kMiB;
    }
    ResettingServer server(read_before_reset, send_before_reset);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("reset", ports.listen, server.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    if (client_sends > 0) REQUIRE(send_all(client.get(), pseudo_random_bytes(client_sends, 5), 20s));
    const Ending ending = run_until_ended(client.get(), PrngStream(kResetStreamSeed), client_keeps_sending, 30s);
    CHECK(server.reset_sent());
    INFO("the client received ", ending.received, " bytes, then: ", ending.end);
    CHECK(ending.error == ECONNRESET);  // not a clean EOF
    CHECK_FALSE(ending.mismatch);
    CHECK(ending.received <= send_before_reset);
    const Samples samples = scrape_until_released(ports.metrics);
    INFO(describe(samples, "reset"));
    CHECK(spliced(samples, "reset", "up") >= double(read_before_reset));
    if (send_before_reset > 0) CHECK(spliced(samples, "reset", "down") > 0);
    CHECK(value(samples, "ringlb_sessions_active") == 0);
    CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
    const AdminReply stats = admin_command(ports.admin, "show stats");
    INFO(stats.body);
    CHECK(reply_value(stats, "active_sessions") == 0);
    CHECK(worker_field_total(stats, "pipes_in_use") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: a client that stops reading while 64 MiB come for it: ringlb stays small, one pipe per direction") {
    constexpr std::uint64_t kBytes = 64 * kMiB;
    constexpr std::uint64_t kId = 0x510E5111;
    StreamCheckBackend backend(kBytes);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("slow", ports.listen, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const long rss_before = resident_kib_of(ringlb.pid()).value_or(0);

    // The client sends its whole stream but reads nothing for now.
    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    REQUIRE(send_all(client.get(), id_bytes(kId) + pseudo_random_bytes(kBytes, client_to_server_seed(kId)), 60s));
    REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
    std::this_thread::sleep_for(1s);  // the stream has run into the client's closed window

    const long rss_stalled = resident_kib_of(ringlb.pid()).value_or(0);
    const Samples stalled = scrape(ports.metrics);
    INFO(describe(stalled, "slow"));
    INFO("ringlb RSS before ", rss_before, " KiB, while the reader is stalled ", rss_stalled, " KiB");
    CHECK(rss_stalled - rss_before < 4 * 1024);
    CHECK(over_workers(stalled, "ringlb_pipes_in_use") >= 0);
    CHECK(over_workers(stalled, "ringlb_pipes_in_use") <= 2);
    CHECK(spliced(stalled, "slow", "down") > 0);
    CHECK(spliced(stalled, "slow", "down") < double(kBytes));  // it is still held back
    CHECK(over_workers(stalled, "ringlb_receive_buffers_held") == 0);  // nothing of it in user space

    const Ending ending = run_until_ended(client.get(), PrngStream(server_to_client_seed(kId)), false, 60s);
    CHECK(ending.end == "EOF");
    CHECK(ending.received == kBytes);
    CHECK(ending.verified == kBytes);
    REQUIRE(backend.wait_finished(1, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytes), result.describe());
    const Samples done = scrape_until_released(ports.metrics);
    INFO(describe(done, "slow"));
    CHECK(spliced(done, "slow", "down") == double(kBytes));
    CHECK(over_workers(done, "ringlb_pipes_in_use") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: 200 concurrent sessions of 1 MiB each way, byte for byte, all spliced; every pipe goes back") {
    constexpr unsigned kSessions = 200;
    constexpr std::uint64_t kBytes = kMiB;
    StreamCheckBackend backend(kBytes);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("many", ports.listen, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const auto start = Clock::now();
    const auto results = run_stream_clients(ports.listen, kSessions, 0x3A9E0000, kBytes, 120s);
    MESSAGE(kSessions, " sessions of 1 MiB each way in ", elapsed_ms(start), " ms");
    REQUIRE(results.size() == kSessions);
    for (const auto& result : results) CHECK_MESSAGE(result.ok(kBytes), result.describe());
    CHECK(backend.wait_finished(kSessions, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytes), result.describe());

    const Samples samples = scrape_until_released(ports.metrics);
    INFO(describe(samples, "many"));
    CHECK(forwarded(samples, "many", "down") == double(kSessions * kBytes));
    CHECK(spliced(samples, "many", "down") == double(kSessions * kBytes));
    CHECK(spliced(samples, "many", "up") == double(kSessions * (kBytes + 8)));
    CHECK(value(samples, "ringlb_splice_fallbacks_total{cause=\"pool_empty\"}") == 0);
    CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
    CHECK(over_workers(samples, "ringlb_pipes_free") >= 1);
    CHECK(over_workers(samples, "ringlb_pipes_free") <= 1024);  // the default max_pipes
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: with every pipe held by stalled readers, 200 sessions copy instead, byte for byte; the pool stays bounded") {
    constexpr unsigned kMaxPipes = 8;
    constexpr unsigned kSessions = 200;
    constexpr std::uint64_t kBytes = kMiB;
    StreamCheckBackend backend(kBytes);
    PullOrEchoBackend puller_backend(1024 * kMiB);  // far more than the socket buffers take
    const Ports ports;
    const std::uint16_t pull_port = find_free_port();
    RinglbProcess ringlb(render_config(observed(ports, {"max_pipes = " + std::to_string(kMaxPipes)}),
                                       {zero_copy_rule("many", ports.listen, backend.endpoint()),
                                        zero_copy_rule("pull", pull_port, puller_backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // Clients that ask for a stream and read nothing: each one's pipe fills and stays full.
    std::vector<UniqueFd> pullers;
    for (unsigned i = 0; i < kMaxPipes; ++i) {
        pullers.push_back(connect_to(pull_port));
        REQUIRE(pullers.back().valid());
        REQUIRE(send_all(pullers.back().get(), pull_request(0x9E1D0000 + i)));
    }
    const Samples held = scrape_until(ports.metrics, [](const Samples& s) {
        return over_workers(s, "ringlb_pipes_in_use") == kMaxPipes;
    }, 10s);
    INFO(describe(held, "pull"));
    REQUIRE(over_workers(held, "ringlb_pipes_in_use") == kMaxPipes);

    const auto start = Clock::now();
    const auto results = run_stream_clients(ports.listen, kSessions, 0x3A9F0000, kBytes, 120s);
    MESSAGE(kSessions, " sessions of 1 MiB each way with no pipe to be had in ", elapsed_ms(start), " ms");
    REQUIRE(results.size() == kSessions);
    for (const auto& result : results) CHECK_MESSAGE(result.ok(kBytes), result.describe());
    CHECK(backend.wait_finished(kSessions, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytes), result.describe());
    const Samples copied = scrape_until(ports.metrics, [&](const Samples& s) {
        return forwarded(s, "many", "down") == double(kSessions * kBytes);
    });
    INFO(describe(copied, "many"));
    CHECK(forwarded(copied, "many", "down") == double(kSessions * kBytes));
    CHECK(value(copied, "ringlb_splice_fallbacks_total{cause=\"pool_empty\"}") > 0);
    CHECK(over_workers(copied, "ringlb_pipes_in_use") == kMaxPipes);
    CHECK(over_workers(copied, "ringlb_pipes_free") == 0);

    pullers.clear();  // closed unread: ringlb's sends to them fail, their full pipes are closed
    const Samples released = scrape_until_released(ports.metrics);
    INFO(describe(released, "pull"));
    CHECK(value(released, "ringlb_sessions_active") == 0);
    CHECK(over_workers(released, "ringlb_pipes_in_use") == 0);
    CHECK(over_workers(released, "ringlb_pipes_free") <= kMaxPipes);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: a client trickling 1-byte segments into a stalled path and clients that never read do not stall the worker") {
    constexpr std::uint64_t kPullBytes = 2 * kMiB;
    // Busy polling too: each trickled byte then keeps the worker polling for a while, never for good.
    std::vector<std::string> global_lines;
    SUBCASE("sleeping between completions") {}
    SUBCASE("busy_poll_us = 50") { global_lines = {"busy_poll_us = 50"}; }
    SilentBackend stalled;
    PullOrEchoBackend puller_backend(kPullBytes);
    const Ports ports;
    const std::uint16_t pull_port = find_free_port();
    RinglbProcess ringlb(render_config(observed(ports, global_lines), {zero_copy_rule("hog", ports.listen, stalled.endpoint()),
                                                         zero_copy_rule("pull", pull_port, puller_backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // The hog fills the path to the silent backend until it stops (what it sent has left its
    // socket, but not all of it got beyond ringlb), then trickles one-byte segments into it.
    UniqueFd hog = connect_to(ports.listen);
    REQUIRE(hog.valid());
    set_int_option(hog.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    const std::string step(64 * 1024, 'h');
    std::uint64_t sent = 0;
    const auto prime_start = Clock::now();
    const auto prime_deadline = prime_start + 60s;
    for (;;) {
        REQUIRE(Clock::now() < prime_deadline);
        if (unsent_bytes(hog.get()) == 0) {
            const Samples s = scrape(ports.metrics);
            if (sent > 0 && forwarded(s, "hog", "up") >= 0 && forwarded(s, "hog", "up") < double(sent) &&
                over_workers(s, "ringlb_pipes_in_use") >= 1)
                break;
            const ssize_t n = ::send(hog.get(), step.data(), step.size(), MSG_NOSIGNAL);
            if (n > 0) sent += static_cast<std::uint64_t>(n);
        }
        std::this_thread::sleep_for(10ms);
    }
    MESSAGE("the hog's path stopped after ", sent, " bytes, ", elapsed_ms(prime_start), " ms");
    // Eight clients ask for 2 MiB each and read nothing (a small window, small segments).
    std::vector<UniqueFd> pullers;
    for (std::uint64_t id = 0; id < 8; ++id) {
        UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd.valid());
        set_int_option(fd.get(), SOL_SOCKET, SO_RCVBUF, 4096);
        set_int_option(fd.get(), IPPROTO_TCP, TCP_MAXSEG, 536);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(pull_port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        REQUIRE(send_all(fd.get(), pull_request(0x9011E000 + id), 5s));
        pullers.push_back(std::move(fd));
    }

    std::atomic<bool> trickling{true};
    std::thread trickle([&] {
        while (trickling) {
            (void)::send(hog.get(), "t", 1, MSG_NOSIGNAL);
            std::this_thread::sleep_for(500us);
        }
    });

    const auto cpu_before = cpu_time_of(ringlb.pid());
    const auto wall_start = Clock::now();
    std::chrono::milliseconds slowest{0};
    int unanswered = 0;
    for (int i = 0; i < 20; ++i) {  // fresh sessions to the pull backend's echo, on the same worker
        const auto took = echo_time(pull_port, echo_request(64, 100 + i));
        if (!took) ++unanswered;
        else slowest = std::max(slowest, *took);
        std::this_thread::sleep_for(100ms);
    }
    const auto cpu_after = cpu_time_of(ringlb.pid());
    const long long wall = elapsed_ms(wall_start);
    trickling = false;
    trickle.join();
    MESSAGE("slowest echo beside the hog and the stalled readers: ", slowest.count(), " ms");
    CHECK(unanswered == 0);
    CHECK(slowest <= 1s);
    REQUIRE(cpu_before.has_value());
    REQUIRE(cpu_after.has_value());
    const long long cpu = (*cpu_after - *cpu_before).count();
    INFO("ringlb used ", cpu, " ms of CPU in ", wall, " ms while the hog trickled");
    CHECK(cpu < wall / 2);  // it waits; it does not spin on the stalled path
    const Samples during = scrape(ports.metrics);
    INFO(describe(during, "pull"));
    CHECK(over_workers(during, "ringlb_pipes_in_use") <= 1 + 8);  // the hog's pipe, one per stalled reader
    CHECK(spliced(during, "pull", "down") > 0);

    // The stalled readers read now: every byte of each stream, in order.
    for (std::uint64_t id = 0; id < pullers.size(); ++id) {
        const Ending ending = run_until_ended(pullers[id].get(), PrngStream(server_to_client_seed(0x9011E000 + id)), false, 60s);
        INFO("puller ", id, ": ", ending.received, " bytes, ", ending.end);
        CHECK(ending.end == "EOF");
        CHECK(ending.verified == kPullBytes);
    }
    hog.reset();
    stalled.fd.reset();
    const Samples released = scrape_until_released(ports.metrics);
    INFO(describe(released, "hog"));
    CHECK(over_workers(released, "ringlb_pipes_in_use") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

// Many one-byte segments waiting in ringlb's socket may need more pipe slots than a pipe has: a
// splice that moves fewer bytes than asked must not be taken for "nothing more to read", or the
// rest would wait for bytes the client never sends.
TEST_CASE("splice: one-byte segments queued behind a full path all arrive, with nothing sent after them") {
    constexpr int kSegments = 400;
    LateEchoServer server(1500ms);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("segments", ports.listen, server.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    set_int_option(client.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    std::string expected = pseudo_random_bytes(4 * kMiB, 41);
    const std::string segments = pseudo_random_bytes(kSegments, 42);
    expected += segments;
    std::atomic<bool> sent_all{false};
    std::thread sender([&] {
        if (!send_all(client.get(), std::string_view(expected).substr(0, 4 * kMiB), 20s)) return;
        for (const char byte : segments) {  // one segment each, while the server reads nothing yet
            if (!send_all(client.get(), std::string_view(&byte, 1), 5s)) return;
            std::this_thread::sleep_for(1ms);
        }
        sent_all = true;
    });
    const ReadResult echoed = read_exactly(client.get(), expected.size(), 30s);
    sender.join();
    REQUIRE(sent_all);
    INFO("echoed ", echoed.data.size(), " of ", expected.size(), " bytes, then ", std::string(to_string(echoed.end)));
    CHECK(echoed.data.size() == expected.size());
    CHECK((echoed.data == expected));
    const Samples samples = scrape(ports.metrics);
    INFO(describe(samples, "segments"));
    CHECK(spliced(samples, "segments", "up") > 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: 50 idle established sessions hold no pipe; bytes take one and give it back") {
    constexpr int kIdle = 50;
    EchoBackend echo;
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("idle", ports.listen, echo.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<UniqueFd> clients;
    for (int i = 0; i < kIdle; ++i) {
        clients.push_back(connect_to(ports.listen));
        REQUIRE(clients.back().valid());
    }
    const Samples idle = scrape_until(ports.metrics, [](const Samples& s) {
        return value(s, "ringlb_sessions_active") == kIdle;
    });
    INFO(describe(idle, "idle"));
    REQUIRE(value(idle, "ringlb_sessions_active") == kIdle);
    for (int i = 0; i < 250 && echo.open_connections() < kIdle; ++i) std::this_thread::sleep_for(20ms);
    REQUIRE(echo.open_connections() == kIdle);  // established: the backend has every one
    std::this_thread::sleep_for(200ms);
    const Samples still = scrape(ports.metrics);
    CHECK(over_workers(still, "ringlb_pipes_in_use") == 0);
    CHECK(over_workers(still, "ringlb_pipes_taken_total") == 0);

    for (int i = 0; i < kIdle; ++i) {
        const std::string line = "idle session " + std::to_string(i) + "\n";
        REQUIRE(send_all(clients[i].get(), line));
        CHECK(read_exactly(clients[i].get(), line.size()).data == line);
    }
    const Samples used = scrape_until(ports.metrics, [](const Samples& s) {
        return over_workers(s, "ringlb_pipes_in_use") == 0 && over_workers(s, "ringlb_pipes_taken_total") >= 2 * kIdle;
    });
    INFO(describe(used, "idle"));
    CHECK(over_workers(used, "ringlb_pipes_in_use") == 0);
    CHECK(over_workers(used, "ringlb_pipes_taken_total") >= 2 * kIdle);  // each direction of each session
    CHECK(spliced(used, "idle", "up") == forwarded(used, "idle", "up"));
    CHECK(spliced(used, "idle", "down") == forwarded(used, "idle", "down"));
    CHECK(value(used, "ringlb_sessions_active") == kIdle);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("splice: the rule's idle timeout spares a splicing session while bytes move and ends it once it goes quiet") {
    EchoBackend echo;
    const Ports ports;
    RuleSpec rule = zero_copy_rule("quiet", ports.listen, echo.endpoint());
    rule.timeout = "1s";
    RinglbProcess ringlb(render_config(observed(ports), {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    // 2.5 s of traffic, 64 KiB every 100 ms: spliced bytes count as activity.
    const auto busy_until = Clock::now() + 2500ms;
    Clock::time_point quiet_since;
    for (std::uint64_t round = 0;; ++round) {
        const std::string payload = pseudo_random_bytes(64 * 1024, 21 + round);
        REQUIRE(send_all(client.get(), payload, 5s));
        const ReadResult echoed = read_exactly(client.get(), payload.size(), 5s);
        quiet_since = Clock::now();
        INFO("round ", round, " ended with ", std::string(to_string(echoed.end)));
        REQUIRE((echoed.data == payload));
        if (quiet_since >= busy_until) break;
        std::this_thread::sleep_for(100ms);
    }
    const Samples active = scrape(ports.metrics);
    INFO(describe(active, "quiet"));
    CHECK(spliced(active, "quiet", "up") > 0);
    const ReadResult end = read_until_closed(client.get(), 10s);
    const long long after = elapsed_ms(quiet_since);
    INFO("closed after ", after, " ms of quiet: ", std::string(to_string(end.end)));
    CHECK(end.closed());
    CHECK(end.data.empty());
    CHECK(after >= 900);  // not before the timeout
    CHECK(after <= 5000);
    const Samples released = scrape_until_released(ports.metrics);
    CHECK(value(released, "ringlb_sessions_active") == 0);
    CHECK(over_workers(released, "ringlb_pipes_in_use") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

// Copied, not spliced, of a client's stream behind a held ClientHello: the receive that held the
// hello (one buffer, with whatever followed the hello in it) and what arrived while the hello
// (and the PROXY header) went out (at most buffer_size, 64 KiB).
constexpr double kCopiedBeforeSplice = 2 * 64 * 1024;

TEST_CASE("splice with sni: the held ClientHello reaches the chosen server first, byte for byte, then the stream by splice") {
    const std::string hello = captured_hello();
    const std::string payload = pseudo_random_bytes(4 * kMiB, 31);

    SUBCASE("an echo server gets the hello, then the rest") {
        EchoBackend echo;
        NameBackend other("other");
        const Ports ports;
        RinglbProcess ringlb(render_config(
            observed(ports), {zero_copy_rule("tls", ports.listen, echo.endpoint(), "splice", {"sni = [\"www.example.com\"]"}),
                              zero_copy_rule("other", ports.listen, other.endpoint())}));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        UniqueFd client = connect_to(ports.listen);
        REQUIRE(client.valid());
        REQUIRE(send_all(client.get(), hello + payload, 20s));  // EchoBackend buffers its echo
        const ReadResult echoed = read_exactly(client.get(), hello.size() + payload.size(), 20s);
        CHECK(echoed.data.size() == hello.size() + payload.size());
        CHECK((echoed.data.substr(0, hello.size()) == hello));
        CHECK((echoed.data == hello + payload));
        CHECK(other.accepted() == 0);
        const Samples samples = scrape_until(ports.metrics, [&](const Samples& s) {
            return forwarded(s, "tls", "down") == double(hello.size() + payload.size());
        });
        INFO(describe(samples, "tls"));
        CHECK(spliced(samples, "tls", "up") > 0);
        CHECK(forwarded(samples, "tls", "up") - spliced(samples, "tls", "up") <= kCopiedBeforeSplice);
        CHECK(spliced(samples, "tls", "down") > 0);
        CHECK(forwarded(samples, "tls", "up") == double(hello.size() + payload.size()));
        CHECK_CLEAN_EXIT(ringlb);
    }
    SUBCASE("with send_proxy = \"v1\": the PROXY header, the hello, then the spliced stream") {
        WriteFirstBackend backend("hi\n");
        const Ports ports;
        RinglbProcess ringlb(render_config(
            observed(ports), {zero_copy_rule("tls", ports.listen, backend.endpoint(), "splice",
                                             {"sni = [\"www.example.com\"]", "send_proxy = \"v1\""})}));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        UniqueFd client = connect_to(ports.listen);
        REQUIRE(client.valid());
        const std::string header = "PROXY TCP4 127.0.0.1 127.0.0.1 " + std::to_string(local_port(client.get())) + " " +
                                   std::to_string(ports.listen) + "\r\n";
        REQUIRE(send_all(client.get(), hello + payload, 20s));
        CHECK(read_line(client.get()).data == "hi");
        REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
        CHECK(read_until_closed(client.get()).end == ReadEnd::Eof);
        REQUIRE(backend.wait_finished(1, 10s));
        const auto received = backend.received();
        REQUIRE(received.size() == 1);
        CHECK(received[0].size() == header.size() + hello.size() + payload.size());
        CHECK(received[0].substr(0, header.size()) == header);
        CHECK((received[0].substr(0, header.size() + hello.size()) == header + hello));
        CHECK((received[0] == header + hello + payload));
        const Samples samples = scrape_until_released(ports.metrics);
        INFO(describe(samples, "tls"));
        CHECK(spliced(samples, "tls", "up") > 0);
        CHECK(forwarded(samples, "tls", "up") - spliced(samples, "tls", "up") <= kCopiedBeforeSplice);
        CHECK(over_workers(samples, "ringlb_pipes_in_use") == 0);
        CHECK_CLEAN_EXIT(ringlb);
    }
}

TEST_CASE("splice: kill session on a session in mid-transfer resets its client; its pipes go back") {
    constexpr std::uint64_t kBytes = 4096 * kMiB;  // far more than is read before the kill
    constexpr std::uint64_t kId = 0x4177;
    PullOrEchoBackend backend(kBytes);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("kill", ports.listen, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    REQUIRE(send_all(client.get(), pull_request(kId)));
    PrngStream expected(server_to_client_seed(kId));
    const ReadResult first = read_exactly(client.get(), 8 * kMiB, 20s);
    REQUIRE(first.data.size() >= 8 * kMiB);
    CHECK_FALSE(expected.verify({reinterpret_cast<const std::uint8_t*>(first.data.data()), first.data.size()}));
    const Samples busy = scrape(ports.metrics);
    CHECK(spliced(busy, "kill", "down") > 0);

    const std::string id = only_session_id(ports.admin);
    REQUIRE_FALSE(id.empty());
    CHECK(admin_command(ports.admin, "kill session " + id).ok());
    const Ending ending = run_until_ended(client.get(), std::move(expected), false, 20s);
    INFO("after the kill the client read ", ending.received, " more bytes, then: ", ending.end);
    CHECK_FALSE(ending.mismatch);
    CHECK(ending.received < kBytes);
    CHECK(ending.error == ECONNRESET);  // a cut stream must not look complete
    const Samples released = scrape_until_released(ports.metrics);
    INFO(describe(released, "kill"));
    CHECK(value(released, "ringlb_sessions_active") == 0);
    CHECK(over_workers(released, "ringlb_pipes_in_use") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

// A reset that arrives while the worker has no free pipe: whether the socket has anything to read
// is asked in a way that leaves the pending error for the read to report. (A peek would take the
// error, and the read after it would see a clean end of stream: a FIN passed on for a cut stream.)
TEST_CASE("splice: a server's reset while every pipe is held still reaches the client as a reset") {
    PullOrEchoBackend hog_backend(1024 * kMiB);
    ResettingServer server(4096, 0);
    const Ports ports;
    const std::uint16_t hog_port = find_free_port();
    RinglbProcess ringlb(render_config(observed(ports, {"max_pipes = 1"}),
                                       {zero_copy_rule("hog", hog_port, hog_backend.endpoint()),
                                        zero_copy_rule("reset", ports.listen, server.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // A client that never reads: its stream fills the one pipe and holds it.
    UniqueFd hog = connect_to(hog_port);
    REQUIRE(hog.valid());
    set_int_option(hog.get(), SOL_SOCKET, SO_RCVBUF, 4096);
    REQUIRE(send_all(hog.get(), pull_request(0x406)));
    const Samples held = scrape_until(ports.metrics, [](const Samples& s) {
        return over_workers(s, "ringlb_pipes_in_use") == 1 && over_workers(s, "ringlb_pipes_free") == 0;
    });
    INFO(describe(held, "hog"));
    REQUIRE(over_workers(held, "ringlb_pipes_in_use") == 1);

    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    REQUIRE(send_all(client.get(), pseudo_random_bytes(4096, 6), 20s));
    const Ending ending = run_until_ended(client.get(), std::nullopt, false, 20s);
    CHECK(server.reset_sent());
    INFO("the client received ", ending.received, " bytes, then: ", ending.end);
    CHECK(ending.received == 0);
    CHECK(ending.error == ECONNRESET);  // not a clean EOF
}

// TCP stops a splice at urgent (out-of-band) data, which only a receive gets past: the bytes
// behind it must still arrive, and soon, instead of waiting forever for a splice that cannot move
// them (or a worker polling for them without end).
TEST_CASE("splice: bytes behind a TCP urgent byte still arrive, the urgent byte left out as a receive leaves it") {
    PullOrEchoBackend backend(kMiB);
    const Ports ports;
    RinglbProcess ringlb(render_config(observed(ports), {zero_copy_rule("urgent", ports.listen, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(ports.listen);
    REQUIRE(client.valid());
    const std::string before = echo_request(1000, 21);
    const std::string after = pseudo_random_bytes(1000, 22);
    REQUIRE(send_all(client.get(), before));
    REQUIRE(::send(client.get(), "!", 1, MSG_OOB) == 1);
    REQUIRE(send_all(client.get(), after));
    const ReadResult echoed = read_exactly(client.get(), before.size() + after.size(), 5s);
    CHECK(echoed.data.size() == before.size() + after.size());
    CHECK(echoed.data == before + after);

    // And the session goes on.
    const std::string more = pseudo_random_bytes(200 * 1024, 23);
    REQUIRE(send_all(client.get(), more, 20s));
    const ReadResult rest = read_exactly(client.get(), more.size(), 10s);
    CHECK(rest.data == more);
    const Samples samples = scrape(ports.metrics);
    INFO(describe(samples, "urgent"));
    CHECK(spliced(samples, "urgent", "up") > 0);
}
