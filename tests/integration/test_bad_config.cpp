// Proves that config errors stop ringlb with exit code 2 and point at FILE:LINE of the problem,
// that --check accepts a good config, and that a listen address in use is reported by address.
#include <sstream>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr int kConfigErrorExit = 2;

RuleSpec web_rule(std::uint16_t listen_port) {
    RuleSpec rule;
    rule.id = "web";
    rule.listen = {loopback_endpoint(listen_port)};
    rule.servers = {{"127.0.0.1:9001"}, {"127.0.0.1:9002", 2}};
    return rule;
}

// Runs `--check` and a normal start on `text`, expecting exit 2 with "FILE:LINE:" in the output.
void expect_rejected_at(const std::string& text, unsigned line) {
    REQUIRE(line > 0);
    TempFile config(text, ".toml");
    std::string location = config.path() + ":" + std::to_string(line) + ":";
    INFO("config:\n", text);
    INFO("expected in output: ", location);
    for (bool check_only : {true, false}) {
        CAPTURE(check_only);
        std::vector<std::string> args{"-c", config.path()};
        if (check_only) args.push_back("--check");
        else args.insert(args.end(), {"--engine", test_engine()});
        RunResult run = run_to_exit(args, 10s);
        INFO("output:\n", run.output);
        CHECK_MESSAGE(run.status.exited, run.status.describe());
        CHECK(run.status.code == kConfigErrorExit);
        CHECK(run.output.find(location) != std::string::npos);
    }
}

bool has_line_starting_with(const std::string& text, const std::string& prefix) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);)
        if (line.rfind(prefix, 0) == 0) return true;
    return false;
}

}  // namespace

TEST_CASE("bad config: an unknown key exits 2 naming its line") {
    RuleSpec rule = web_rule(find_free_port());
    rule.extra_lines = {"bogus_key = 1"};
    std::string text = render_config({}, {rule});
    expect_rejected_at(text, line_of(text, "bogus_key"));
}

TEST_CASE("bad config: a malformed listen address exits 2 naming its line") {
    RuleSpec rule = web_rule(find_free_port());
    rule.listen = {"127.0.0.1:notaport"};
    std::string text = render_config({}, {rule});
    expect_rejected_at(text, line_of(text, "listen ="));
}

TEST_CASE("bad config: a duplicate rule id exits 2 naming the second id's line") {
    RuleSpec first = web_rule(find_free_port());
    RuleSpec second = web_rule(find_free_port());
    std::string text = render_config({}, {first, second});
    expect_rejected_at(text, line_of(text, "id = \"web\"", 2));
}

TEST_CASE("bad config: a rule without servers exits 2 naming its line") {
    RuleSpec rule = web_rule(find_free_port());
    rule.servers = {};
    std::string text = render_config({}, {rule});
    expect_rejected_at(text, line_of(text, "servers ="));
}

TEST_CASE("--check on a good config exits 0 and prints a line starting with \"ok:\"") {
    TempFile config(render_config({}, {web_rule(find_free_port())}), ".toml");
    RunResult run = run_to_exit({"-c", config.path(), "--check"}, 10s);
    INFO("output:\n", run.output);
    CHECK_MESSAGE(run.status.exited, run.status.describe());
    CHECK(run.status.code == 0);
    CHECK(has_line_starting_with(run.output, "ok:"));
}

TEST_CASE("listen address already in use: exit 2 with a message naming the address") {
    UniqueFd occupier = listen_on_loopback(0);
    std::string address = loopback_endpoint(local_port(occupier.get()));
    TempFile config(simple_config(local_port(occupier.get()), {{"127.0.0.1:9001"}}), ".toml");
    RunResult run = run_to_exit({"-c", config.path(), "--engine", test_engine()}, 10s);
    INFO("output:\n", run.output);
    CHECK_MESSAGE(run.status.exited, run.status.describe());
    CHECK(run.status.code == kConfigErrorExit);
    CHECK(run.output.find(address) != std::string::npos);
}
