// Passive health on real backends: a server that stops listening is marked DOWN and skipped,
// backup servers serve only while the primaries are down, a primary restarted on its port is
// used again after down_time, and `retries` bounds the servers tried per client.
#include <set>
#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
    return n;
}

}  // namespace

TEST_CASE("failover: a backend stopped mid-run is marked DOWN once and new clients are all served") {
    NameBackend a("a"), b("b"), c("c");
    std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{a.endpoint()}, {b.endpoint()}, {c.endpoint()}};
    rule.extra_lines = {"down_time = \"10s\""};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    for (int i = 0; i < 6; ++i) CHECK(!fetch_name(port).empty());
    CHECK(b.accepted() == 2);
    b.stop();  // closes its listener: connects to it are refused from now on

    unsigned served = 0;
    for (int i = 0; i < 30; ++i) {
        std::string name = fetch_name(port);
        CHECK_MESSAGE((name == "a" || name == "c"), "session ", i, " got '", name, "'");
        if (!name.empty()) ++served;
    }
    CHECK(served == 30);
    const std::string down = "server test/" + b.endpoint() + " DOWN for 10s: connect refused (1 consecutive failure)";
    CHECK(ringlb.wait_for_log(down, 3s));
    CHECK(count_of(ringlb.log_text(), " DOWN ") == 1);  // a state change is logged once
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("failover: the backup serves only while the primaries are down; a restarted primary is used again") {
    auto p1 = std::make_unique<NameBackend>("p1");
    auto p2 = std::make_unique<NameBackend>("p2");
    NameBackend backup("backup");
    const std::uint16_t p1_port = p1->port();
    const std::string p1_endpoint = p1->endpoint(), p2_endpoint = p2->endpoint();
    std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{p1_endpoint}, {p2_endpoint}, {backup.endpoint(), 1, true}};
    rule.extra_lines = {"down_time = \"300ms\"", "max_down_time = \"1s\""};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    for (int i = 0; i < 10; ++i) {
        std::string name = fetch_name(port);
        CHECK_MESSAGE((name == "p1" || name == "p2"), "session ", i, " got '", name, "'");
    }
    CHECK(backup.accepted() == 0);

    p1->stop();
    p2->stop();
    for (int i = 0; i < 10; ++i) CHECK(fetch_name(port) == "backup");
    CHECK(ringlb.wait_for_log("server test/" + p1_endpoint + " DOWN for 300ms: connect refused", 3s));
    CHECK(ringlb.wait_for_log("server test/" + p2_endpoint + " DOWN for 300ms: connect refused", 3s));

    // p1 comes back on its port: once its down time is over it is chosen, connects and is UP.
    p1.reset();
    NameBackend p1_again("p1", p1_port);
    std::string name;
    for (auto deadline = Clock::now() + 5s; Clock::now() < deadline;) {
        name = fetch_name(port);
        if (name == "p1") break;
        CHECK(name == "backup");
        std::this_thread::sleep_for(50ms);
    }
    REQUIRE(name == "p1");
    CHECK(ringlb.wait_for_log("server test/" + p1_endpoint + " UP", 3s));

    // p2 is still dead: its turns fail over to p1, never to the backup.
    const std::size_t backup_before = backup.accepted();
    for (int i = 0; i < 10; ++i) CHECK(fetch_name(port) == "p1");
    CHECK(backup.accepted() == backup_before);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("failover: retries = 1 tries at most 2 servers per client; dead servers are then skipped") {
    NameBackend live("live");
    std::string dead1 = loopback_endpoint(find_free_port());
    std::string dead2 = loopback_endpoint(find_free_port());
    std::uint16_t port = find_free_port();
    RuleSpec rule;
    rule.mode = "ms";
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{dead1}, {dead2}, {live.endpoint()}};
    rule.extra_lines = {"retries = 1"};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd first = connect_to(port);
    REQUIRE(first.valid());
    ReadResult result = read_until_closed(first.get(), 5s);
    CHECK(result.closed());
    CHECK(result.data.empty());
    CHECK(live.accepted() == 0);
    CHECK(ringlb.wait_for_log("no server left", 3s));
    // Both dead servers are DOWN now: the next client goes straight to the live one.
    CHECK(fetch_name(port) == "live");
    CHECK(fetch_name(port) == "live");
    CHECK_CLEAN_EXIT(ringlb);
}
