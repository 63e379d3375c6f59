// Live reload (SIGHUP and the admin `reload`) and the graceful stop (SIGTERM), against the real
// binary: no connection is dropped, a broken file changes nothing.
#include <signal.h>

#include <sys/socket.h>

#include <fstream>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

void rewrite(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
}

// One round trip on an echo session: sends `message`, expects it back.
bool echoes(int fd, const std::string& message) {
    if (!send_all(fd, message)) return false;
    return read_exactly(fd, message.size()).data == message;
}

RuleSpec rule_on(std::string id, std::uint16_t port, std::vector<ServerSpec> servers) {
    RuleSpec rule;
    rule.id = std::move(id);
    rule.listen = {loopback_endpoint(port)};
    rule.servers = std::move(servers);
    return rule;
}

}  // namespace

TEST_CASE("reload: SIGHUP adds a rule and removes another while a streaming session goes on byte-exact") {
    EchoBackend echo;
    NameBackend named("n");
    const std::uint16_t port = find_free_port(), second = find_free_port(), third = find_free_port();
    GlobalSpec global;
    RinglbProcess ringlb(render_config(global, {rule_on("echo", port, {{echo.endpoint()}}),
                                                rule_on("gone", second, {{named.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd stream = connect_to(port);
    REQUIRE(stream.valid());
    REQUIRE(echoes(stream.get(), "before the reload;"));
    UniqueFd on_removed;
    REQUIRE(open_session(second, on_removed) == "n");

    rewrite(ringlb.config_path(), render_config(global, {rule_on("echo", port, {{echo.endpoint()}}),
                                                         rule_on("new", third, {{named.endpoint()}})}));
    REQUIRE(::kill(ringlb.pid(), SIGHUP) == 0);
    REQUIRE(ringlb.wait_for_log("reloaded"));

    CHECK(echoes(stream.get(), "after the reload, same connection;"));
    CHECK(fetch_name(third) == "n");
    CHECK(!connect_to(second, Family::V4, 1s).valid());  // its listener is closed...
    CHECK(send_all(on_removed.get(), "...but its live session is not"));
    CHECK(!wait_readable(on_removed.get(), 300ms));
    CHECK(ringlb.log_text().find("reloaded") != std::string::npos);
    stream.reset();
    on_removed.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("reload: a broken file is reported and changes nothing (SIGHUP and admin reload)") {
    NameBackend a("a");
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule_on("web", port, {{a.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    rewrite(ringlb.config_path(), "[global]\nthreads = \"many\"\n");
    REQUIRE(::kill(ringlb.pid(), SIGHUP) == 0);
    CHECK(ringlb.wait_for_log("reload failed"));
    CHECK(ringlb.wait_for_log("global.threads"));
    CHECK(fetch_name(port) == "a");

    const AdminReply reply = admin_command(admin_port, "reload");
    CHECK(reply.last.rfind("error: reload: ", 0) == 0);
    CHECK(reply.last.find("global.threads") != std::string::npos);
    CHECK(fetch_name(port) == "a");
    CHECK(ringlb.running());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("stop: SIGTERM stops accepting at once and lets a live transfer finish, then exits 0") {
    EchoBackend echo;
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.shutdown_timeout = "20s";
    RinglbProcess ringlb(render_config(global, {rule_on("echo", port, {{echo.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd stream = connect_to(port);
    REQUIRE(stream.valid());
    REQUIRE(echoes(stream.get(), "first"));
    REQUIRE(::kill(ringlb.pid(), SIGTERM) == 0);
    REQUIRE(ringlb.wait_for_log("waiting up to 20s for 1 session"));
    CHECK(!connect_to(port, Family::V4, 1s).valid());
    // The transfer goes on for a while after the signal, then ends cleanly.
    for (int i = 0; i < 5; ++i) CHECK(echoes(stream.get(), "chunk " + std::to_string(i) + std::string(10000, '.')));
    CHECK(ringlb.running());
    ::shutdown(stream.get(), SHUT_WR);
    CHECK(read_until_closed(stream.get(), 5s).end == ReadEnd::Eof);
    const ExitStatus status = ringlb.wait_exit(10s);
    INFO(status.describe());
    CHECK(status.exited);
    CHECK(status.code == 0);
}

TEST_CASE("stop: sessions still open at shutdown_timeout are closed and the exit is 0; a second signal skips the wait") {
    EchoBackend echo;
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.shutdown_timeout = "1s";
    RinglbProcess ringlb(render_config(global, {rule_on("echo", port, {{echo.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    UniqueFd idle = connect_to(port);
    REQUIRE(echoes(idle.get(), "x"));
    const auto start = Clock::now();
    REQUIRE(::kill(ringlb.pid(), SIGTERM) == 0);
    CHECK(read_until_closed(idle.get(), 10s).closed());
    const ExitStatus status = ringlb.wait_exit(10s);
    CHECK(status.exited);
    CHECK(status.code == 0);
    CHECK(Clock::now() - start >= 900ms);
    CHECK(ringlb.log_text().find("closing 1 session") != std::string::npos);

    global.shutdown_timeout = "60s";
    RinglbProcess patient(render_config(global, {rule_on("echo", port, {{echo.endpoint()}})}));
    RINGLB_LOG_ON_FAILURE(patient);
    REQUIRE_READY(patient);
    UniqueFd held = connect_to(port);
    REQUIRE(echoes(held.get(), "y"));
    REQUIRE(::kill(patient.pid(), SIGTERM) == 0);
    REQUIRE(patient.wait_for_log("waiting up to"));
    REQUIRE(::kill(patient.pid(), SIGTERM) == 0);
    const ExitStatus second = patient.wait_exit(5s);
    CHECK(second.exited);
    CHECK(second.code == 0);
}
