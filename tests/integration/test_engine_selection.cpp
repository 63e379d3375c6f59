// Proves that --engine selects the engine (overriding the config file) and that ringlb says which
// engine runs in its first log line; an unknown engine name is a usage error.
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {
std::string other_engine(const std::string& engine) { return engine == "uring" ? "epoll" : "uring"; }
}  // namespace

TEST_CASE("engine: the first log line names the engine chosen by --engine, over the config's") {
    const std::string engine = test_engine();
    GlobalSpec global;
    global.extra_lines = {"engine = \"" + other_engine(engine) + "\""};
    RinglbProcess ringlb(simple_config(find_free_port(), {{"127.0.0.1:9001"}}, global), {}, engine);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    std::string line = ringlb.first_log_line();
    INFO("first log line: ", line);
    CHECK(line.find("engine=" + engine + " (") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("engine: --engine bogus exits 2") {
    TempFile config(simple_config(find_free_port(), {{"127.0.0.1:9001"}}), ".toml");
    RunResult run = run_to_exit({"-c", config.path(), "--engine", "bogus"}, 10s);
    INFO("output:\n", run.output);
    CHECK_MESSAGE(run.status.exited, run.status.describe());
    CHECK(run.status.code == 2);
}
