// Resource exhaustion against the real binary: ringlb out of descriptors, at max_sessions, holding
// a thousand slow readers, and fed ten thousand hostile admin lines and PROXY headers. In every
// case the sessions it already has keep flowing, it does not spin, its memory stays bounded, and
// it serves normally again once the pressure is gone.
//
// (Receive pool exhaustion, receive_buffers = 16 under 200 busy connections, is proven byte for
// byte in test_buffer_exhaustion.cpp and not repeated here.)
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "proc_stats.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

std::string admin_section(std::uint16_t admin_port) { return "listen = \"" + loopback_endpoint(admin_port) + "\""; }

GlobalSpec global_with_admin(std::uint16_t admin_port, std::vector<std::string> extra_lines = {}) {
    GlobalSpec global;
    global.extra_lines = std::move(extra_lines);
    global.trailing_lines = {"[admin]", admin_section(admin_port)};
    return global;
}

// One echo round trip on an open session.
bool echoes(int fd, const std::string& message, std::chrono::milliseconds timeout = 5s) {
    if (!send_all(fd, message, timeout)) return false;
    return read_exactly(fd, message.size(), timeout).data == message;
}

// A new session that answers an echo, tried until `timeout` (ringlb may need a moment to recover).
bool new_session_echoes(std::uint16_t port, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        UniqueFd client = connect_to(port, Family::V4, 1s);
        if (client.valid() && echoes(client.get(), "hello again\n", 1s)) return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

// Polls `show stats` until active_sessions and limits_active are both `expected`.
bool sessions_settle_at(std::uint16_t admin_port, long long expected, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        const AdminReply stats = admin_command(admin_port, "show stats");
        if (reply_value(stats, "active_sessions") == expected && reply_value(stats, "limits_active") == expected)
            return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(50ms);
    }
}

