// Proves that SIGTERM and SIGINT make ringlb exit with code 0, also with a session open.
#include <csignal>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

TEST_CASE("signals: SIGTERM on an idle ringlb exits 0") {
    RinglbProcess ringlb(simple_config(find_free_port(), {{"127.0.0.1:9001"}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    ExitStatus status = ringlb.stop(SIGTERM);
    CHECK_MESSAGE(status.exited, status.describe());
    CHECK(status.code == 0);
    CHECK_FALSE(status.timed_out);
}

TEST_CASE("signals: SIGTERM and SIGINT with an open session exit 0") {
    NameBackend backend("a");
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    REQUIRE(read_line(client.get()).data == "a");

    int signal = SIGTERM;
    SUBCASE("SIGTERM") { signal = SIGTERM; }
    SUBCASE("SIGINT") { signal = SIGINT; }
    ExitStatus status = ringlb.stop(signal);
    CHECK_MESSAGE(status.exited, status.describe());
    CHECK(status.code == 0);
    CHECK_FALSE(status.timed_out);
}
