#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "ringlb/net/inherited_sockets.hpp"

using ringlb::net::InheritedListeners;
using ringlb::net::SocketAddress;
using ringlb::net::UniqueFd;

namespace {

// A listener on a free loopback port; returns it and its address.
std::pair<UniqueFd, SocketAddress> loopback_listener(bool reuse_port = false, std::optional<SocketAddress> at = {}) {
    UniqueFd fd = ringlb::net::listen_tcp(at ? *at : *SocketAddress::parse("127.0.0.1:0"), 16, reuse_port);
    const SocketAddress address = ringlb::net::local_address(fd.get());
    return {std::move(fd), address};
}

// The port of the socket a descriptor refers to, whichever copy it is.
uint16_t port_of(const UniqueFd& fd) { return ringlb::net::local_address(fd.get()).port(); }

}  // namespace

TEST_CASE("inherited listeners: fewer sockets than workers, each worker gets a copy of one and shares it") {
    InheritedListeners inherited;
    auto [fd, address] = loopback_listener();
    REQUIRE(inherited.add(std::move(fd), true, nullptr));
    for (unsigned worker = 0; worker < 3; ++worker) {
        auto taken = inherited.take(address, worker, 3);
        REQUIRE(taken.size() == 1);
        CHECK(taken[0].held_elsewhere);
        CHECK(taken[0].shared_by_workers);
        CHECK(port_of(taken[0].fd) == address.port());
    }
    CHECK(inherited.untaken().empty());
    inherited.release();
    CHECK(inherited.take(address, 0, 3).empty());  // after release an address is bound anew
}

TEST_CASE("inherited listeners: more sockets than workers, every socket goes to exactly one worker") {
    InheritedListeners inherited;
    auto [first, address] = loopback_listener(true);
    REQUIRE(inherited.add(std::move(first), false, nullptr));
    for (int i = 0; i < 4; ++i) {
        auto [more, same] = loopback_listener(true, address);
        REQUIRE(same == address);
        REQUIRE(inherited.add(std::move(more), false, nullptr));
    }
    const auto worker0 = inherited.take(address, 0, 2);
    const auto worker1 = inherited.take(address, 1, 2);
    CHECK(worker0.size() == 3);  // sockets 0, 2, 4
    CHECK(worker1.size() == 2);  // sockets 1, 3
    for (const auto& listener : worker0) CHECK_FALSE(listener.shared_by_workers);
    for (const auto& listener : worker1) CHECK_FALSE(listener.held_elsewhere);
}

TEST_CASE("inherited listeners: what is not a listening TCP socket is refused, an untaken one is reported") {
    InheritedListeners inherited;
    std::string why;
    CHECK_FALSE(inherited.add(UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)), true, &why));
    CHECK(why.find("not a listening stream socket") != std::string::npos);
    CHECK_FALSE(inherited.add(UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)), true, &why));
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    ::close(pair[1]);
    CHECK_FALSE(inherited.add(UniqueFd(pair[0]), true, &why));
    CHECK(inherited.empty());

    auto [fd, address] = loopback_listener();
    REQUIRE(inherited.add(std::move(fd), true, &why));
    const auto other = *SocketAddress::parse("127.0.0.1:1");
    CHECK(inherited.take(other, 0, 1).empty());
    REQUIRE(inherited.untaken().size() == 1);
    CHECK(inherited.untaken()[0] == address);
}
