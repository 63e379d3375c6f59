// Rule queues against the real binary: with every server at max_connections, clients wait
// (holding no server connection), are served in arrival order as connections come free, are
// closed when the queue is full or their queue_timeout passes, and the metrics show it. Hostile
// waiters (tricklers, clients that never read, one address filling the queue) get no more than
// their share and no more time.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "prng_stream.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// The value of one sample line of /metrics ("name{labels}"), or -1 when absent.
double metric(std::uint16_t port, const std::string& series) {
    UniqueFd fd = connect_to(port);
    if (!fd.valid()) return -1;
    send_all(fd.get(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string body = read_until_closed(fd.get(), 5s).data;
    const size_t at = body.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(body.substr(at + series.size() + 2));
}

bool wait_for_metric(std::uint16_t port, const std::string& series, double value) {
    for (int i = 0; i < 200; ++i) {
        if (metric(port, series) == value) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// What one direction of a session may hold whatever its peers do, with the default buffer_size
// of 64 KiB and buffers of 32 KiB (README, receive buffers: the bounds): at most 64 KiB queued,
// and any two consecutive pieces hold more than a buffer, except that a partial send may have
// shrunk the first; so the first, three more, and one receive on its way. What a whole session
// may hold is twice that.
constexpr long long kDirectionBufferBound = 5;
constexpr long long kSessionBufferBound = 2 * kDirectionBufferBound;

void set_nodelay(int fd) {
    const int on = 1;
    REQUIRE(::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0);
}

// The byte a trickler sends as its i-th segment: a pattern whose order shows on arrival.
char trickle_byte(size_t i) { return static_cast<char>('a' + i % 26); }

// Sends one byte as a segment of its own; false when the kernel had no room for it right now.
bool send_one(int fd, char byte) { return ::send(fd, &byte, 1, MSG_NOSIGNAL) == 1; }

// True when ringlb has closed `fd` (EOF or reset), without waiting.
bool closed_now(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// Four bytes echoed through an open session within 1 s.
bool echoes(int fd, const std::string& word) {
    return send_all(fd, word, 1s) && read_exactly(fd, word.size(), 1s).data == word;
}

// A fresh client of `port` is echoed within 1 s.
bool fresh_client_echoed(std::uint16_t port) {
    UniqueFd client = connect_to(port);
    return client.valid() && echoes(client.get(), "ping");
}

GlobalSpec with_admin_and_metrics(std::uint16_t admin_port, std::uint16_t metrics_port) {
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\"", "[metrics]",
                             "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    return global;
}

// Rule "queued" on 127.0.0.1:port with the one server `server`, at most one connection to it,
// and `queue_lines` (queue, queue_timeout, ...).
RuleSpec queued_rule(std::uint16_t port, const std::string& server, std::vector<std::string> queue_lines) {
    RuleSpec rule;
    rule.id = "queued";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{server, 0, false, 1}};
    rule.extra_lines = std::move(queue_lines);
    return rule;
}

}  // namespace

TEST_CASE("queue: clients wait for a full server in arrival order, a full queue and queue_timeout close them") {
    NameBackend server("s");
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    const RuleSpec rule = queued_rule(port, server.endpoint(), {"queue = 2", "queue_timeout = \"1500ms\""});
    GlobalSpec global;
    global.threads = 2;
    global.extra_lines = {"log_connections = true"};
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string length = "ringlb_rule_queue_length{rule=\"queued\"}";

    UniqueFd holder;
    REQUIRE(open_session(port, holder) == "s");
    UniqueFd first = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 1));
    UniqueFd second = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 2));
    UniqueFd over = connect_to(port);  // every server and the queue full: closed as without a queue
    CHECK(read_until_closed(over.get(), 2s).closed());
    CHECK(!wait_readable(first.get(), 200ms));  // still waiting: no server byte yet

    holder.reset();  // the connection comes free: the client that came first gets it
    CHECK(read_line(first.get(), 2s).data == "s");
    CHECK(!wait_readable(second.get(), 200ms));
    first.reset();
    CHECK(read_line(second.get(), 2s).data == "s");
    CHECK(metric(metrics_port, length) == 0);

    // Nobody frees the connection now: a new waiter is closed once queue_timeout has passed.
    const auto waited_from = Clock::now();
    UniqueFd late = connect_to(port);
    CHECK(read_until_closed(late.get(), 5s).closed());
    CHECK(Clock::now() - waited_from >= 1400ms);
    REQUIRE(wait_for_metric(metrics_port, "ringlb_rule_queue_timeouts_total{rule=\"queued\"}", 1));
    CHECK(metric(metrics_port, "ringlb_rule_queue_full_total{rule=\"queued\"}") == 1);
    CHECK(metric(metrics_port, "ringlb_rule_queue_time_seconds_count{rule=\"queued\"}") == 3);
    CHECK(ringlb.wait_for_log("end=queue-timeout"));
    second.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("queue: without queue a client that finds every server full is closed at once (unchanged)") {
    NameBackend server("s");
    const std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{server.endpoint(), 0, false, 1}};
    RinglbProcess ringlb(render_config(GlobalSpec{}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    UniqueFd holder;
    REQUIRE(open_session(port, holder) == "s");
    const auto started = Clock::now();
    UniqueFd refused = connect_to(port);
    CHECK(read_until_closed(refused.get(), 2s).closed());
    CHECK(Clock::now() - started < 1s);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("queue: bytes sent while waiting arrive whole once served; a waiter that resets holds up nobody") {
    EchoBackend server;
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    const RuleSpec rule = queued_rule(port, server.endpoint(), {"queue = 10", "queue_timeout = \"10s\""});
    GlobalSpec global;
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string length = "ringlb_rule_queue_length{rule=\"queued\"}";

    UniqueFd holder = connect_to(port);
    REQUIRE(send_all(holder.get(), "hold"));
    REQUIRE(read_exactly(holder.get(), 4, 2s).data == "hold");
    UniqueFd resetter = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 1));
    UniqueFd patient = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 2));
    std::string sent;
    for (int i = 0; i < 1000; ++i) sent += "line " + std::to_string(i) + "\n";
    REQUIRE(send_all(patient.get(), sent));  // held by the kernel while the client waits
    const linger abortive{1, 0};
    REQUIRE(setsockopt(resetter.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive) == 0);
    resetter.reset();  // gone with a reset while first in line

    holder.reset();
    CHECK(read_exactly(patient.get(), sent.size(), 5s).data == sent);
    CHECK(metric(metrics_port, length) == 0);
    patient.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

