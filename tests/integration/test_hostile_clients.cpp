// Clients that behave as badly as they can with receive buffers: one that trickles one-byte
// segments into a path that stopped moving, and thousands that never read what they asked for.
// None of them may stall the other sessions of its worker or hold more than its share of buffers,
// and every byte still arrives once they read again.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#include <algorithm>
#include <map>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "prng_stream.hpp"
#include "proc_stats.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// A listener whose connections are never accepted, so never read: the kernel completes their
// handshakes and, with SO_RCVBUF 4096, takes a few KiB of each before the path stops.
struct SilentBackend {
    UniqueFd fd;
    std::uint16_t port = 0;
    SilentBackend() {
        fd = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fd.valid());
        const int small = 4096;
        REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        REQUIRE(::listen(fd.get(), 4096) == 0);
        port = local_port(fd.get());
    }
    std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }
};

GlobalSpec with_admin(std::uint16_t admin_port, std::vector<std::string> global_lines = {}) {
    GlobalSpec global;
    global.extra_lines = std::move(global_lines);
    global.trailing_lines = {"[admin]", "listen = \"127.0.0.1:" + std::to_string(admin_port) + "\""};
    return global;
}

// On io_uring the defect shows with multishot receives only: without them the test proves
// nothing there, so it says so and stops (the epoll engine always runs it).
bool runs_multishot_or_says_why(const RinglbProcess& ringlb) {
    if (test_engine() != "uring") return true;
    const std::string line = ringlb.first_log_line();
    const std::string used = line.substr(0, line.find(';'));
    if (used.find("multishot-recv") != std::string::npos) return true;
    MESSAGE("SKIP: io_uring here has no capped multishot receives: ", line);
    return false;
}

void set_int_option(int fd, int level, int name, int value) {
    REQUIRE(::setsockopt(fd, level, name, &value, sizeof value) == 0);
}

size_t unsent_bytes(int fd) {
    int bytes = 0;
    REQUIRE(::ioctl(fd, SIOCOUTQ, &bytes) == 0);
    return static_cast<size_t>(bytes);
}

// The `up=` byte count of each session in `show sessions`, by client port.
std::map<std::uint16_t, long long> bytes_up_by_client(std::uint16_t admin_port) {
    const AdminReply reply = admin_command(admin_port, "show sessions");
    REQUIRE(reply.ok());
    std::map<std::uint16_t, long long> up;
    size_t at = 0;
    while ((at = reply.body.find("client=127.0.0.1:", at)) != std::string::npos) {
        at += 17;
        const auto port = static_cast<std::uint16_t>(std::stoul(reply.body.substr(at)));
        const size_t field = reply.body.find(" up=", at);
        up[port] = std::stoll(reply.body.substr(field + 4));
    }
    return up;
}

// Waits until the streams of clients that stopped reading have run into their closed windows:
// ringlb's held buffers stop changing (three equal samples 200 ms apart). Until then ringlb is
// still filling fresh buffers for every such stream at once, which is the cost of setting them
// up, not of holding them. The time it took is reported; false when `timeout` passed first.
bool wait_until_streams_stall(std::uint16_t admin_port, std::chrono::seconds timeout) {
    const auto start = Clock::now();
    long long last = -1;
    int unchanged = 0;
    while (Clock::now() - start < timeout) {
        const long long held = buffers_held(admin_port);
        unchanged = held == last && held > 0 ? unchanged + 1 : 0;
        last = held;
        if (unchanged == 2) {
            MESSAGE("streams stalled after ",
                    std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(), " ms, ", held,
                    " buffers held");
            return true;
        }
        std::this_thread::sleep_for(200ms);
    }
    return false;
}

// A client on its way to a path that does not move: TCP_NODELAY, so each one-byte send is a
// segment of its own.
struct Hog {
    UniqueFd fd;
    std::uint16_t port = 0;
    std::uint64_t sent = 0;
    bool primed = false;
};

