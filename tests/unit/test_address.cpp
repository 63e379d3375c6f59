#include <doctest/doctest.h>

#include <fcntl.h>

#include <cerrno>
#include <string>

#include "ringlb/net/address.hpp"
#include "ringlb/net/socket.hpp"

using ringlb::net::IpKey;
using ringlb::net::SocketAddress;

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("SocketAddress parses IPv4 with a port") {
    const auto address = SocketAddress::parse("1.2.3.4:80");
    REQUIRE(address.has_value());
    CHECK(address->is_v4());
    CHECK(address->family() == AF_INET);
    CHECK(address->port() == 80);
    CHECK(address->length() == sizeof(sockaddr_in));
    CHECK(address->ip_string() == "1.2.3.4");
    CHECK(address->to_string() == "1.2.3.4:80");
    CHECK(SocketAddress::parse_error("1.2.3.4:80") == "");
}

TEST_CASE("SocketAddress parses bracketed IPv6 and port bounds") {
    const auto address = SocketAddress::parse("[::1]:8080");
    REQUIRE(address.has_value());
    CHECK(address->is_v6());
    CHECK(address->port() == 8080);
    CHECK(address->length() == sizeof(sockaddr_in6));
    CHECK(address->ip_string() == "::1");
    CHECK(address->to_string() == "[::1]:8080");
    CHECK(SocketAddress::parse("0.0.0.0:0")->port() == 0);
    CHECK(SocketAddress::parse("[::]:65535")->port() == 65535);
}

TEST_CASE("SocketAddress to_string round-trips through parse") {
    for (const char* text : {"10.0.0.1:1", "255.255.255.255:65535", "[::1]:80", "[2001:db8::42]:443", "[::ffff:1.2.3.4]:9"}) {
        CAPTURE(text);
        const auto address = SocketAddress::parse(text);
        REQUIRE(address.has_value());
        CHECK(address->to_string() == text);
        CHECK(SocketAddress::parse(address->to_string()) == address);
    }
    // Canonical form: the text is normalised by inet_ntop.
    CHECK(SocketAddress::parse("[2001:0db8:0:0:0:0:0:1]:80")->to_string() == "[2001:db8::1]:80");
}

TEST_CASE("SocketAddress rejects bad input with a reason") {
    CHECK_FALSE(SocketAddress::parse("1.2.3.4").has_value());
    CHECK(contains(SocketAddress::parse_error("1.2.3.4"), "missing port"));

    CHECK_FALSE(SocketAddress::parse("::1:80").has_value());
    CHECK(contains(SocketAddress::parse_error("::1:80"), "brackets"));

    CHECK_FALSE(SocketAddress::parse("host.example:80").has_value());
    CHECK(contains(SocketAddress::parse_error("host.example:80"), "hostnames are not supported"));

    CHECK_FALSE(SocketAddress::parse("1.2.3.4:99999").has_value());
    CHECK(contains(SocketAddress::parse_error("1.2.3.4:99999"), "port"));

    for (const char* bad : {"", "1.2.3.4:", "1.2.3.4:-1", "1.2.3.4:0x50", "1.2.3.4:80a", "1.2.3:80", "256.1.1.1:80",
                            "[::1]", "[::1]80", "[::1:80", "[1.2.3.4]:80", "[fe80::1%lo]:80", ":80", "1.2.3.4:+80"}) {
        CAPTURE(bad);
        CHECK_FALSE(SocketAddress::parse(bad).has_value());
        CHECK_FALSE(SocketAddress::parse_error(bad).empty());
    }
}

TEST_CASE("SocketAddress equality compares family, ip and port") {
    CHECK(SocketAddress::parse("1.2.3.4:80") == SocketAddress::parse("1.2.3.4:80"));
    CHECK_FALSE(*SocketAddress::parse("1.2.3.4:80") == *SocketAddress::parse("1.2.3.4:81"));
    CHECK_FALSE(*SocketAddress::parse("1.2.3.4:80") == *SocketAddress::parse("1.2.3.5:80"));
    CHECK_FALSE(*SocketAddress::parse("1.2.3.4:80") == *SocketAddress::parse("[::ffff:1.2.3.4]:80"));
}

TEST_CASE("IpKey maps IPv4 into IPv4-mapped IPv6 and ignores the port") {
    const auto v4 = IpKey::of(*SocketAddress::parse("1.2.3.4:80"));
    const auto mapped = IpKey::of(*SocketAddress::parse("[::ffff:1.2.3.4]:5555"));
    CHECK(v4 == mapped);
    CHECK(v4.hi == 0);
    CHECK(v4.lo == 0x0000FFFF01020304ULL);
    CHECK(ringlb::net::IpKeyHash{}(v4) == ringlb::net::IpKeyHash{}(mapped));
    CHECK_FALSE(v4 == IpKey::of(*SocketAddress::parse("1.2.3.5:80")));
    CHECK_FALSE(IpKey::of(*SocketAddress::parse("[::1]:80")) == IpKey::of(*SocketAddress::parse("[::2]:80")));
    CHECK(IpKey::of(*SocketAddress::parse("[2001:db8::1]:1")).hi == 0x20010DB800000000ULL);
}

TEST_CASE("listen_tcp reports an address in use as SystemError naming bind and the address") {
    using namespace ringlb::net;
    const auto first = listen_tcp(*SocketAddress::parse("127.0.0.1:0"));
    REQUIRE(first);
    const SocketAddress bound = local_address(first.get());
    REQUIRE(bound.is_v4());
    REQUIRE(bound.port() != 0);
    try {
        listen_tcp(bound);
        FAIL("second listen_tcp on the same port succeeded");
    } catch (const SystemError& error) {
        CHECK(error.error_number() == EADDRINUSE);
        CHECK(std::string(error.what()) == "bind " + bound.to_string() + ": Address already in use");
    }
}

TEST_CASE("new_stream_socket returns a descriptor or -errno; set_nonblocking toggles O_NONBLOCK") {
    using namespace ringlb::net;
    UniqueFd fd(new_stream_socket(AF_INET));
    REQUIRE(fd.get() >= 0);
    CHECK((fcntl(fd.get(), F_GETFL) & O_NONBLOCK) != 0);
    CHECK((fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
    set_nonblocking(fd.get(), false);
    CHECK((fcntl(fd.get(), F_GETFL) & O_NONBLOCK) == 0);
    UniqueFd blocking(new_stream_socket(AF_INET6, false));
    REQUIRE(blocking.get() >= 0);
    CHECK((fcntl(blocking.get(), F_GETFL) & O_NONBLOCK) == 0);
    CHECK(new_stream_socket(-1) == -EAFNOSUPPORT);
    CHECK(std::string(SystemError("connect 1.2.3.4:80", ECONNREFUSED).what()) == "connect 1.2.3.4:80: Connection refused");
}
