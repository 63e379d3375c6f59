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
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

std::optional<std::string> find_dnsmasq() {
    for (const char* path : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"})
        if (::access(path, X_OK) == 0) return std::string(path);
    return std::nullopt;
}

using Records = std::vector<std::pair<std::string, std::string>>;  // "IP", "name"

size_t occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

// dnsmasq on 127.0.0.1:port answering only from `records` (then from set_records()).
class LocalDns {
public:
    LocalDns(const std::string& binary, const Records& records) {
        // dnsmasq started as root reads the hosts file again (SIGHUP) as an unprivileged user.
        ::chmod(hosts_.path().c_str(), 0644);
        write_records(records);
        // The port was free for TCP a moment ago; it may be taken for UDP, or taken since: another.
        for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) start(binary);
        REQUIRE_MESSAGE(pid_ > 0, "dnsmasq did not start:\n", log());
    }
    ~LocalDns() { stop(); }
    LocalDns(const LocalDns&) = delete;
    LocalDns& operator=(const LocalDns&) = delete;

    std::string endpoint() const { return loopback_endpoint(port_); }
    std::string log() const { return log_.read(); }

    // Replaces every record and waits until dnsmasq has read them again (SIGHUP).
    void set_records(const Records& records) {
        const size_t reads = occurrences(log(), "read " + hosts_.path());
        write_records(records);
        ::kill(pid_, SIGHUP);
        const auto deadline = Clock::now() + 5s;
        while (occurrences(log(), "read " + hosts_.path()) == reads && Clock::now() < deadline)
            std::this_thread::sleep_for(10ms);
    }

private:
    void write_records(const Records& records) const {
        std::ofstream out(hosts_.path(), std::ios::trunc);
        for (const auto& [ip, name] : records) out << ip << " " << name << "\n";
    }

    void start(const std::string& binary) {
        port_ = find_free_port();
        const std::vector<std::string> args = {binary, "--no-daemon", "--conf-file=/dev/null",
                                               "--port=" + std::to_string(port_), "--listen-address=127.0.0.1",
                                               "--bind-interfaces", "--no-resolv", "--no-hosts",
                                               "--addn-hosts=" + hosts_.path(), "--local-ttl=1",
                                               "--local=/ringlb.test/", "--pid-file="};
        std::vector<char*> argv;
        for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
        argv.push_back(nullptr);
        const std::string log_path = log_.path();
        pid_ = ::fork();
        if (pid_ == 0) {
            const int out = ::open(log_path.c_str(), O_WRONLY | O_TRUNC);
            ::dup2(out, STDOUT_FILENO);
            ::dup2(out, STDERR_FILENO);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        REQUIRE(pid_ > 0);
        // Before dnsmasq has its signal handlers a SIGHUP would kill it: wait until it serves (TCP too).
        const auto deadline = Clock::now() + 5s;
        while (Clock::now() < deadline) {
            if (connect_to(port_, Family::V4, 200ms).valid()) return;
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) break;  // it exited: e.g. its port is taken
            std::this_thread::sleep_for(20ms);
        }
        stop();
    }

    void stop() {
        if (pid_ < 0) return;
        ::kill(pid_, SIGTERM);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    TempFile hosts_{"", ".hosts"};
    TempFile log_{"", ".log"};
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

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
    global.extra_lines = {"resolvers = [\"" + dns.endpoint() + "\"]"};
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

    // `dump rules` writes the entry as written, not its addresses.
    REQUIRE(admin_command(admin_port, "dump rules").ok());
    std::ifstream dumped(ringlb.config_path());
    const std::string text{std::istreambuf_iterator<char>(dumped), {}};
    CHECK(text.find("dns = \"" + entry + "\"") != std::string::npos);
    CHECK(text.find("127.0.0.2") == std::string::npos);
    CHECK(text.find("resolvers = [\"" + dns.endpoint() + "\"]") != std::string::npos);

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
