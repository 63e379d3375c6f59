// Rule queues against the real binary: with every server at max_connections, clients wait
// (holding no server connection), are served in arrival order as connections come free, are
// closed when the queue is full or their queue_timeout passes, and the metrics show it.
#include <sys/socket.h>

#include <string>

#include "backends.hpp"
#include "config_text.hpp"
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

}  // namespace

TEST_CASE("queue: clients wait for a full server in arrival order, a full queue and queue_timeout close them") {
    NameBackend server("s");
    const std::uint16_t port = find_free_port(), metrics_port = find_free_port();
    RuleSpec rule;
    rule.id = "queued";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{server.endpoint(), 0, false, 1}};
    rule.extra_lines = {"queue = 2", "queue_timeout = \"1500ms\""};
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
    RuleSpec rule;
    rule.id = "queued";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{server.endpoint(), 0, false, 1}};
    rule.extra_lines = {"queue = 10", "queue_timeout = \"10s\""};
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