// Sends one byte on every client and counts those that get it echoed within `timeout`.
unsigned count_echoing(std::vector<UniqueFd>& clients, std::chrono::milliseconds timeout) {
    std::vector<pollfd> fds;
    for (auto& client : clients) {
        if (::send(client.get(), "x", 1, MSG_NOSIGNAL) == 1) fds.push_back({client.get(), POLLIN, 0});
    }
    unsigned echoed = 0;
    const auto deadline = Clock::now() + timeout;
    while (!fds.empty() && Clock::now() < deadline) {
        if (::poll(fds.data(), fds.size(), std::min(millis_until(deadline), 100)) <= 0) continue;
        for (auto& entry : fds) {
            if (entry.revents == 0) continue;
            char byte = 0;
            if (::recv(entry.fd, &byte, 1, 0) == 1 && byte == 'x') ++echoed;
            entry.fd = -1;  // answered (or closed): poll() ignores negative descriptors
        }
        std::erase_if(fds, [](const pollfd& entry) { return entry.fd < 0; });
    }
    return echoed;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("exhaustion: fd limit 256 with 1000 clients: held sessions flow, no busy loop, service recovers") {
    constexpr rlim_t kOpenFilesLimit = 256;
    constexpr unsigned kCrowd = 1000;
    EchoBackend backend;
    const std::uint16_t port = find_free_port();
    RinglbOptions options;
    options.open_files_limit = kOpenFilesLimit;
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd held = connect_to(port);
    REQUIRE(held.valid());
    REQUIRE(echoes(held.get(), "before the crowd\n"));

    // Far more clients than descriptors: ringlb accepts until EMFILE, the rest wait in the backlog.
    std::vector<UniqueFd> crowd;
    for (unsigned i = 0; i < kCrowd; ++i) crowd.push_back(start_connect(port));
    std::this_thread::sleep_for(1s);

    // Saturated, ringlb must wait for descriptors, not retry accept() in a tight loop.
    const auto cpu_before = cpu_time_of(ringlb.pid());
    std::this_thread::sleep_for(2s);
    const auto cpu_after = cpu_time_of(ringlb.pid());
    REQUIRE(cpu_before);
    REQUIRE(cpu_after);
    const auto cpu_used = *cpu_after - *cpu_before;
    INFO("ringlb CPU time over 2 s of saturation: ", cpu_used.count(), " ms");
    CHECK(cpu_used < 500ms);
    CHECK(ringlb.running());

    CHECK(echoes(held.get(), "during the crowd\n"));
    const unsigned served = count_echoing(crowd, 2s);
    INFO("crowd clients served while ringlb had ", kOpenFilesLimit, " descriptors: ", served, " of ", kCrowd);
    CHECK(served > 0);       // it kept serving up to its limit
    CHECK(served < kCrowd);  // and did not pretend to have descriptors it has not
    CHECK(echoes(held.get(), "still flowing\n"));

    crowd.clear();
    CHECK(new_session_echoes(port, 10s));
    CHECK(echoes(held.get(), "after the crowd\n"));
    held.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("exhaustion: at max_sessions excess clients are closed at once, others flow, the count comes back") {
    constexpr unsigned kMaxSessions = 20;
    EchoBackend backend;
    const std::uint16_t port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}},
                                       global_with_admin(admin_port, {"max_sessions = " + std::to_string(kMaxSessions)})));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<UniqueFd> held;
    for (unsigned i = 0; i < kMaxSessions; ++i) {
        held.push_back(connect_to(port));
        REQUIRE(held.back().valid());
        REQUIRE(echoes(held.back().get(), "held " + std::to_string(i) + "\n"));
    }

    for (unsigned i = 0; i < 10; ++i) {
        UniqueFd excess = connect_to(port);
        REQUIRE(excess.valid());  // the kernel completes the handshake; ringlb then closes it
        const auto started = Clock::now();
        const ReadResult result = read_until_closed(excess.get(), 2s);
        INFO("excess client ", i, " ended with ", std::string(to_string(result.end)));
        CHECK(result.closed());
        CHECK(result.data.empty());
        CHECK(Clock::now() - started < 1s);
    }
    for (auto& client : held) CHECK(echoes(client.get(), "still here\n"));

    // Five sessions end: exactly five new ones fit again.
    held.resize(kMaxSessions - 5);
    REQUIRE(sessions_settle_at(admin_port, kMaxSessions - 5, 5s));
    for (unsigned i = 0; i < 5; ++i) {
        held.push_back(connect_to(port));
        CHECK(echoes(held.back().get(), "new " + std::to_string(i) + "\n"));
    }
    UniqueFd one_too_many = connect_to(port);
    CHECK(read_until_closed(one_too_many.get(), 2s).closed());

    held.clear();
    CHECK(sessions_settle_at(admin_port, 0, 5s));
    CHECK(new_session_echoes(port, 5s));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("exhaustion: 1000 slow readers: ringlb's memory stays within its receive buffers") {
    constexpr unsigned kReaders = 1000;
    constexpr std::uint64_t kBytesEach = 256 * 1024;  // far more than ringlb may hold per session
    // What ringlb promises: a session queues at most buffer_size (16k here) bytes per direction,
    // but each received piece occupies a whole 16 KiB receive buffer, up to 8 of them; and all
    // sessions of a worker together never hold more than its pool (receive_buffers = 2048 of
    // 16 KiB). So the bound is the smaller of the two.
    constexpr long kReceiveBufferKib = 16;
    constexpr long kPieceLimit = 8;
    constexpr long kPoolKib = 2048 * kReceiveBufferKib;
    // Beyond the buffers: 1000 sessions' state in the session table and flows, and the heap
    // growing for them; measured at a few MiB, allowed 16.
    constexpr long kSlackKib = 16 * 1024;
    StreamCheckBackend backend(kBytesEach);
    const std::uint16_t port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}},
                                       global_with_admin(admin_port, {"buffer_size = \"16k\""})));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const long rss_before = resident_kib_of(ringlb.pid()).value_or(0);

    // Each reader sends its id (the backend then streams kBytesEach to it) and reads 1 KiB/s
    // through a small receive buffer, so the backlog piles up in ringlb's direction.
    std::vector<UniqueFd> readers;
    for (unsigned i = 0; i < kReaders; ++i) {
        UniqueFd reader = connect_to(port);
        REQUIRE(reader.valid());
        const int small = 4096;
        ::setsockopt(reader.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        std::string id(8, '\0');
        for (int b = 0; b < 8; ++b) id[b] = static_cast<char>(((0x5100000ULL + i) >> (8 * b)) & 0xFF);
        REQUIRE(send_all(reader.get(), id));
        readers.push_back(std::move(reader));
    }

    long rss_max = rss_before;
    char sip[103];  // 1 KiB/s in ten sips of ~100 bytes
    for (int tick = 0; tick < 40; ++tick) {
        for (auto& reader : readers) (void)::recv(reader.get(), sip, sizeof sip, MSG_DONTWAIT);
        rss_max = std::max(rss_max, resident_kib_of(ringlb.pid()).value_or(0));
        std::this_thread::sleep_for(100ms);
    }
    const long bound = std::min(kReaders * kPieceLimit * kReceiveBufferKib, kPoolKib) + kSlackKib;
    INFO("ringlb RSS before ", rss_before, " KiB, max with ", kReaders, " slow readers ", rss_max, " KiB; growth ",
         rss_max - rss_before, " KiB, bound ", bound, " KiB");
    CHECK(rss_max - rss_before <= bound);
    CHECK(ringlb.running());

    readers.clear();
    CHECK(sessions_settle_at(admin_port, 0, 10s));
    CHECK_CLEAN_EXIT(ringlb);
}