Hog connect_hog(std::uint16_t port) {
    Hog hog;
    hog.fd = connect_to(port);
    REQUIRE(hog.fd.valid());
    set_int_option(hog.fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    set_nonblocking(hog.fd.get());
    hog.port = local_port(hog.fd.get());
    return hog;
}

// Sends 16 KiB steps on every hog until the path beyond ringlb has stopped and ringlb itself
// holds some of its bytes, with room for more: everything the hog sent has left its socket, and
// ringlb has delivered less than that.
void prime(std::vector<Hog>& hogs, std::uint16_t admin_port) {
    const std::string step(16 * 1024, 'h');
    const auto deadline = Clock::now() + 60s;
    for (;;) {
        bool all = true;
        for (Hog& hog : hogs) {
            if (hog.primed) continue;
            all = false;
            if (unsent_bytes(hog.fd.get()) > 0) continue;  // ringlb has not read the last step yet
            const ssize_t n = ::send(hog.fd.get(), step.data(), step.size(), MSG_NOSIGNAL);
            if (n > 0) hog.sent += static_cast<std::uint64_t>(n);
        }
        if (all) return;
        REQUIRE(Clock::now() < deadline);
        std::this_thread::sleep_for(30ms);
        const auto up = bytes_up_by_client(admin_port);
        for (Hog& hog : hogs) {
            const auto entry = up.find(hog.port);
            if (hog.primed || entry == up.end() || unsent_bytes(hog.fd.get()) > 0) continue;
            hog.primed = static_cast<std::uint64_t>(entry->second) < hog.sent;
        }
    }
}

// One hog on `port` whose path beyond ringlb has stopped (see prime).
std::vector<Hog> primed_hog(std::uint16_t port, std::uint16_t admin_port) {
    std::vector<Hog> hogs;
    hogs.push_back(connect_hog(port));
    prime(hogs, admin_port);
    return hogs;
}

// Sends `count` one-byte segments on each hog, half a millisecond apart per round.
void trickle(std::vector<Hog>& hogs, int count) {
    for (int i = 0; i < count; ++i) {
        for (Hog& hog : hogs)
            if (::send(hog.fd.get(), "t", 1, MSG_NOSIGNAL) == 1) ++hog.sent;
        std::this_thread::sleep_for(500us);
    }
}

// How long an echo of four bytes through `port` takes; nullopt when none came within 2 s.
std::optional<std::chrono::milliseconds> echo_time(std::uint16_t port) {
    UniqueFd client = connect_to(port);
    if (!client.valid()) return std::nullopt;
    const auto start = Clock::now();
    if (!send_all(client.get(), "ping", 2s)) return std::nullopt;
    const ReadResult echo = read_exactly(client.get(), 4, 2s);
    if (echo.data != "ping") return std::nullopt;
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// What a hog must not take from the others: a fresh session through `port` is echoed at once, and
// no session ever held more than 8 chunks per direction, whatever the segments.
void check_served_beside_hogs(std::uint16_t port, std::uint16_t admin_port) {
    const auto took = echo_time(port);
    REQUIRE_MESSAGE(took.has_value(), "a fresh session got no echo within 2 s");
    CHECK(*took <= 100ms);
    const long long peak = session_peak_buffers(admin_port);
    CHECK(peak >= 1);
    CHECK(peak <= 16);
}

// Clients that ask PullOrEchoBackend for a stream and then read nothing: a small receive buffer
// and a small MSS, so the stream sits in ringlb and the socket buffers in many small segments.
struct Puller {
    UniqueFd fd;
    std::uint64_t id = 0;
    std::optional<PrngStream> expected;
    std::uint64_t verified = 0;
    bool mismatch = false;
    bool eof = false;
};

std::vector<Puller> start_pullers(std::uint16_t port, unsigned count, std::uint64_t first_id) {
    std::vector<Puller> pullers(count);
    for (unsigned i = 0; i < count; ++i) {
        Puller& p = pullers[i];
        p.id = first_id + i;
        p.expected.emplace(server_to_client_seed(p.id));
        p.fd = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(p.fd.valid());
        set_int_option(p.fd.get(), SOL_SOCKET, SO_RCVBUF, 4096);
        set_int_option(p.fd.get(), IPPROTO_TCP, TCP_MAXSEG, 536);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(p.fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        std::string request(9, 'P');
        for (int b = 0; b < 8; ++b) request[1 + b] = static_cast<char>((p.id >> (8 * b)) & 0xFF);
        REQUIRE(send_all(p.fd.get(), request, 5s));
        set_nonblocking(p.fd.get());
    }
    return pullers;
}

// Reads every puller's stream to its end, verifying each byte; false when `timeout` passed first.
bool drain_pullers(std::vector<Puller>& pullers, std::uint64_t bytes_each, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::vector<std::uint8_t> buffer(64 * 1024);
    size_t open = pullers.size();
    while (open > 0 && Clock::now() < deadline) {
        std::vector<pollfd> fds;
        std::vector<Puller*> owners;
        for (Puller& p : pullers) {
            if (p.eof) continue;
            fds.push_back({p.fd.get(), POLLIN, 0});
            owners.push_back(&p);
        }
        if (::poll(fds.data(), fds.size(), 100) < 0) return false;
        for (size_t i = 0; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            Puller& p = *owners[i];
            for (;;) {
                const ssize_t n = ::recv(p.fd.get(), buffer.data(), buffer.size(), 0);
                if (n > 0) {
                    if (p.expected->verify({buffer.data(), static_cast<size_t>(n)})) p.mismatch = true;
                    p.verified += static_cast<std::uint64_t>(n);
                    continue;
                }
                if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                    p.eof = true;
                    --open;
                }
                break;
            }
        }
    }
    bool all = open == 0;
    for (const Puller& p : pullers) {
        if (p.verified != bytes_each || p.mismatch) {
            INFO("puller ", p.id, ": ", p.verified, " of ", bytes_each, " bytes", p.mismatch ? ", mismatch" : "");
            CHECK(false);
            all = false;
        }
    }
    return all;
}

}  // namespace

TEST_CASE("one client trickling one-byte segments into a stalled path does not stall its worker") {
    SilentBackend stalled;
    EchoBackend echo;
    const std::uint16_t hog_port = find_free_port();
    const std::uint16_t victim_port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(render_config(with_admin(admin_port), {one_server_rule("hog", hog_port, stalled.endpoint()),
                                                                one_server_rule("victim", victim_port, echo.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    if (!runs_multishot_or_says_why(ringlb)) return;

    std::vector<Hog> hogs = primed_hog(hog_port, admin_port);
    trickle(hogs, 4000);

    check_served_beside_hogs(victim_port, admin_port);
    CHECK_CLEAN_EXIT(ringlb);
}

// The FIN that comes right behind a trickler's last byte leaves with the bytes ringlb still holds
// (MSG_MORE, then shutdown) once the stalled server reads again: nothing of it may be lost, held
// back or reordered, and the worker keeps serving the others meanwhile.
TEST_CASE("a client trickling one-byte segments into a stalled path, then its FIN: the late server gets every byte, then the FIN") {
    SilentBackend stalled;
    EchoBackend echo;
    const std::uint16_t hog_port = find_free_port();
    const std::uint16_t victim_port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(render_config(with_admin(admin_port), {one_server_rule("hog", hog_port, stalled.endpoint()),
                                                                one_server_rule("victim", victim_port, echo.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::vector<Hog> hogs = primed_hog(hog_port, admin_port);
    Hog& hog = hogs.front();
    const std::uint64_t primed = hog.sent;  // all 'h'; what the trickle adds is 't'
    trickle(hogs, 2000);
    REQUIRE(::shutdown(hog.fd.get(), SHUT_WR) == 0);
    check_served_beside_hogs(victim_port, admin_port);

    // The server finally takes its connection and reads.
    REQUIRE(wait_readable(stalled.fd.get(), 5s));
    UniqueFd server(::accept4(stalled.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(server.valid());
    const ReadResult got = read_until_closed(server.get(), 20s);
    CHECK(got.end == ReadEnd::Eof);
    CHECK(got.data.size() == hog.sent);
    CHECK((got.data == std::string(primed, 'h') + std::string(hog.sent - primed, 't')));
    CHECK(hog.sent > primed);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("8 clients that never read do not take a 16-buffer starting pool from the others") {
    constexpr std::uint64_t kBytes = 8 * 1024 * 1024;
    PullOrEchoBackend backend(kBytes);
    const std::uint16_t port = find_free_port();
    RinglbProcess ringlb(render_config(with_admin(find_free_port(), {"receive_buffers = 16"}),
                                       {one_server_rule("pull", port, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    auto pullers = start_pullers(port, 8, 0x5160000);
    std::this_thread::sleep_for(1s);  // each session has filled its buffer_size (64 KiB) by now
    const auto took = echo_time(port);
    REQUIRE_MESSAGE(took.has_value(), "a fresh session got no echo within 2 s");
    CHECK(*took <= 100ms);
    CHECK(drain_pullers(pullers, kBytes, 60s));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("clients that never read cannot take the buffers of the others; the cap holds and is counted") {
    constexpr unsigned kClients = 200;
    constexpr std::uint64_t kBytes = 256 * 1024;
    PullOrEchoBackend backend(kBytes);
    const std::uint16_t port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    // 64 buffers of 32 KiB for the whole process.
    RinglbProcess ringlb(render_config(with_admin(admin_port, {"max_buffer_memory = \"2m\""}),
                                       {one_server_rule("pull", port, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const long rss_before = resident_kib_of(ringlb.pid()).value_or(0);

    auto pullers = start_pullers(port, kClients, 0x5100000);
    std::this_thread::sleep_for(1s);  // every stream has run into its reader's closed window
    const long rss_stalled = resident_kib_of(ringlb.pid()).value_or(0);
    const AdminReply stats = admin_command(admin_port, "show stats");
    REQUIRE(stats.ok());
    INFO(stats.body);
    CHECK(reply_value(stats, "buffer_memory_in_use").value_or(-1) <= 2 * 1024 * 1024);
    CHECK(reply_value(stats, "buffer_cap_reached").value_or(0) > 0);
    INFO("ringlb RSS before ", rss_before, " KiB, with ", kClients, " stalled readers ", rss_stalled, " KiB");
    // The cap (2 MiB) plus what 200 sessions and their sockets cost ringlb beyond buffers.
    CHECK(rss_stalled - rss_before < 2048 + 2048);

    CHECK(drain_pullers(pullers, kBytes, 60s));
    CHECK_CLEAN_EXIT(ringlb);
}

// The same hostile clients where zero_copy asks for splice and the kernel refuses it (a seccomp
// filter's EPERM, here through the RINGLB_FAULT hook): the directions that fall back to copying
// keep every bound of the copy path, and the streams held up meanwhile arrive whole.
TEST_CASE("where splice is refused, a trickling client and clients that never read still neither stall the worker nor hold more than their buffers") {
    constexpr std::uint64_t kBytes = 2 * 1024 * 1024;
    SilentBackend stalled;
    PullOrEchoBackend backend(kBytes);
    const std::uint16_t hog_port = find_free_port();
    const std::uint16_t pull_port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RuleSpec hog_rule = one_server_rule("hog", hog_port, stalled.endpoint());
    RuleSpec pull_rule = one_server_rule("pull", pull_port, backend.endpoint());
    for (RuleSpec* rule : {&hog_rule, &pull_rule}) rule->extra_lines.push_back("zero_copy = \"splice\"");
    RinglbOptions options;
    options.environment = {"RINGLB_FAULT=splice-refused"};
    RinglbProcess ringlb(options, render_config(with_admin(admin_port), {hog_rule, pull_rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    if (!runs_multishot_or_says_why(ringlb)) return;

    // The stalled readers first: their streams and the hog's meet splice's refusal side by side.
    auto pullers = start_pullers(pull_port, 8, 0x5ef0000);
    std::vector<Hog> hogs = primed_hog(hog_port, admin_port);
    trickle(hogs, 4000);

    check_served_beside_hogs(pull_port, admin_port);
    CHECK(bytes_up_by_client(admin_port).contains(hogs[0].port));  // the hog was held, not cut
    CHECK(drain_pullers(pullers, kBytes, 60s));
    CHECK(ringlb.log_text().find("zero_copy: the kernel refused splice") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

// The io_uring worker waits for a batch of completions after a busy round, counting the sends it
// just submitted as completions to come: one to a client that never reads does not come. The
// wait is bounded by a short window, so a lone request right after a busy spell is answered at
// once, not at the worker's next timer (up to 250 ms away). The epoll engine runs it alike.
TEST_CASE("a lone request right after a busy spell is answered at once, with sends to never-reading clients pending") {
    constexpr std::uint64_t kBytes = 1024 * 1024;
    PullOrEchoBackend backend(kBytes);
    const std::uint16_t port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(render_config(with_admin(admin_port), {one_server_rule("pull", port, backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    auto pullers = start_pullers(port, 8, 0x5B00000);
    REQUIRE(wait_until_streams_stall(admin_port, 30s));
    std::vector<UniqueFd> busy;
    for (int i = 0; i < 16; ++i) {
        busy.push_back(connect_to(port));
        REQUIRE(busy.back().valid());
        set_int_option(busy.back().get(), IPPROTO_TCP, TCP_NODELAY, 1);
    }
    UniqueFd lone = connect_to(port);
    REQUIRE(lone.valid());
    set_int_option(lone.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    const std::string request(64, 'E');  // 'E': PullOrEchoBackend echoes it
    std::chrono::milliseconds slowest{0};
    for (int spell = 0; spell < 20; ++spell) {
        for (int round = 0; round < 50; ++round) {
            for (const UniqueFd& fd : busy) REQUIRE(send_all(fd.get(), request, 2s));
            for (const UniqueFd& fd : busy) REQUIRE(read_exactly(fd.get(), request.size(), 2s).data == request);
        }
        const auto start = Clock::now();
        REQUIRE(send_all(lone.get(), "E", 2s));
        REQUIRE(read_exactly(lone.get(), 1, 2s).data == "E");
        slowest = std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start));
    }
    MESSAGE("slowest lone echo after a busy spell: ", slowest.count(), " ms");
    CHECK(slowest <= 100ms);
    CHECK(drain_pullers(pullers, kBytes, 60s));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_SUITE("scale") {

TEST_CASE("100 hogs trickling into stalled paths on a pool of 256 buffers: 50 other clients are all served") {
    SilentBackend stalled;
    EchoBackend echo;
    const std::uint16_t hog_port = find_free_port();
    const std::uint16_t victim_port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(render_config(with_admin(admin_port, {"max_buffer_memory = \"8m\""}),
                                       {one_server_rule("hog", hog_port, stalled.endpoint()),
                                        one_server_rule("victim", victim_port, echo.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    if (!runs_multishot_or_says_why(ringlb)) return;

    const auto start = Clock::now();
    std::vector<Hog> hogs;
    for (int i = 0; i < 100; ++i) hogs.push_back(connect_hog(hog_port));
    prime(hogs, admin_port);
    trickle(hogs, 40);  // 4,000 one-byte segments in all
    unsigned served = 0;
    for (int i = 0; i < 50; ++i) {
        const auto took = echo_time(victim_port);
        if (took && *took <= 1s) ++served;
    }
    CHECK(served == 50);
    CHECK(session_peak_buffers(admin_port) <= 16);
    MESSAGE("wall time ", std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(), " ms");
    CHECK_CLEAN_EXIT(ringlb);
}

// The echoes are timed once the streams have stalled: while 5,000 streams start at once, ringlb
// fills 64 KiB of fresh buffer memory for each (about 1.5 s of one core on a 2-core VM, half of it
// page faults), and a new client waits behind that work.
TEST_CASE("1,500 and then 5,000 clients that never read: fresh sessions are echoed at once, every stream arrives whole") {
    constexpr std::uint64_t kBytes = 256 * 1024;
    PullOrEchoBackend backend(kBytes);
    EchoBackend other_backend;
    const std::uint16_t port = find_free_port();
    const std::uint16_t other_port = find_free_port();
    const std::uint16_t admin_port = find_free_port();
    RinglbProcess ringlb(render_config(with_admin(admin_port), {one_server_rule("pull", port, backend.endpoint()),
                                                                one_server_rule("other", other_port, other_backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::uint64_t first_id = 0x5C00000;
    for (const unsigned count : {1500u, 5000u}) {
        CAPTURE(count);
        const auto start = Clock::now();
        auto pullers = start_pullers(port, count, first_id);
        first_id += count;
        REQUIRE(wait_until_streams_stall(admin_port, 60s));
        for (int i = 0; i < 5; ++i) {
            for (const std::uint16_t target : {port, other_port}) {
                const auto took = echo_time(target);
                REQUIRE_MESSAGE(took.has_value(), "no echo within 2 s through port ", target);
                CHECK(*took <= 100ms);
            }
        }
        CHECK(drain_pullers(pullers, kBytes, 120s));
        MESSAGE(count, " never-reading clients: ",
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(), " ms");
    }
    CHECK_CLEAN_EXIT(ringlb);
}

}  // TEST_SUITE("scale")
