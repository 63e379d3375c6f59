#include <doctest/doctest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "ringlb/app/upgrade.hpp"
#include "ringlb/net/handover.hpp"
#include "ringlb/net/inherited_sockets.hpp"
#include "ringlb/net/listen_lock.hpp"

using namespace ringlb;

TEST_CASE("handover: the descriptor list round-trips and malformed ones are refused") {
    const std::vector<net::HandoverEntry> entries{{net::HandoverKind::Report, 3},
                                                  {net::HandoverKind::Listen, 4},
                                                  {net::HandoverKind::ListenHeld, 5},
                                                  {net::HandoverKind::Claim, 6}};
    const std::string text = net::encode_handover(entries);
    CHECK(text == "report:3 listen:4 listen-held:5 claim:6");
    const auto decoded = net::decode_handover(text);
    REQUIRE(decoded);
    REQUIRE(decoded->size() == 4);
    for (size_t i = 0; i < entries.size(); ++i) {
        CHECK((*decoded)[i].kind == entries[i].kind);
        CHECK((*decoded)[i].fd == entries[i].fd);
    }
    CHECK(net::decode_handover("")->empty());
    for (const char* bad : {"listen", "listen:", "listen:x", "listen:2", "socket:4", "listen:4 ", "listen:4x", "listen:-4"})
        CHECK_MESSAGE(!net::decode_handover(bad), std::string(bad));
}

TEST_CASE("handover: a claim passed on names its listen address; anything else is no claim") {
    const auto address = *net::SocketAddress::parse("127.0.0.1:1");
    // The claim of a port nobody serves in this test (port 1 is never listened on here).
    net::ListenLock claim = net::ListenLock::claim(address);
    net::UniqueFd copy(::fcntl(claim.fd(), F_DUPFD_CLOEXEC, 0));
    REQUIRE(copy);
    auto adopted = net::ListenLock::adopt(std::move(copy));
    REQUIRE(adopted);
    CHECK(adopted->first == address);

    net::UniqueFd tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    CHECK_FALSE(net::ListenLock::adopt(std::move(tcp)));
    net::UniqueFd unnamed(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    CHECK_FALSE(net::ListenLock::adopt(std::move(unnamed)));
}

TEST_CASE("handover: the new process's environment leaves out what was this process's alone") {
    ::setenv("WATCHDOG_PID", "12345", 1);
    ::setenv("RINGLB_TEST_KEPT", "yes", 1);
    const std::vector<std::string> environment = app::environment_for_upgrade("report:3 listen:4");
    ::unsetenv("WATCHDOG_PID");
    ::unsetenv("RINGLB_TEST_KEPT");
    const auto has = [&](const std::string& entry) {
        return std::find(environment.begin(), environment.end(), entry) != environment.end();
    };
    CHECK(has("RINGLB_TEST_KEPT=yes"));
    CHECK(has("RINGLB_HANDOVER=report:3 listen:4"));
    CHECK(std::none_of(environment.begin(), environment.end(),
                       [](const std::string& entry) { return entry.starts_with("WATCHDOG_PID="); }));
}

TEST_CASE("inherited listeners: copies of one socket from several workers count once") {
    net::InheritedListeners inherited;
    net::UniqueFd listener = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"), 16);
    const net::SocketAddress address = net::local_address(listener.get());
    net::UniqueFd copy(::fcntl(listener.get(), F_DUPFD_CLOEXEC, 0));
    REQUIRE(inherited.add(std::move(listener), false, nullptr));
    REQUIRE(inherited.add(std::move(copy), false, nullptr));
    const auto taken = inherited.take(address, 0, 1);
    CHECK(taken.size() == 1);
}