// A waiter that sends one-byte segments the whole time it waits: nothing of it is read until it
// is served, so it holds no more buffers than any session may, the worker it shares with the
// holder and with another rule's clients keeps serving them, and its bytes arrive whole and in
// order once the connection comes free.
TEST_CASE("queue: a waiter trickling one-byte segments holds few buffers, stalls nobody, and every byte arrives in order") {
    EchoBackend queued_server, other_server;
    const std::uint16_t port = find_free_port(), other_port = find_free_port();
    const std::uint16_t admin_port = find_free_port(), metrics_port = find_free_port();
    const RuleSpec rule = queued_rule(port, queued_server.endpoint(), {"queue = 4", "queue_timeout = \"20s\""});
    RinglbProcess ringlb(render_config(with_admin_and_metrics(admin_port, metrics_port),
                                       {rule, one_server_rule("other", other_port, other_server.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string length = "ringlb_rule_queue_length{rule=\"queued\"}";

    UniqueFd holder = connect_to(port);
    REQUIRE(echoes(holder.get(), "hold"));
    UniqueFd trickler = connect_to(port);
    REQUIRE(trickler.valid());
    set_nodelay(trickler.get());
    REQUIRE(wait_for_metric(metrics_port, length, 1));

    constexpr size_t kSegments = 3000;
    std::string sent;
    for (size_t i = 0; i < kSegments; ++i) {
        if (send_one(trickler.get(), trickle_byte(sent.size()))) sent += trickle_byte(sent.size());
        std::this_thread::sleep_for(500us);
        if (i % 500 != 499) continue;
        CHECK(echoes(holder.get(), "same"));             // the rule's session holding the connection
        CHECK(fresh_client_echoed(other_port));           // another rule's newcomer
        CHECK(!closed_now(trickler.get()));
    }
    MESSAGE(sent.size(), " one-byte segments sent while queued");
    REQUIRE(sent.size() >= kSegments / 2);
    CHECK(metric(metrics_port, length) == 1);  // still waiting
    const long long peak_queued = session_peak_buffers(admin_port);
    CHECK(peak_queued >= 1);
    CHECK(peak_queued <= kSessionBufferBound);

    holder.reset();  // the connection comes free: every trickled byte goes through, in order
    CHECK(read_exactly(trickler.get(), sent.size(), 5s).data == sent);
    CHECK(echoes(trickler.get(), "more"));
    CHECK(session_peak_buffers(admin_port) <= kSessionBufferBound);
    CHECK(metric(metrics_port, length) == 0);
    trickler.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

// The queue timer runs from the moment the client started waiting: bytes it sends meanwhile are
// not activity that restarts it (a client that could keep its place by trickling would wait
// without bound), so a trickler is closed when its queue_timeout passes, like a silent waiter.
TEST_CASE("queue: a waiter that keeps trickling is closed when its queue_timeout passes, like a silent one") {
    NameBackend server("s");
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    const RuleSpec rule = queued_rule(port, server.endpoint(), {"queue = 4", "queue_timeout = \"1s\""});
    GlobalSpec global;
    global.extra_lines = {"log_connections = true"};
    global.trailing_lines = {"[metrics]", "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string length = "ringlb_rule_queue_length{rule=\"queued\"}";

    UniqueFd holder;
    REQUIRE(open_session(port, holder) == "s");
    const auto trickler_from = Clock::now();
    UniqueFd trickler = connect_to(port);
    REQUIRE(trickler.valid());
    set_nodelay(trickler.get());
    const auto silent_from = Clock::now();
    UniqueFd silent = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 2));

    std::optional<Clock::duration> trickler_waited, silent_waited;
    size_t trickled = 0;
    for (size_t i = 0; Clock::now() - trickler_from < 5s && !(trickler_waited && silent_waited); ++i) {
        if (!trickler_waited) {
            if (send_one(trickler.get(), trickle_byte(i))) ++trickled;
            if (closed_now(trickler.get())) trickler_waited = Clock::now() - trickler_from;
        }
        if (!silent_waited && closed_now(silent.get())) silent_waited = Clock::now() - silent_from;
        std::this_thread::sleep_for(500us);
    }
    MESSAGE(trickled, " one-byte segments sent before the close");
    REQUIRE(trickler_waited.has_value());
    REQUIRE(silent_waited.has_value());
    CHECK(*trickler_waited >= 1s);
    CHECK(*trickler_waited < 3s);
    CHECK(*silent_waited >= 1s);
    CHECK(*silent_waited < 3s);
    CHECK(trickled >= 500);  // it was active for most of its wait
    CHECK(wait_for_metric(metrics_port, "ringlb_rule_queue_timeouts_total{rule=\"queued\"}", 2));
    CHECK(ringlb.wait_for_log("end=queue-timeout"));
    CHECK(read_line(holder.get(), 200ms).end == ReadEnd::Timeout);  // the holder is untouched
    holder.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

// Once served, a client that never reads while its server streams to it holds no more buffers
// than any session may, and it does not hold up the line: the waiter behind it is served as soon
// as it leaves.
TEST_CASE("queue: a served waiter that never reads holds bounded buffers, and the next in line is served when it leaves") {
    PullOrEchoBackend server(256ull * 1024 * 1024);
    const std::uint16_t port = find_free_port(), admin_port = find_free_port(), metrics_port = find_free_port();
    const RuleSpec rule = queued_rule(port, server.endpoint(), {"queue = 4", "queue_timeout = \"20s\""});
    RinglbProcess ringlb(render_config(with_admin_and_metrics(admin_port, metrics_port), {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string length = "ringlb_rule_queue_length{rule=\"queued\"}";

    UniqueFd holder = connect_to(port);
    REQUIRE(echoes(holder.get(), "hold"));
    UniqueFd nonreader = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 1));
    REQUIRE(send_all(nonreader.get(), std::string("P") + std::string(8, '\x07')));  // asks for the stream
    UniqueFd next = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 2));

    holder.reset();  // the first holder leaves: the never-reader is served and its stream starts
    REQUIRE(wait_readable(nonreader.get(), 2s));
    CHECK(wait_for_metric(metrics_port, length, 1));
    // Wait for the stream to run into the client's closed window: ringlb's held buffers stop
    // changing (three equal samples 200 ms apart).
    long long held = -1;
    int unchanged = 0;
    for (const auto until = Clock::now() + 5s; unchanged < 2 && Clock::now() < until;) {
        std::this_thread::sleep_for(200ms);
        const long long now_held = buffers_held(admin_port);
        unchanged = now_held == held ? unchanged + 1 : 0;
        held = now_held;
    }
    MESSAGE("buffers held with the stream stalled: ", held, "; most one session held: ", session_peak_buffers(admin_port));
    CHECK(unchanged == 2);
    CHECK(held <= kDirectionBufferBound);  // only the stream's direction holds any
    CHECK(session_peak_buffers(admin_port) <= kSessionBufferBound);
    CHECK(!wait_readable(next.get(), 200ms));  // still waiting: the stream holds the connection

    // Nothing was lost while it stood still: the first MiB arrives whole once it reads.
    constexpr size_t kChecked = 1024 * 1024;
    const std::string head = read_exactly(nonreader.get(), kChecked, 5s).data;
    REQUIRE(head.size() >= kChecked);
    PrngStream expected(server_to_client_seed(0x0707070707070707ull));
    CHECK(!expected.verify({reinterpret_cast<const std::uint8_t*>(head.data()), head.size()}).has_value());

    nonreader.reset();  // it leaves with its stream unread: the next waiter gets the connection
    CHECK(echoes(next.get(), "next"));
    CHECK(metric(metrics_port, length) == 0);
    next.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

// Waiters are sessions of their address: with max_sessions_per_ip (global or the rule's), one
// address holds at most its share of sessions, queued or served, so it cannot fill the queue,
// and a client from another address still gets a place and its turn.
TEST_CASE("queue: one address takes no more queue places than its max_sessions_per_ip; another address still gets one") {
    NameBackend server("s");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port(), metrics_port = find_free_port();
    RuleSpec rule = queued_rule(port, server.endpoint(), {"queue = 10", "queue_timeout = \"20s\""});
    GlobalSpec global = with_admin_and_metrics(admin_port, metrics_port);
    SUBCASE("global max_sessions_per_ip") { global.max_sessions_per_ip = 3; }
    SUBCASE("the rule's max_sessions_per_ip") { rule.extra_lines.push_back("max_sessions_per_ip = 3"); }
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string length = "ringlb_rule_queue_length{rule=\"queued\"}";

    UniqueFd holder;
    REQUIRE(open_session(port, holder) == "s");  // 127.0.0.1's first session
    UniqueFd first = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 1));
    UniqueFd second = connect_to(port);
    REQUIRE(wait_for_metric(metrics_port, length, 2));  // its third: its share is used up
    const auto started = Clock::now();
    UniqueFd over = connect_to(port);
    CHECK(read_until_closed(over.get(), 2s).closed());  // closed at once, though the queue has room
    CHECK(Clock::now() - started < 1s);
    CHECK(metric(metrics_port, length) == 2);
    const AdminReply stats = admin_command(admin_port, "show stats");
    CHECK(reply_value(stats, "rejected_limit_per_ip").value_or(-1) == 1);

    UniqueFd other = connect_from("127.0.0.2", port);  // another address still gets a place
    REQUIRE(other.valid());
    CHECK(wait_for_metric(metrics_port, length, 3));
    CHECK(!wait_readable(other.get(), 200ms));

    holder.reset();  // served in arrival order
    CHECK(read_line(first.get(), 2s).data == "s");
    first.reset();
    CHECK(read_line(second.get(), 2s).data == "s");
    second.reset();
    CHECK(read_line(other.get(), 2s).data == "s");
    CHECK(metric(metrics_port, length) == 0);
    other.reset();
    CHECK_CLEAN_EXIT(ringlb);
}
