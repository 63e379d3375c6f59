// freebind = true: a rule listens on an address the host does not have yet (a virtual IP that
// keepalived moves in later) and serves it once it arrives. ringlb runs in a network namespace of
// its own (unshare -n), where the test adds the address itself: nothing outside changes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "config_text.hpp"
#include "net_util.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr const char* kVirtualIp = "2001:db8::1";  // documentation prefix: routed nowhere

// A script that starts ringlb in a fresh network namespace (only its loopback, brought up).
TempFile netns_wrapper() {
    TempFile script("#!/bin/sh\nexec unshare -n sh -c 'ip link set lo up && exec \"$0\" \"$@\"' \"" + ringlb_binary() +
                        "\" \"$@\"\n",
                    ".sh");
    ::chmod(script.path().c_str(), 0700);
    return script;
}

std::string rule_config(std::uint16_t port, bool freebind) {
    RuleSpec rule;
    rule.id = "vip";
    rule.listen = {"[" + std::string(kVirtualIp) + "]:" + std::to_string(port)};
    rule.servers = {{"[::1]:" + std::to_string(port)}};
    if (freebind) rule.extra_lines = {"freebind = true"};
    return render_config(GlobalSpec{}, {rule});
}

sockaddr_in6 ipv6(const char* ip, std::uint16_t port) {
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_port = htons(port);
    ::inet_pton(AF_INET6, ip, &address.sin6_addr);
    return address;
}

// errno of a plain bind() to ip:0 (0 = it worked).
int bind_error(const char* ip) {
    UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_in6 address = ipv6(ip, 0);
    return ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 ? 0 : errno;
}

// Runs `work` on a thread that has joined the network namespace of process `pid` (setns acts on
// the calling thread only; sockets it creates belong to that namespace, and so do the children
// system() forks).
template <typename Work>
void in_netns_of(pid_t pid, Work work) {
    std::thread thread([&] {
        // No REQUIRE on this thread: an exception here would end the whole test program.
        UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
        const bool joined = ns.valid() && ::setns(ns.get(), CLONE_NEWNET) == 0;
        CHECK(joined);
        if (joined) work();
    });
    thread.join();
}

}  // namespace

TEST_CASE("freebind = true: a rule binds an address the host does not have, and serves it once it is added") {
    TempFile wrapper = netns_wrapper();
    RinglbOptions options;
    options.binary = wrapper.path();
    const std::uint16_t port = find_free_port(Family::V6);

    SUBCASE("without freebind the bind fails at start, naming the address") {
        RinglbProcess ringlb(options, rule_config(port, false));
        RINGLB_LOG_ON_FAILURE(ringlb);
        const ExitStatus status = ringlb.wait_exit(10s);
        CHECK(status.exited);
        CHECK(status.code != 0);
        CHECK(ringlb.log_text().find("[2001:db8::1]:" + std::to_string(port) + ": Cannot assign requested address") !=
              std::string::npos);
    }
    SUBCASE("with freebind it starts, and serves the address once it is there") {
        RinglbProcess ringlb(options, rule_config(port, true));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        in_netns_of(ringlb.pid(), [&] {
            // The namespace really lacks the address: a plain bind is refused.
            CHECK(bind_error(kVirtualIp) == EADDRNOTAVAIL);
            // The server, on ::1 in the same namespace, says who it is.
            UniqueFd backend = listen_on_loopback(port, Family::V6);
            CHECK(backend.valid());
            CHECK(std::system("ip -6 addr add 2001:db8::1/128 dev lo nodad") == 0);
            CHECK(bind_error(kVirtualIp) == 0);
            UniqueFd client(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
            const sockaddr_in6 vip = ipv6(kVirtualIp, port);
            const bool connected = ::connect(client.get(), reinterpret_cast<const sockaddr*>(&vip), sizeof vip) == 0;
            CHECK(connected);
            if (!backend.valid() || !connected) return;
            CHECK(wait_readable(backend.get(), 5s));
            UniqueFd served(::accept4(backend.get(), nullptr, nullptr, SOCK_CLOEXEC));
            CHECK(served.valid());
            CHECK(send_all(served.get(), "vip\n"));
            CHECK(read_line(client.get()).data == "vip");
        });
        CHECK_CLEAN_EXIT(ringlb);
    }
}
