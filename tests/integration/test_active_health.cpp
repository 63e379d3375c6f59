// Active health checks against real backends: servers start DOWN, come UP after `rise` passed
// checks, go DOWN after `fall` failed ones, and only UP servers get sessions.
#include <signal.h>

#include <fstream>
#include <map>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// The checker's verdict reaches the workers a moment after it is logged.
bool eventually_served_by(std::uint16_t port, const std::string& name) {
    for (int i = 0; i < 100; ++i) {
        if (fetch_name(port) == name) return true;
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

}  // namespace

TEST_CASE("active health: a dead server never gets a client; it takes traffic once it answers checks") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), b_port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{a.endpoint()}, {loopback_endpoint(b_port)}};
    rule.extra_lines = {"[rule.health]", "interval = \"100ms\"", "timeout = \"100ms\"", "rise = 2", "fall = 2"};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    REQUIRE(ringlb.wait_for_log("server test/" + a.endpoint() + " UP"));
    REQUIRE(eventually_served_by(port, "a"));
    for (int i = 0; i < 6; ++i) CHECK(fetch_name(port) == "a");
    CHECK(ringlb.log_text().find("connect to " + loopback_endpoint(b_port)) == std::string::npos);

    NameBackend b("b", b_port);
    REQUIRE(ringlb.wait_for_log("server test/" + loopback_endpoint(b_port) + " UP"));
    REQUIRE(eventually_served_by(port, "b"));
    std::map<std::string, int> counts;
    for (int i = 0; i < 6; ++i) ++counts[fetch_name(port)];
    CHECK(counts["a"] == 3);
    CHECK(counts["b"] == 3);

    a.stop();
    REQUIRE(ringlb.wait_for_log("server test/" + a.endpoint() + " DOWN: connect refused"));
    std::this_thread::sleep_for(200ms);
    for (int i = 0; i < 4; ++i) CHECK(fetch_name(port) == "b");
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("active health: send/expect passes only servers whose reply starts as expected") {
    NameBackend good("+PONG"), bad("-ERR");
    const std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{good.endpoint()}, {bad.endpoint()}};
    rule.extra_lines = {"[rule.health]", "interval = \"100ms\"", "rise = 1", "fall = 1", "send = \"PING\\r\\n\"",
                        "expect = \"+PONG\""};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    REQUIRE(ringlb.wait_for_log("server test/" + good.endpoint() + " UP"));
    REQUIRE(eventually_served_by(port, "+PONG"));
    for (int i = 0; i < 5; ++i) CHECK(fetch_name(port) == "+PONG");
    CHECK(ringlb.log_text().find("server test/" + bad.endpoint() + " UP") == std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("active health: a reload that changes the rule keeps servers UP (no outage while checks rerun)") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{a.endpoint()}};
    // rise = 5 at 1 s: a rule starting its checks afresh would refuse clients for 5 s.
    rule.extra_lines = {"[rule.health]", "interval = \"1s\"", "timeout = \"500ms\"", "rise = 1", "fall = 5"};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    REQUIRE(ringlb.wait_for_log("server test/" + a.endpoint() + " UP"));
    REQUIRE(eventually_served_by(port, "a"));

    rule.timeout = "200s";  // a change: the rule gets a new slot
    rule.extra_lines = {"[rule.health]", "interval = \"1s\"", "timeout = \"500ms\"", "rise = 5", "fall = 5"};
    {
        std::ofstream out(ringlb.config_path(), std::ios::trunc);
        out << render_config({}, {rule});
    }
    const size_t log_before_reload = ringlb.log_text().size();  // the start may have refused a client
    REQUIRE(::kill(ringlb.pid(), SIGHUP) == 0);
    REQUIRE(ringlb.wait_for_log("reloaded"));
    for (int i = 0; i < 5; ++i) CHECK(fetch_name(port) == "a");
    CHECK(ringlb.log_text().find("no server left", log_before_reload) == std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}
