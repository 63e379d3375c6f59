// `ringlb import-g5` on a G5 config turned into a running ringlb, and the log file reopened on
// SIGUSR1 (log rotation).
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

TEST_CASE("import-g5: a G5 config becomes TOML that ringlb runs, G rule as the admin port") {
    NameBackend a("a"), b("b");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    const std::string g5 =
        "# G5 config\n"
        "( maxsessions_per_ip 10 )\n"
        "admin G 127.0.0.1:* - " + loopback_endpoint(admin_port) + " ;\n"
        "web RR ( timeout 120 ) 127.0.0.*:* - " + loopback_endpoint(port) + " > " + a.endpoint() + " " +
        b.endpoint() + " ;\n";
    TempFile g5_file(g5, ".conf");
    RunResult converted = run_to_exit({"import-g5", g5_file.path()});
    INFO(converted.output);
    REQUIRE(converted.status.code == 0);
    CHECK(converted.output.find("max_sessions_per_ip = 10") != std::string::npos);
    CHECK(converted.output.find("[admin]") != std::string::npos);

    RinglbProcess ringlb(converted.output);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(fetch_name(port) == "a");
    CHECK(fetch_name(port) == "b");
    CHECK(admin_command(admin_port, "show rules").body.find("rule web mode=round_robin") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);

    TempFile broken("web XX * - 127.0.0.1:1 > 127.0.0.1:2 ;\n", ".conf");
    RunResult bad = run_to_exit({"import-g5", broken.path()});
    CHECK(bad.status.code == 2);
    CHECK(bad.output.find(":1:") != std::string::npos);
    CHECK(bad.output.find("XX") != std::string::npos);
}

// G5's own example configs put ( timeout ) and ( maxclients ) on the G rule, and a G5 rule
// without ( timeout ) never closes an idle session: the import keeps both meanings.
TEST_CASE("import-g5: options on the G rule are dropped, and a rule without timeout keeps idle sessions") {
    EchoBackend echo;
    const std::uint16_t quiet_port = find_free_port(), short_port = find_free_port(), admin_port = find_free_port();
    const std::string g5 =
        "admin G ( timeout 300 ) 127.0.0.1:* ( maxclients 2 ) - " + loopback_endpoint(admin_port) + " ;\n"
        "quiet RR *:* - " + loopback_endpoint(quiet_port) + " > " + echo.endpoint() + " ;\n"
        "short RR ( timeout 1 ) *:* - " + loopback_endpoint(short_port) + " > " + echo.endpoint() + " ;\n";
    TempFile g5_file(g5, ".conf");
    RunResult converted = run_to_exit({"import-g5", g5_file.path()});
    INFO(converted.output);
    REQUIRE(converted.status.code == 0);
    CHECK(converted.output.find("# G5's ( timeout 300 ) is dropped") != std::string::npos);
    CHECK(converted.output.find("# G5's ( maxclients 2 ) after 127.0.0.1:* is dropped") != std::string::npos);
    CHECK(converted.output.find("timeout = \"0\"") != std::string::npos);

    RinglbProcess ringlb(converted.output);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(admin_command(admin_port, "show stats").ok());
    UniqueFd quiet = connect_to(quiet_port), timed = connect_to(short_port);
    REQUIRE(quiet.valid());
    REQUIRE(timed.valid());
    // Both silent: the rule with ( timeout 1 ) closes its session, the other keeps it.
    const ReadResult ended = read_until_closed(timed.get(), 5s);
    CHECK(ended.closed());
    CHECK_FALSE(wait_readable(quiet.get(), 1s));
    REQUIRE(send_all(quiet.get(), "still here"));
    CHECK(read_exactly(quiet.get(), 10, 2s).data == "still here");
    quiet.reset();  // the imported config keeps the default 30 s for sessions to end at a stop
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("log file: lines go to log_file; SIGUSR1 reopens it after rotation") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port();
    TempFile log_file("", ".log");
    GlobalSpec global;
    global.extra_lines = {"log_file = \"" + log_file.path() + "\"", "log_connections = true"};
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}}, global));
    for (int i = 0; i < 250 && slurp(log_file.path()).find("ready: listening on") == std::string::npos; ++i)
        std::this_thread::sleep_for(20ms);
    REQUIRE(fetch_name(port) == "a");
    for (int i = 0; i < 100 && slurp(log_file.path()).find(" end=") == std::string::npos; ++i)
        std::this_thread::sleep_for(20ms);
    INFO("log file: ", slurp(log_file.path()));
    CHECK(slurp(log_file.path()).find("ready: listening on") != std::string::npos);
    CHECK(slurp(log_file.path()).find(" end=client-fin") != std::string::npos);

    const std::string rotated = log_file.path() + ".1";
    REQUIRE(std::rename(log_file.path().c_str(), rotated.c_str()) == 0);
    REQUIRE(::kill(ringlb.pid(), SIGUSR1) == 0);
    for (int i = 0; i < 100 && ::access(log_file.path().c_str(), F_OK) != 0; ++i) std::this_thread::sleep_for(20ms);
    REQUIRE(fetch_name(port) == "a");
    for (int i = 0; i < 100 && slurp(log_file.path()).find(" end=") == std::string::npos; ++i)
        std::this_thread::sleep_for(20ms);
    CHECK(slurp(log_file.path()).find("log file reopened") != std::string::npos);
    CHECK(slurp(log_file.path()).find(" end=client-fin") != std::string::npos);
    CHECK(slurp(rotated).find("ready: listening on") != std::string::npos);
    CHECK_CLEAN_EXIT(ringlb);
    std::remove(rotated.c_str());
}

TEST_CASE("user: as root, ringlb binds and then serves as the given user; an unknown user is refused") {
    if (::geteuid() != 0) {
        MESSAGE("SKIP: needs root to test the privilege drop");
        return;
    }
    NameBackend a("a");
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.extra_lines = {"user = \"nobody\""};
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE(ringlb.wait_for_log("serving as user nobody"));
    CHECK(fetch_name(port) == "a");
    std::ifstream status("/proc/" + std::to_string(ringlb.pid()) + "/status");
    std::string line, uid_line;
    while (std::getline(status, line))
        if (line.rfind("Uid:", 0) == 0) uid_line = line;
    INFO(uid_line);
    CHECK(uid_line.find("\t0\t") == std::string::npos);  // no real, effective or saved uid 0 left
    CHECK_CLEAN_EXIT(ringlb);

    global.extra_lines = {"user = \"no-such-user-here\""};
    RinglbProcess refused(simple_config(port, {{a.endpoint()}}, global));
    const ExitStatus status_refused = refused.wait_exit(10s);
    CHECK(status_refused.exited);
    CHECK(status_refused.code == 2);
    CHECK(refused.log_text().find("no user \"no-such-user-here\"") != std::string::npos);
}
