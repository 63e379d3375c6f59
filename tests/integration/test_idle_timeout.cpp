// Proves that the idle timeout closes silent sessions (both sides) and spares active ones.
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

#include <thread>

using namespace ringlb::test;

namespace {

std::string idle_config(std::uint16_t port, const std::string& backend) {
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{backend}};
    rule.timeout = "500ms";
    return render_config({}, {rule});
}

}  // namespace

TEST_CASE("idle timeout 500ms: a silent session is closed on both sides within 3 s") {
    EchoBackend backend;
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(idle_config(port, backend.endpoint()));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    auto started = Clock::now();
    ReadResult result = read_until_closed(client.get(), 3s);
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    INFO("ended by ", std::string(to_string(result.end)), " after ", elapsed.count(), " ms");
    CHECK(result.closed());
    CHECK(result.data.empty());
    CHECK(elapsed >= 400ms);  // an idle timeout, not an immediate close
    // The server side was closed too: the backend saw EOF (or a reset) and ended its connection.
    CHECK(backend.wait_finished(1, 3s));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("idle timeout 500ms: a session sending every 100 ms stays open for 2 s") {
    EchoBackend backend;
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(idle_config(port, backend.endpoint()));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(port);
    REQUIRE(client.valid());
    auto until = Clock::now() + 2s;
    int round_trips = 0;
    while (Clock::now() < until) {
        REQUIRE(send_all(client.get(), "x", 1s));
        ReadResult echo = read_exactly(client.get(), 1, 1s);
        INFO("round trip ", round_trips, " ended by ", std::string(to_string(echo.end)));
        REQUIRE(echo.data == "x");
        ++round_trips;
        std::this_thread::sleep_for(100ms);
    }
    CHECK(round_trips >= 15);
    CHECK_FALSE(wait_readable(client.get(), 0ms));  // no EOF/reset pending
    CHECK(backend.finished() == 0);

    // Once the client falls silent, the timeout applies again.
    ReadResult after = read_until_closed(client.get(), 3s);
    CHECK(after.closed());
    CHECK_CLEAN_EXIT(ringlb);
}
