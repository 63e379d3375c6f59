// Proves the per-client-IP session limit: sessions up to the limit work, the next one is closed
// at once without reaching a server, and closing a session frees its slot again.
#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

TEST_CASE("max_sessions_per_ip = 2: the third session is refused, a freed slot is reusable") {
    NameBackend backend("a");
    std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.max_sessions_per_ip = 2;
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd first, second;
    REQUIRE(open_session(port, first) == "a");
    REQUIRE(open_session(port, second) == "a");

    UniqueFd third = connect_to(port);
    REQUIRE(third.valid());  // the kernel accepts; ringlb then closes it
    ReadResult refused = read_until_closed(third.get(), 3s);
    INFO("third session ended by ", std::string(to_string(refused.end)));
    CHECK(refused.closed());
    CHECK(refused.data.empty());
    std::this_thread::sleep_for(200ms);
    CHECK(backend.accepted() == 2);  // the refused session never reached a server
    third.reset();

    // Closing a session must release its slot (asynchronously: ringlb has to notice the FIN).
    first.reset();
    std::string name;
    int attempts = 0;
    for (auto deadline = Clock::now() + 3s; Clock::now() < deadline && name != "a"; ++attempts) {
        UniqueFd again;
        name = open_session(port, again);
        if (name == "a") first = std::move(again);
        else std::this_thread::sleep_for(50ms);
    }
    INFO("attempts: ", attempts);
    CHECK(name == "a");
    CHECK(backend.accepted() == 3);
    CHECK_CLEAN_EXIT(ringlb);
}
