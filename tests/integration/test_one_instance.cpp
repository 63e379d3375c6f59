// One ringlb per listen address: with threads above 1 ringlb binds with SO_REUSEPORT, where a
// second process's bind succeeds and the kernel would split the clients between the two. A second
// ringlb on an address the first serves refuses instead, at start and at reload.
#include <signal.h>

#include <fstream>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr int kConfigErrorExit = 2;

GlobalSpec two_threads() {
    GlobalSpec global;
    global.threads = 2;
    return global;
}

}  // namespace

TEST_CASE("one instance: a second ringlb on the same listen address refuses to start and names the first") {
    NameBackend first_backend("first"), second_backend("second");
    const std::uint16_t port = find_free_port();
    RinglbProcess first(render_config(two_threads(), {one_server_rule("web", port, first_backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(first);
    REQUIRE_READY(first);

    TempFile second_config(render_config(two_threads(), {one_server_rule("web", port, second_backend.endpoint())}), ".toml");
    const RunResult second = run_to_exit({"-c", second_config.path(), "--engine", test_engine()}, 10s);
    INFO("second ringlb:\n", second.output);
    REQUIRE_MESSAGE(second.status.exited, second.status.describe());
    CHECK(second.status.code == kConfigErrorExit);
    CHECK(second.output.find("listen address " + loopback_endpoint(port) + " is served by another ringlb process (pid " +
                             std::to_string(first.pid()) + ")") != std::string::npos);
    for (int i = 0; i < 20; ++i) CHECK(fetch_name(port) == "first");  // nobody else took a share
    CHECK_CLEAN_EXIT(first);

    // Gone with the first process: the address can be served again.
    RinglbProcess third(render_config(two_threads(), {one_server_rule("web", port, second_backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(third);
    REQUIRE_READY(third);
    CHECK(fetch_name(port) == "second");
    CHECK_CLEAN_EXIT(third);
}

TEST_CASE("one instance: a reload that would listen where another ringlb serves fails and changes nothing") {
    NameBackend a("a"), b("b");
    const std::uint16_t port_a = find_free_port(), port_b = find_free_port();
    RinglbProcess first(render_config(two_threads(), {one_server_rule("a", port_a, a.endpoint())}));
    RINGLB_LOG_ON_FAILURE(first);
    REQUIRE_READY(first);
    RinglbProcess second(render_config(two_threads(), {one_server_rule("b", port_b, b.endpoint())}));
    RINGLB_LOG_ON_FAILURE(second);
    REQUIRE_READY(second);

    {
        std::ofstream out(first.config_path(), std::ios::trunc);
        out << render_config(two_threads(), {one_server_rule("a", port_a, a.endpoint()),
                                             one_server_rule("b", port_b, a.endpoint())});
    }
    REQUIRE(::kill(first.pid(), SIGHUP) == 0);
    CHECK(first.wait_for_log("reload failed"));
    CHECK(first.log_text().find("listen address " + loopback_endpoint(port_b) + " is served by another ringlb process") !=
          std::string::npos);
    CHECK(fetch_name(port_a) == "a");
    for (int i = 0; i < 20; ++i) CHECK(fetch_name(port_b) == "b");
    CHECK_CLEAN_EXIT(first);
    CHECK_CLEAN_EXIT(second);
}
