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

#include "ringlb/dns/resolver.hpp"

using namespace std::chrono_literals;
using namespace ringlb;
using Clock = std::chrono::steady_clock;

namespace {

std::optional<std::string> find_dnsmasq() {
    for (const char* path : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"})
        if (::access(path, X_OK) == 0) return std::string(path);
    return std::nullopt;
}

// A loopback port nothing listens on right now (UDP, which DNS uses first).
uint16_t free_udp_port() {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof sa;
    ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &length);
    ::close(fd);
    return ntohs(sa.sin_port);
}

// A private temporary directory, removed with everything in it. World-readable: dnsmasq started
// as root reads its hosts file again (on SIGHUP) as the unprivileged user it switched to.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "ringlb-dns-XXXXXX").string();
        path_ = ::mkdtemp(pattern.data()) ? pattern : "";
        REQUIRE_MESSAGE(!path_.empty(), "mkdtemp failed");
        ::chmod(path_.c_str(), 0755);
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    std::string file(const char* name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

using Records = std::vector<std::pair<std::string, std::string>>;  // "IP", "name"

size_t occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

// dnsmasq on 127.0.0.1:port() answering only from `records` (then from set_records()).
class LocalDns {
public:
    LocalDns(const std::string& binary, const Records& records) {
        write_records(records);
        // The port was free for UDP a moment ago; it may be taken for TCP, or taken since: another.
        for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) start(binary);
        REQUIRE_MESSAGE(pid_ > 0, "dnsmasq did not start:\n", log());
    }
    ~LocalDns() { stop(); }
    LocalDns(const LocalDns&) = delete;
    LocalDns& operator=(const LocalDns&) = delete;

    net::SocketAddress address() const { return *net::SocketAddress::parse("127.0.0.1:" + std::to_string(port_)); }
    std::string log() const {
        std::ifstream in(dir_.file("dnsmasq.log"));
        return {std::istreambuf_iterator<char>(in), {}};
    }

    // Replaces every record and waits until dnsmasq has read them again (SIGHUP).
    void set_records(const Records& records) {
        const size_t reads = occurrences(log(), "read " + hosts_path());
        write_records(records);
        ::kill(pid_, SIGHUP);
        const auto deadline = Clock::now() + 5s;
        while (occurrences(log(), "read " + hosts_path()) == reads && Clock::now() < deadline)
            std::this_thread::sleep_for(10ms);
    }

private:
    std::string hosts_path() const { return dir_.file("hosts"); }

    void write_records(const Records& records) const {
        std::ofstream out(hosts_path(), std::ios::trunc);
        for (const auto& [ip, name] : records) out << ip << " " << name << "\n";
    }

    void start(const std::string& binary) {
        port_ = free_udp_port();
        const std::vector<std::string> args = {binary, "--no-daemon", "--conf-file=/dev/null",
                                               "--port=" + std::to_string(port_), "--listen-address=127.0.0.1",
                                               "--bind-interfaces", "--no-resolv", "--no-hosts",
                                               "--addn-hosts=" + hosts_path(), "--local-ttl=1",
                                               "--local=/ringlb.test/", "--pid-file="};
        std::vector<char*> argv;
        for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
        argv.push_back(nullptr);
        const std::string log_path = dir_.file("dnsmasq.log");
        pid_ = ::fork();
        if (pid_ == 0) {
            const int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(out, STDOUT_FILENO);
            ::dup2(out, STDERR_FILENO);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        REQUIRE(pid_ > 0);
        // Until dnsmasq has set up its signal handlers a SIGHUP would kill it, and queries would be refused.
        if (!wait_listening(5s)) stop();
    }

    void stop() {
        if (pid_ < 0) return;
        ::kill(pid_, SIGTERM);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    // dnsmasq also serves DNS over TCP on its port: a connect that succeeds means it is up.
    bool wait_listening(std::chrono::milliseconds timeout) {
        const auto deadline = Clock::now() + timeout;
        const net::SocketAddress target = address();
        while (Clock::now() < deadline) {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            const bool connected = ::connect(fd, target.sockaddr_ptr(), target.length()) == 0;
            ::close(fd);
            if (connected) return true;
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {  // it exited: e.g. its port is taken
                pid_ = -1;
                return false;
            }
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }

    TempDir dir_;
    uint16_t port_ = 0;
    pid_t pid_ = -1;
};

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
    options.servers = {server.address()};
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
    options.servers = {server.address()};
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
