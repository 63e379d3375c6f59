#include <doctest/doctest.h>

#include <string>

#include "ringlb/net/client_pattern.hpp"

using ringlb::net::ClientPattern;
using ringlb::net::glob_match;
using ringlb::net::SocketAddress;

namespace {

// Whether `pattern` (which must parse) accepts the client at `address` ("ip:port" form).
bool accepts(const char* pattern, const char* address) {
    std::string error;
    const auto parsed = ClientPattern::parse(pattern, &error);
    REQUIRE_MESSAGE(parsed.has_value(), error);
    const auto client = SocketAddress::parse(address);
    REQUIRE_MESSAGE(client.has_value(), address);
    return parsed->matches(*client);
}

}  // namespace

TEST_CASE("glob_match handles '*' runs and '?' single characters") {
    CHECK(glob_match("*", ""));
    CHECK(glob_match("*", "anything"));
    CHECK(glob_match("a*c", "abbbc"));
    CHECK(glob_match("a*c", "ac"));
    CHECK_FALSE(glob_match("a*c", "abcd"));
    CHECK(glob_match("a?c", "abc"));
    CHECK_FALSE(glob_match("a?c", "ac"));
    CHECK(glob_match("*.1", "10.0.0.1"));
    CHECK_FALSE(glob_match("*.1", "10.0.0.11"));
    CHECK(glob_match("1*1*1", "1x1y1z1"));  // needs backtracking
    CHECK_FALSE(glob_match("", "x"));
}

TEST_CASE("'*' accepts any client of either family") {
    CHECK(accepts("*", "1.2.3.4:1000"));
    CHECK(accepts("*", "[2001:db8::1]:1000"));
    CHECK(ClientPattern::parse("*")->text() == "*");
}

TEST_CASE("exact IPv4 and IPv6 patterns") {
    CHECK(accepts("10.0.0.1", "10.0.0.1:5000"));
    CHECK_FALSE(accepts("10.0.0.1", "10.0.0.2:5000"));
    CHECK(accepts("::1", "[::1]:5000"));
    CHECK(accepts("[::1]", "[::1]:5000"));
    CHECK_FALSE(accepts("::1", "[::2]:5000"));
    CHECK_FALSE(accepts("::1", "127.0.0.1:5000"));
}

TEST_CASE("IPv4-mapped IPv6 clients match IPv4 patterns") {
    CHECK(accepts("1.2.3.4", "[::ffff:1.2.3.4]:80"));
    CHECK(accepts("10.0.0.0/8", "[::ffff:10.9.8.7]:80"));
    CHECK(accepts("192.168.1.*", "[::ffff:192.168.1.77]:80"));
    CHECK_FALSE(accepts("1.2.3.4", "[::ffff:1.2.3.5]:80"));
    CHECK_FALSE(accepts("192.168.1.*", "[2001:db8::1]:80"));  // plain IPv6 has no dotted text
}

TEST_CASE("IPv4 CIDR boundaries") {
    CHECK(accepts("10.0.0.0/8", "10.0.0.0:1"));
    CHECK(accepts("10.0.0.0/8", "10.255.255.255:1"));
    CHECK_FALSE(accepts("10.0.0.0/8", "11.0.0.0:1"));
    CHECK_FALSE(accepts("10.0.0.0/8", "9.255.255.255:1"));
    CHECK(accepts("192.168.1.128/25", "192.168.1.200:1"));
    CHECK_FALSE(accepts("192.168.1.128/25", "192.168.1.127:1"));
    CHECK(accepts("10.1.2.3/8", "10.200.0.1:1"));  // host bits set: allowed, ignored
    CHECK(accepts("0.0.0.0/0", "203.0.113.9:1"));
    CHECK_FALSE(accepts("0.0.0.0/0", "[2001:db8::1]:1"));  // /0 of IPv4 space only
    CHECK(accepts("1.2.3.4/32", "1.2.3.4:1"));
    CHECK_FALSE(accepts("1.2.3.4/32", "1.2.3.5:1"));
}

TEST_CASE("IPv6 CIDR boundaries") {
    CHECK(accepts("fe80::/10", "[fe80::1]:1"));
    CHECK(accepts("fe80::/10", "[febf:ffff::1]:1"));
    CHECK_FALSE(accepts("fe80::/10", "[fec0::1]:1"));
    CHECK_FALSE(accepts("fe80::/10", "[fe7f::1]:1"));
    CHECK(accepts("[2001:db8::/32]", "[2001:db8:ffff::1]:1"));
    CHECK_FALSE(accepts("2001:db8::/32", "[2001:db9::1]:1"));
    CHECK(accepts("::/0", "[::1]:1"));
    CHECK(accepts("::1/128", "[::1]:1"));
    CHECK_FALSE(accepts("::1/128", "[::2]:1"));
}

TEST_CASE("wildcards over dotted IPv4 text") {
    CHECK(accepts("192.168.1.*", "192.168.1.5:1"));
    CHECK(accepts("192.168.1.*", "192.168.1.255:1"));
    CHECK_FALSE(accepts("192.168.1.*", "192.168.2.5:1"));
    CHECK(accepts("192.168.*", "192.168.40.3:1"));
    CHECK_FALSE(accepts("192.168.*", "192.169.0.1:1"));
    CHECK(accepts("10.?.0.1", "10.7.0.1:1"));
    CHECK_FALSE(accepts("10.?.0.1", "10.17.0.1:1"));
    CHECK(accepts("*.*.*.1", "8.8.4.1:1"));
}

TEST_CASE("port parts restrict the client port") {
    CHECK(accepts("1.2.3.4:*", "1.2.3.4:1234"));
    CHECK_FALSE(accepts("1.2.3.4:*", "1.2.3.5:1234"));
    CHECK(accepts("192.168.1.*:80", "192.168.1.9:80"));
    CHECK_FALSE(accepts("192.168.1.*:80", "192.168.1.9:8080"));
    CHECK(accepts("192.168.1.*:80*", "192.168.1.9:8080"));
    CHECK(accepts("[::1]:*", "[::1]:1"));
    CHECK(accepts("[::1]:5?", "[::1]:55"));
    CHECK_FALSE(accepts("[::1]:5?", "[::1]:555"));
    CHECK(accepts("10.0.0.0/8:*", "10.1.1.1:9"));
    CHECK(accepts("10.0.0.0/8:9", "10.1.1.1:9"));
    CHECK_FALSE(accepts("10.0.0.0/8:9", "10.1.1.1:10"));
    CHECK(accepts("*:443", "[2001:db8::1]:443"));
    CHECK_FALSE(accepts("*:443", "1.1.1.1:80"));
}

TEST_CASE("invalid patterns are rejected with the text and a reason") {
    for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "[fe80::/129]", "host.example",
                            "192.168.1.*:abc", "1.2.3.4:99999", "1.2.3.4:", "[::1", "[::1]x", "[1.2.3.4]", "fe80::*",
                            "10.0.0.a*", "1.2.3.4.5", "[192.168.*]"}) {
        CAPTURE(bad);
        std::string error;
        CHECK_FALSE(ClientPattern::parse(bad, &error).has_value());
        CHECK(error.find("'" + std::string(bad) + "'") != std::string::npos);
        CHECK(error.size() > std::string(bad).size() + 20);  // a reason follows the text
    }
    std::string error;
    ClientPattern::parse("10.0.0.0/33", &error);
    CHECK(error.find("prefix") != std::string::npos);
    CHECK_FALSE(ClientPattern::parse("10.0.0.0/33").has_value());  // no error pointer: still fine
}