// ---------------------------------------------------------------------------------------------
// Hostile input

namespace {

// Opens a session on a served rule every few milliseconds and checks its echo, for as long as
// the hostile traffic runs next to it.
class SteadyClient {
public:
    explicit SteadyClient(std::uint16_t port) : thread_([this, port] { run(port); }) {}
    ~SteadyClient() { stop(); }
    void stop() {
        stopping_ = true;
        if (thread_.joinable()) thread_.join();
    }
    unsigned served() const { return served_; }
    unsigned failed() const { return failed_; }

private:
    void run(std::uint16_t port) {
        for (unsigned i = 0; !stopping_; ++i) {
            UniqueFd client = connect_to(port, Family::V4, 2s);
            const bool ok = client.valid() && echoes(client.get(), "steady " + std::to_string(i) + "\n", 2s);
            ++(ok ? served_ : failed_);
            std::this_thread::sleep_for(10ms);
        }
    }

    std::atomic<bool> stopping_{false};
    std::atomic<unsigned> served_{0};
    std::atomic<unsigned> failed_{0};
    std::thread thread_;
};

// Lines no sane operator types: random bytes, binary, overlong, half a command, commands with
// junk. Deliberately never a valid command that changes anything (only unknown rule names).
std::string hostile_admin_line(std::mt19937& random) {
    const auto pick = [&](unsigned n) { return static_cast<unsigned>(random() % n); };
    static const char* const kMangled[] = {
        "show", "show stats extra words", "show rules \x01\x02", "show sessions nosuchrule", "SHOW STATS",
        "disable server nosuchrule 127.0.0.1:1", "kill session notanumber", "set weight nosuchrule x 99999",
        "remove rule nosuchrule", "clean sessions nosuchrule", "auth wrongtoken", "add rule { id = ",
        "modify rule {{{{", "\xff\xfe show stats", "version\r", "help me", "drain server", "enable"};
    std::string line;
    switch (pick(6)) {
        case 0:  // random bytes (line ends are removed below)
            for (unsigned n = pick(200); n > 0; --n) line += static_cast<char>(pick(256));
            break;
        case 1:  // binary with NULs and carriage returns
            for (unsigned n = pick(64); n > 0; --n) line += "\0\r\x7f\x80"[pick(4)];
            break;
        case 2:  // overlong: past the 4 KiB line limit, sometimes far past it
            line.assign(4097 + pick(3) * 6000 + pick(512), static_cast<char>('A' + pick(26)));
            break;
        case 3:
            line = kMangled[pick(std::size(kMangled))];
            break;
        case 4:  // printable noise
            for (unsigned n = pick(80); n > 0; --n) line += static_cast<char>(' ' + pick(95));
            break;
        default:
            line = "";
    }
    line.erase(std::remove(line.begin(), line.end(), '\n'), line.end());
    return line;
}

// Reads and discards whatever has arrived, without waiting.
void drain_available(int fd) {
    char buffer[16384];
    while (::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT) > 0) {
    }
}

