// DNS server entries against the real binary: a rule's servers come from a name served by a
// dnsmasq the test starts (records with TTL 1 s, changed while traffic flows; SIGHUP makes dnsmasq
// read them again), and the backends listen on 127.0.0.2 and 127.0.0.3. Without dnsmasq (Debian
// package dnsmasq-base) the tests skip, saying so.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "local_dns.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

using local_dns::find_dnsmasq;
using local_dns::LocalDns;

// Two name backends on one port: "two" on 127.0.0.2, "three" on 127.0.0.3 (a dns entry has one
// port for every address of its name).
struct LoopbackPair {
    std::unique_ptr<NameBackend> two, three;
    std::uint16_t port = 0;

    LoopbackPair() {
        for (int attempt = 0; attempt < 20 && !three; ++attempt) {
            two = std::make_unique<NameBackend>("two", 0, "127.0.0.2");
            try {
                three = std::make_unique<NameBackend>("three", two->port(), "127.0.0.3");
            } catch (const std::system_error&) {
                two.reset();  // the port is taken on 127.0.0.3: another one
            }
        }
        REQUIRE(three);
        port = two->port();
    }
};

// Fetches names through ringlb until `wanted` answered, or `timeout`; returns every answer seen.
std::set<std::string> fetch_until(std::uint16_t port, const std::set<std::string>& wanted,
                                  std::chrono::milliseconds timeout = 10s) {
    std::set<std::string> seen;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        seen.insert(fetch_name(port, Family::V4, 2s));
        if (std::includes(seen.begin(), seen.end(), wanted.begin(), wanted.end())) break;
        std::this_thread::sleep_for(50ms);
    }
    return seen;
}

// Names answered by `count` fetches in a row.
std::set<std::string> fetch_many(std::uint16_t port, int count) {
    std::set<std::string> seen;
    for (int i = 0; i < count; ++i) seen.insert(fetch_name(port, Family::V4, 2s));
    return seen;
}

bool contains(const std::set<std::string>& names, const std::string& name) { return names.count(name) != 0; }

GlobalSpec dns_global(const LocalDns& dns, std::uint16_t admin_port) {
    GlobalSpec global;
    global.extra_lines = {"resolvers = [\"" + loopback_endpoint(dns.port()) + "\"]"};
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    return global;
}

RuleSpec dns_rule(std::uint16_t listen_port, const std::string& name, std::uint16_t server_port) {
    RuleSpec rule;
    rule.id = "svc";
    rule.listen = {loopback_endpoint(listen_port)};
    rule.servers = {{"dns:" + name + ":" + std::to_string(server_port)}};
    return rule;
}

}  // namespace

