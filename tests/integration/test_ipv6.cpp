// Proves that ringlb listens on IPv6 and IPv4 in one rule and forwards from [::1] to an IPv4
// backend.
#include <sys/socket.h>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

TEST_CASE("IPv6: a [::1] listener forwards to a 127.0.0.1 backend, next to an IPv4 listener") {
    if (!ipv6_loopback_available()) {
        MESSAGE("::1 cannot be bound on this machine; IPv6 test skipped");
        WARN(ipv6_loopback_available());
        return;
    }
    EchoBackend backend;
    std::uint16_t port6 = find_free_port(Family::V6);
    std::uint16_t port4 = find_free_port(Family::V4);
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port6, Family::V6), loopback_endpoint(port4, Family::V4)};
    rule.servers = {{backend.endpoint()}};
    RinglbProcess ringlb(render_config({}, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    for (Family family : {Family::V6, Family::V4}) {
        std::uint16_t port = family == Family::V6 ? port6 : port4;
        INFO("via ", loopback_endpoint(port, family));
        UniqueFd client = connect_to(port, family);
        REQUIRE(client.valid());
        std::string message = std::string("over ") + loopback_ip(family);
        REQUIRE(send_all(client.get(), message));
        ::shutdown(client.get(), SHUT_WR);
        ReadResult reply = read_until_closed(client.get(), 5s);
        CHECK(reply.data == message);
        CHECK(std::string(to_string(reply.end)) == "EOF");
    }
    CHECK(backend.accepted() == 2);
    CHECK_CLEAN_EXIT(ringlb);
}