// One admin connection: `lines` hostile lines pipelined in random-sized writes, sometimes ending
// in a partial line or a reset; then reads whatever comes back until ringlb closes.
void run_admin_fuzz_connection(std::uint16_t admin_port, unsigned lines, std::mt19937& random) {
    UniqueFd admin = connect_to(admin_port);
    if (!admin.valid()) return;
    std::string payload;
    for (unsigned i = 0; i < lines; ++i) payload += hostile_admin_line(random) + (random() % 4 ? "\n" : "\r\n");
    const bool partial_end = random() % 3 == 0;
    if (partial_end) payload += "show sta";  // the connection ends inside a line
    for (std::size_t at = 0; at < payload.size();) {
        const std::size_t piece = std::min<std::size_t>(payload.size() - at, 1 + random() % 8192);
        if (!send_all(admin.get(), std::string_view(payload).substr(at, piece), 5s)) return;
        at += piece;
        // Drain replies as we go so neither side blocks on a full socket.
        drain_available(admin.get());
    }
    if (random() % 4 == 0) {
        const linger abortive{1, 0};
        ::setsockopt(admin.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
        return;
    }
    ::shutdown(admin.get(), SHUT_WR);
    (void)read_until_closed(admin.get(), 10s);
}

}  // namespace

namespace {

const char kProxyV2Signature[] = "\r\n\r\n\0\r\nQUIT\n";

// A PROXY header that is malformed, or cut short, or absent.
std::string hostile_proxy_header(std::mt19937& random) {
    const auto pick = [&](unsigned n) { return static_cast<unsigned>(random() % n); };
    const std::string v1 = "PROXY TCP4 192.0.2.1 192.0.2.2 1234 80";
    const std::string v2_signature(kProxyV2Signature, 12);
    std::string header;
    switch (pick(8)) {
        case 0:  // random bytes
            for (unsigned n = 1 + pick(200); n > 0; --n) header += static_cast<char>(pick(256));
            break;
        case 1:  // a valid v1 line cut short, never finished (ringlb waits for connect_timeout)
            header = v1.substr(0, 1 + pick(static_cast<unsigned>(v1.size())));
            break;
        case 2:
            header = "PROXY TCP4 999.0.2.1 192.0.2.2 1234 80\r\n";
            break;
        case 3:  // longer than any v1 line may be
            header = "PROXY TCP4 " + std::string(120 + pick(200), '1');
            break;
        case 4:  // the v2 signature cut short
            header = v2_signature.substr(0, 1 + pick(11));
            break;
        case 5:  // v2 with a version that does not exist
            header = v2_signature + "\x31\x11" + std::string("\0\x0c", 2) + std::string(12, '\x7f');
            break;
        case 6:  // v2 announcing 65535 address bytes and sending a few
            header = v2_signature + "\x21\x11\xff\xff" + std::string(1 + pick(40), '\x01');
            break;
        default:  // nothing at all
            break;
    }
    return header;
}

struct ProxyFuzzOutcome {
    unsigned closed_by_ringlb = 0;
    unsigned closed_by_us = 0;
    unsigned left_open = 0;      // ringlb kept a bad connection past connect_timeout (+ margin)
    unsigned got_data = 0;       // a bad header reached the backend and it answered
    unsigned connect_failed = 0;
};

// Waits until every pending connect of a wave completed (or failed).
void wait_connected(std::vector<UniqueFd>& wave) {
    std::vector<pollfd> fds;
    for (auto& fd : wave) fds.push_back({fd.get(), POLLOUT, 0});
    const auto deadline = Clock::now() + 3s;
    for (;;) {
        std::erase_if(fds, [](const pollfd& entry) { return entry.revents != 0; });
        if (fds.empty() || Clock::now() >= deadline) return;
        ::poll(fds.data(), fds.size(), std::min(millis_until(deadline), 100));
    }
}

// Polls a wave until ringlb closed every connection or `timeout` passed.
void wait_closed_by_ringlb(std::vector<UniqueFd>& wave, ProxyFuzzOutcome& outcome, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::vector<pollfd> fds;
    for (auto& fd : wave)
        if (fd.valid()) fds.push_back({fd.get(), POLLIN, 0});
    while (!fds.empty() && Clock::now() < deadline) {
        if (::poll(fds.data(), fds.size(), std::min(millis_until(deadline), 100)) <= 0) continue;
        for (auto& entry : fds) {
            if (entry.revents == 0) continue;
            char buffer[256];
            const ssize_t n = ::recv(entry.fd, buffer, sizeof buffer, 0);
            if (n > 0) {
                ++outcome.got_data;
                continue;
            }
            ++outcome.closed_by_ringlb;
            entry.fd = -1;
        }
        std::erase_if(fds, [](const pollfd& entry) { return entry.fd < 0; });
    }
    outcome.left_open += static_cast<unsigned>(fds.size());
}

// `total` connections in waves of `wave_size`, each sending a hostile header. A quarter reset
// right after sending; the rest wait for ringlb to close them: at once for a malformed header,
// after connect_timeout (1 s) for an incomplete one.
ProxyFuzzOutcome run_proxy_fuzz(std::uint16_t port, unsigned total, unsigned wave_size, std::mt19937& random) {
    ProxyFuzzOutcome outcome;
    for (unsigned done = 0; done < total; done += wave_size) {
        std::vector<UniqueFd> wave;
        for (unsigned i = 0; i < wave_size; ++i) wave.push_back(start_connect(port));
        wait_connected(wave);
        for (auto& fd : wave) {
            const std::string header = hostile_proxy_header(random);
            if (!fd.valid() || (!header.empty() && ::send(fd.get(), header.data(), header.size(), MSG_NOSIGNAL) < 0)) {
                ++outcome.connect_failed;
                fd.reset();
            } else if (random() % 4 == 0) {
                const linger abortive{1, 0};
                ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
                fd.reset();
                ++outcome.closed_by_us;
            }
        }
        wait_closed_by_ringlb(wave, outcome, 3s);
    }
    return outcome;
}

}  // namespace

