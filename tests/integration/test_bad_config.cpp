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

TEST_CASE("--check: a typo gets the nearest key, a host name the dns: form, an early [rule.health] a hint") {
    RuleSpec rule = web_rule(find_free_port());
    rule.extra_lines = {"conect_timeout = \"1s\""};
    rule.servers.push_back({"backend.example:9003"});
    TempFile config(render_config({}, {rule}), ".toml");
    RunResult run = run_to_exit({"-c", config.path(), "--check"}, 10s);
    INFO("output:\n", run.output);
    CHECK(run.status.code == kConfigErrorExit);
    CHECK(run.output.find("did you mean connect_timeout?") != std::string::npos);
    CHECK(run.output.find("\"dns:backend.example:9003\"") != std::string::npos);

    TempFile early_health("[rule.health]\ninterval = \"2s\"\n\n" + render_config({}, {web_rule(find_free_port())}), ".toml");
    RunResult health = run_to_exit({"-c", early_health.path(), "--check"}, 10s);
    INFO("output:\n", health.output);
    CHECK(health.status.code == kConfigErrorExit);
    CHECK(health.output.find(early_health.path() + ":1:1: rule.health: [rule.health] comes before any [[rule]]") !=
          std::string::npos);
}

TEST_CASE("--check and the start-up log warn about a rule that can never match, duplicate servers and all weights 0") {
    EchoBackend echo;
    const std::uint16_t port = find_free_port();
    RuleSpec first = web_rule(port);
    first.id = "everyone";
    first.servers = {{echo.endpoint()}, {echo.endpoint()}};  // the same server twice
    RuleSpec shadowed = web_rule(port);
    shadowed.id = "never";
    shadowed.servers = {{"WEIGHT-0"}};
    shadowed.extra_lines = {"clients = [\"127.0.0.0/8\"]"};
    std::string text = render_config({}, {first, shadowed});
    text.replace(text.find("\"WEIGHT-0\""), 10, "{ address = \"" + echo.endpoint() + "\", weight = 0 }");
    TempFile config(text, ".toml");
    RunResult check = run_to_exit({"-c", config.path(), "--check"}, 10s);
    INFO("--check output:\n", check.output);
    CHECK(check.status.code == 0);  // warnings do not stop ringlb
    CHECK(has_line_starting_with(check.output, "ok:"));
    const auto warned = [&](const std::string& text, const std::string& part) {
        return text.find("warning: " + config.path()) != std::string::npos && text.find(part) != std::string::npos;
    };
    CHECK(warned(check.output, "rule \"never\" can never match: rule \"everyone\" (rule[0]) comes first on " +
                                   loopback_endpoint(port)));
    CHECK(warned(check.output, "duplicate server " + echo.endpoint()));
    CHECK(warned(check.output, "every server has weight 0"));

    RinglbProcess ringlb(text);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string log = ringlb.log_text();
    CHECK(log.find("warn config: ") != std::string::npos);
    CHECK(log.find("can never match") != std::string::npos);
    CHECK(log.find("duplicate server") != std::string::npos);
    CHECK(log.find("every server has weight 0") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("--check fails for a user this system does not have, naming it") {
    GlobalSpec global;
    global.extra_lines = {"user = \"nosuchuser-ringlb\""};
    TempFile config(render_config(global, {web_rule(find_free_port())}), ".toml");
    for (bool check_only : {true, false}) {
        CAPTURE(check_only);
        std::vector<std::string> args{"-c", config.path()};
        if (check_only) args.push_back("--check");
        else args.insert(args.end(), {"--engine", test_engine()});
        RunResult run = run_to_exit(args, 10s);
        INFO("output:\n", run.output);
        CHECK(run.status.code == kConfigErrorExit);
        CHECK(run.output.find("global.user: no user \"nosuchuser-ringlb\" on this system") != std::string::npos);
    }
}

TEST_CASE("--check refuses a NUL in a listen address or a client pattern, and a short admin token") {
    const std::string rule = "[[rule]]\nid = \"web\"\nlisten = [\"127.0.0.1\\u0000junk:8080\"]\n"
                             "clients = [\"1.2.3.4\\u0000xyz\"]\nservers = [\"127.0.0.1:9001\"]\n"
                             "[admin]\nlisten = \"127.0.0.1:9900\"\ntoken = \" \"\n";
    TempFile config(rule, ".toml");
    RunResult run = run_to_exit({"-c", config.path(), "--check"}, 10s);
    INFO("output:\n", run.output);
    CHECK(run.status.code == kConfigErrorExit);
    CHECK(run.output.find(":3:11: rule[0].listen[0]: bad address \"127.0.0.1\\u0000junk:8080\"") != std::string::npos);
    CHECK(run.output.find(":4:12: rule[0].clients[0]: client pattern '1.2.3.4\\u0000xyz'") != std::string::npos);
    CHECK(run.output.find(":8:9: admin.token: is only whitespace") != std::string::npos);
    CHECK(run.output.find('\0') == std::string::npos);
}
