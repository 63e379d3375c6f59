// dns::Resolver against a real DNS server: a dnsmasq started by the test on a free loopback port,
// answering from a hosts file the test rewrites (SIGHUP makes dnsmasq read it again) with a TTL
// of 1 s. Without dnsmasq (Debian package dnsmasq-base) those tests skip, saying so.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "local_dns.hpp"
#include "ringlb/dns/resolver.hpp"

using namespace std::chrono_literals;
using namespace ringlb;
using Clock = std::chrono::steady_clock;

namespace {

using test::local_dns::find_dnsmasq;
using test::local_dns::free_udp_port;
using test::local_dns::LocalDns;
using test::local_dns::occurrences;
using test::local_dns::TempDir;

net::SocketAddress address_of(const LocalDns& dns) {
    return *net::SocketAddress::parse("127.0.0.1:" + std::to_string(dns.port()));
}

// A Logger writing to a file the test reads back.
class CapturedLog {
public:
    CapturedLog() : file_(std::fopen(dir_.file("log").c_str(), "w+")), log_(LogLevel::Debug, file_) {}
    ~CapturedLog() { std::fclose(file_); }
    Logger& logger() { return log_; }
    std::string text() const {
        std::ifstream in(dir_.file("log"));
        return {std::istreambuf_iterator<char>(in), {}};
    }
    size_t count(const std::string& needle) const { return occurrences(text(), needle); }

private:
    TempDir dir_;
    std::FILE* file_;
    Logger log_;
};

// The next reported set for one name, or nullopt when none came within `timeout`.
std::optional<std::vector<std::string>> next_update(dns::Resolver& resolver, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        std::vector<dns::Update> updates = resolver.take_updates();
        if (!updates.empty()) {
            std::vector<std::string> texts;
            for (const net::SocketAddress& address : updates.back().addresses) texts.push_back(address.to_string());
            return texts;
        }
        std::this_thread::sleep_for(20ms);
    }
    return std::nullopt;
}

using Strings = std::vector<std::string>;
const dns::Endpoint kService{"svc.ringlb.test", 9000};

}  // namespace

TEST_CASE("resolver: reports a name's set, follows its changes and keeps the last good set while it fails") {
    const auto dnsmasq = find_dnsmasq();
    if (!dnsmasq) {
        MESSAGE("SKIPPED: dnsmasq not found (apt-get install dnsmasq-base)");
        return;
    }
    LocalDns server(*dnsmasq, {{"127.0.0.3", "svc.ringlb.test"}, {"127.0.0.2", "svc.ringlb.test"}});
    CapturedLog log;
    std::atomic<int> wakes{0};
    dns::Resolver::Options options;
    options.servers = {address_of(server)};
    options.wake = [&] { ++wakes; };
    dns::Resolver resolver(log.logger(), options);
    resolver.set_targets({{kService, 1s}});
    INFO("resolver log:\n", log.text(), "dnsmasq log:\n", server.log());

    CHECK(next_update(resolver, 10s) == Strings{"127.0.0.2:9000", "127.0.0.3:9000"});
    CHECK(wakes.load() >= 1);
    // Re-resolved every second (TTL 1 s), but the same set is not reported again.
    CHECK_FALSE(next_update(resolver, 2500ms));

    server.set_records({{"127.0.0.3", "svc.ringlb.test"}});
    CHECK(next_update(resolver, 5s) == Strings{"127.0.0.3:9000"});

    // The name disappears: nothing is reported (the last set stays in use), one warning names it.
    server.set_records({});
    CHECK_FALSE(next_update(resolver, 3500ms));
    CHECK(log.count("dns: cannot resolve svc.ringlb.test:9000") == 1);
    CHECK(log.text().find("keeping the last 1 address(es): 127.0.0.3:9000") != std::string::npos);

    server.set_records({{"127.0.0.4", "svc.ringlb.test"}});
    CHECK(next_update(resolver, 5s) == Strings{"127.0.0.4:9000"});
    CHECK(log.count("svc.ringlb.test:9000 resolves again") == 1);
}

TEST_CASE("resolver: new targets are resolved at once, dropped ones no longer reported") {
    const auto dnsmasq = find_dnsmasq();
    if (!dnsmasq) {
        MESSAGE("SKIPPED: dnsmasq not found (apt-get install dnsmasq-base)");
        return;
    }
    LocalDns server(*dnsmasq, {{"127.0.0.5", "a.ringlb.test"}, {"127.0.0.6", "b.ringlb.test"}});
    CapturedLog log;
    dns::Resolver::Options options;
    options.servers = {address_of(server)};
    dns::Resolver resolver(log.logger(), options);
    INFO("resolver log:\n", log.text(), "dnsmasq log:\n", server.log());

    resolver.set_targets({{{"a.ringlb.test", 80}, 60s}});
    CHECK(next_update(resolver, 10s) == Strings{"127.0.0.5:80"});
    resolver.set_targets({{{"b.ringlb.test", 81}, 60s}});
    CHECK(next_update(resolver, 5s) == Strings{"127.0.0.6:81"});
    server.set_records({{"127.0.0.7", "a.ringlb.test"}, {"127.0.0.6", "b.ringlb.test"}});
    CHECK_FALSE(next_update(resolver, 1500ms));  // a.ringlb.test is no longer a target
}

TEST_CASE("resolver: an unreachable DNS server is logged once and the destructor does not wait for it") {
    CapturedLog log;
    dns::Resolver::Options options;
    options.servers = {*net::SocketAddress::parse("127.0.0.1:" + std::to_string(free_udp_port()))};
    auto resolver = std::make_unique<dns::Resolver>(log.logger(), options);
    resolver->set_targets({{kService, 1s}});
    const auto deadline = Clock::now() + 15s;
    while (log.count("dns: cannot resolve") == 0 && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    INFO(log.text());
    CHECK(log.count("dns: cannot resolve svc.ringlb.test:9000") == 1);
    CHECK(resolver->take_updates().empty());
    const auto before = Clock::now();
    resolver.reset();
    CHECK(Clock::now() - before < 1s);
}
