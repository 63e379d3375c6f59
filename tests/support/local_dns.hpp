#pragma once
// A dnsmasq for the DNS tests (unit and integration): started on a free loopback port, answering
// only from a hosts file the test rewrites (SIGHUP makes dnsmasq read it again) with a TTL of
// 1 s. find_dnsmasq() is nullopt when Debian's dnsmasq-base is not installed: tests then skip.
// Depends on POSIX and doctest only, so both test programs can use it.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace ringlb::test::local_dns {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

inline std::optional<std::string> find_dnsmasq() {
    for (const char* path : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"})
        if (::access(path, X_OK) == 0) return std::string(path);
    return std::nullopt;
}

// A loopback port nothing listens on right now (UDP, which DNS uses first).
inline uint16_t free_udp_port() {
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

inline size_t occurrences(const std::string& text, const std::string& needle) {
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

    uint16_t port() const { return port_; }
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
        sockaddr_in target{};
        target.sin_family = AF_INET;
        target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        target.sin_port = htons(port_);
        while (Clock::now() < deadline) {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) == 0;
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

}  // namespace ringlb::test::local_dns