TEST_CASE("dns backends: servers follow the name's records; one that leaves is drained, its live session goes on") {
    const auto dnsmasq = find_dnsmasq();
    if (!dnsmasq) {
        MESSAGE("SKIPPED: dnsmasq not found (apt-get install dnsmasq-base)");
        return;
    }
    const std::string name = "svc.ringlb.test";
    LocalDns dns(*dnsmasq, {{"127.0.0.2", name}});
    LoopbackPair backends;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RinglbProcess ringlb(render_config(dns_global(dns, admin_port), {dns_rule(port, name, backends.port)}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    INFO("dnsmasq log:\n", dns.log());
    REQUIRE_READY(ringlb);
    const std::string entry = name + ":" + std::to_string(backends.port);

    // Until the first answer the rule has no server (the other test covers that moment).
    REQUIRE(ringlb.wait_for_log("dns: " + entry + " resolves to 127.0.0.2"));
    REQUIRE(contains(fetch_until(port, {"two"}), "two"));
    UniqueFd live;
    REQUIRE(open_session(port, live) == "two");

    // The record moves to 127.0.0.3: new sessions go there, the live one stays on "two".
    dns.set_records({{"127.0.0.3", name}});
    CHECK(contains(fetch_until(port, {"three"}), "three"));
    CHECK(fetch_many(port, 6) == std::set<std::string>{"three"});
    CHECK(send_all(live.get(), "still talking to two"));
    CHECK_FALSE(wait_readable(live.get(), 300ms));  // not closed
    const AdminReply rules = admin_command(admin_port, "show rules");
    CHECK(rules.body.find("server 127.0.0.3:" + std::to_string(backends.port)) != std::string::npos);
    CHECK(rules.body.find("127.0.0.2") == std::string::npos);

    // Both records: both servers take sessions (round robin).
    dns.set_records({{"127.0.0.2", name}, {"127.0.0.3", name}});
    CHECK(fetch_until(port, {"two", "three"}) >= std::set<std::string>{"three", "two"});
    CHECK(fetch_many(port, 6) == std::set<std::string>{"two", "three"});

    // `show config` (what `write config` writes) gives the entry as written, not its addresses.
    const AdminReply shown = admin_command(admin_port, "show config");
    REQUIRE(shown.ok());
    const std::string& text = shown.body;
    CHECK(text.find("dns = \"" + entry + "\"") != std::string::npos);
    CHECK(text.find("127.0.0.2") == std::string::npos);
    CHECK(text.find("resolvers = [\"" + loopback_endpoint(dns.port()) + "\"]") != std::string::npos);

    // The name stops resolving: the last good set stays in use, one warning names the name.
    dns.set_records({});
    CHECK(ringlb.wait_for_log("dns: cannot resolve " + entry));
    CHECK(fetch_many(port, 6) == std::set<std::string>{"two", "three"});
    live.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("dns backends: a rule whose name has no records yet closes clients, then serves once it resolves") {
    const auto dnsmasq = find_dnsmasq();
    if (!dnsmasq) {
        MESSAGE("SKIPPED: dnsmasq not found (apt-get install dnsmasq-base)");
        return;
    }
    LocalDns dns(*dnsmasq, {});
    LoopbackPair backends;
    const std::string name = "late.ringlb.test";
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RinglbProcess ringlb(render_config(dns_global(dns, admin_port), {dns_rule(port, name, backends.port)}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    INFO("dnsmasq log:\n", dns.log());
    REQUIRE_READY(ringlb);

    CHECK(fetch_name(port, Family::V4, 2s).empty());  // zero servers: accepted, then closed
    CHECK(ringlb.wait_for_log("no server left"));
    CHECK(ringlb.running());

    dns.set_records({{"127.0.0.2", name}});
    CHECK(contains(fetch_until(port, {"two"}), "two"));
    CHECK(ringlb.wait_for_log("dns: " + name + ":" + std::to_string(backends.port) + " resolves to 127.0.0.2"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("dns backends: a named entry's servers keep their names while their addresses stay, whatever comes and goes") {
    const auto dnsmasq = find_dnsmasq();
    if (!dnsmasq) {
        MESSAGE("SKIPPED: dnsmasq not found (apt-get install dnsmasq-base)");
        return;
    }
    const std::string name = "named.ringlb.test";
    LocalDns dns(*dnsmasq, {{"127.0.0.3", name}});
    LoopbackPair backends;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    std::string config = render_config(dns_global(dns, admin_port), {dns_rule(port, name, backends.port)});
    const std::string entry = "\"dns:" + name + ":" + std::to_string(backends.port) + "\"";
    REQUIRE(config.find(entry) != std::string::npos);
    config.replace(config.find(entry), entry.size(),
                   "{ name = \"web\", dns = \"" + name + ":" + std::to_string(backends.port) + "\" }");
    RinglbProcess ringlb(config);
    RINGLB_LOG_ON_FAILURE(ringlb);
    INFO("dnsmasq log:\n", dns.log());
    REQUIRE_READY(ringlb);
    const std::string port_text = std::to_string(backends.port);
    const auto shows = [&](const std::string& address, const std::string& server_name) {
        const AdminReply rules = admin_command(admin_port, "show rules");
        return rules.body.find("server " + address + ":" + port_text + " name=" + server_name + " ") != std::string::npos;
    };

    REQUIRE(contains(fetch_until(port, {"three"}), "three"));
    CHECK(shows("127.0.0.3", "web1"));
    // 127.0.0.2 sorts first but arrives second: 127.0.0.3 keeps web1.
    dns.set_records({{"127.0.0.2", name}, {"127.0.0.3", name}});
    CHECK(fetch_until(port, {"two", "three"}) >= std::set<std::string>{"three", "two"});
    CHECK(shows("127.0.0.3", "web1"));
    CHECK(shows("127.0.0.2", "web2"));
    // Admin commands take the name.
    REQUIRE(admin_command(admin_port, "disable server svc web2").ok());
    CHECK(fetch_many(port, 6) == std::set<std::string>{"three"});
    REQUIRE(admin_command(admin_port, "enable server svc web2").ok());
    // 127.0.0.3 leaves: 127.0.0.2 stays web2, and web1 is free for the next newcomer.
    dns.set_records({{"127.0.0.2", name}});
    CHECK(contains(fetch_until(port, {"two"}), "two"));
    for (int i = 0; i < 100 && shows("127.0.0.3", "web1"); ++i) std::this_thread::sleep_for(20ms);
    CHECK(shows("127.0.0.2", "web2"));
    CHECK_FALSE(shows("127.0.0.3", "web1"));
    dns.set_records({{"127.0.0.2", name}, {"127.0.0.4", name}});
    for (int i = 0; i < 100 && !shows("127.0.0.4", "web1"); ++i) std::this_thread::sleep_for(20ms);
    CHECK(shows("127.0.0.4", "web1"));
    CHECK(shows("127.0.0.2", "web2"));
    CHECK_CLEAN_EXIT(ringlb);
}