TEST_CASE("exhaustion: 10,000 hostile admin lines and 10,000 bad PROXY headers: service and admin port intact") {
    constexpr unsigned kAdminThreads = 4, kAdminConnectionsPerThread = 25, kLinesPerConnection = 100;
    constexpr unsigned kProxyConnections = 10000, kProxyWave = 2000;
    EchoBackend echo;
    NameBackend proxied_backend("proxied");
    const std::uint16_t served_port = find_free_port(), proxied_port = find_free_port(), admin_port = find_free_port();
    RuleSpec served;
    served.id = "served";
    served.listen = {loopback_endpoint(served_port)};
    served.servers = {{echo.endpoint()}};
    RuleSpec proxied;
    proxied.id = "proxied";
    proxied.listen = {loopback_endpoint(proxied_port)};
    proxied.servers = {{proxied_backend.endpoint()}};
    proxied.connect_timeout = "1s";
    proxied.extra_lines = {"accept_proxy = true"};
    RinglbProcess ringlb(render_config(global_with_admin(admin_port), {served, proxied}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const auto started = Clock::now();
    SteadyClient steady(served_port);
    std::vector<std::thread> admin_fuzzers;
    for (unsigned t = 0; t < kAdminThreads; ++t) {
        admin_fuzzers.emplace_back([admin_port, t] {
            std::mt19937 random(0xAD0000 + t);  // fixed seeds: a failure reproduces
            for (unsigned c = 0; c < kAdminConnectionsPerThread; ++c)
                run_admin_fuzz_connection(admin_port, kLinesPerConnection, random);
        });
    }
    std::mt19937 random(0x9800);
    const ProxyFuzzOutcome proxy = run_proxy_fuzz(proxied_port, kProxyConnections, kProxyWave, random);
    for (auto& fuzzer : admin_fuzzers) fuzzer.join();
    steady.stop();
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);

    INFO("hostile traffic took ", elapsed.count(), " ms; PROXY connections closed by ringlb ", proxy.closed_by_ringlb,
         ", reset by the test ", proxy.closed_by_us, ", left open ", proxy.left_open, ", answered ", proxy.got_data,
         ", connect failures ", proxy.connect_failed, "; steady client served ", steady.served(), ", failed ",
         steady.failed());
    CHECK(proxy.left_open == 0);
    CHECK(proxy.got_data == 0);
    CHECK(proxy.connect_failed == 0);
    CHECK(proxy.closed_by_ringlb + proxy.closed_by_us == kProxyConnections);
    CHECK(proxied_backend.accepted() == 0);
    CHECK(steady.failed() == 0);
    CHECK(steady.served() > 50);
    CHECK(ringlb.running());

    const AdminReply stats = admin_command(admin_port, "show stats");
    CHECK(stats.ok());
    CHECK(sessions_settle_at(admin_port, 0, 5s));
    CHECK(new_session_echoes(served_port, 2s));
    CHECK_CLEAN_EXIT(ringlb);
}
