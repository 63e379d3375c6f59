// The management port against the real binary: views, server states, rule changes, show and
// write config, auth, hostile lines, and `ringlb ctl`.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

struct AdminSetup {
    std::uint16_t port = find_free_port();
    std::uint16_t admin_port = find_free_port();
};

std::string admin_config(const AdminSetup& setup, const std::vector<ServerSpec>& servers,
                         const std::vector<std::string>& admin_extra = {}) {
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(setup.admin_port) + "\""};
    for (const auto& line : admin_extra) global.trailing_lines.push_back(line);
    return simple_config(setup.port, servers, global);
}

std::map<std::string, unsigned> tally(std::uint16_t port, unsigned count) {
    std::map<std::string, unsigned> counts;
    for (unsigned i = 0; i < count; ++i) ++counts[fetch_name(port)];
    return counts;
}

bool contains(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

mode_t mode_of(const std::string& path) {
    struct stat status {};
    REQUIRE(::lstat(path.c_str(), &status) == 0);
    return status.st_mode & 07777;
}

}  // namespace

TEST_CASE("admin: show rules, then disable, enable, drain and set weight steer new sessions") {
    NameBackend a("a"), b("b");
    AdminSetup setup;
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}, {b.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    AdminReply rules = admin_command(setup.admin_port, "show rules");
    INFO("show rules:\n", rules.body, rules.last);
    REQUIRE(rules.ok());
    CHECK(contains(rules.body, "rule test mode=round_robin listen=" + loopback_endpoint(setup.port)));
    CHECK(contains(rules.body, "server " + a.endpoint() + " up weight=1"));
    CHECK(contains(rules.body, "server " + b.endpoint() + " up weight=1"));

    CHECK(admin_command(setup.admin_port, "disable server test " + a.endpoint()).ok());
    CHECK(tally(setup.port, 4) == std::map<std::string, unsigned>{{"b", 4}});
    CHECK(contains(admin_command(setup.admin_port, "list rules").body, "server " + a.endpoint() + " disabled"));

    CHECK(admin_command(setup.admin_port, "enable server test " + a.endpoint()).ok());
    CHECK(tally(setup.port, 4) == std::map<std::string, unsigned>{{"a", 2}, {"b", 2}});

    CHECK(admin_command(setup.admin_port, "set weight test " + b.endpoint() + " 0").ok());
    CHECK(tally(setup.port, 3) == std::map<std::string, unsigned>{{"a", 3}});
    CHECK(contains(admin_command(setup.admin_port, "show rules").body, "server " + b.endpoint() + " up weight=0"));
    CHECK(admin_command(setup.admin_port, "set weight test " + b.endpoint() + " 1").ok());

    // Draining: a live session on a keeps going, new ones go to b.
    UniqueFd held;
    std::string first;
    for (int i = 0; i < 2 && first != "a"; ++i) first = open_session(setup.port, held);
    REQUIRE(first == "a");
    CHECK(admin_command(setup.admin_port, "drain server test " + a.endpoint()).ok());
    CHECK(tally(setup.port, 3) == std::map<std::string, unsigned>{{"b", 3}});
    CHECK(contains(admin_command(setup.admin_port, "show rules").body, "server " + a.endpoint() + " draining"));
    const AdminReply sessions = admin_command(setup.admin_port, "show sessions test");
    CHECK(contains(sessions.body, "server=" + a.endpoint() + " state=established"));
    CHECK(send_all(held.get(), "still here"));

    const AdminReply wrong = admin_command(setup.admin_port, "disable server nope " + a.endpoint());
    CHECK(contains(wrong.last, "error: "));
    CHECK(contains(wrong.last, "no rule \"nope\""));
    const AdminReply no_server = admin_command(setup.admin_port, "enable server test 127.0.0.1:1");
    CHECK(contains(no_server.last, "has no server 127.0.0.1:1"));
    held.reset();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: add, modify and remove a rule, write the config, and start again from the file") {
    NameBackend a("a"), b("b");
    AdminSetup setup;
    const std::uint16_t extra_port = find_free_port();
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const std::string listen = "listen=[\"" + loopback_endpoint(extra_port) + "\"]";
    AdminReply added = admin_command(setup.admin_port, "add rule {id=\"x\", mode=\"rr\", " + listen + ", servers=[\"" +
                                                           b.endpoint() + "\"]}");
    INFO("add rule: ", added.last);
    REQUIRE(added.ok());
    CHECK(fetch_name(extra_port) == "b");
    CHECK(contains(admin_command(setup.admin_port, "add rule {id=\"x\", " + listen + ", servers=[\"" + b.endpoint() +
                                                       "\"]}").last,
                   "exists"));

    // A live session of the old version of x keeps going after the change.
    UniqueFd held;
    REQUIRE(open_session(extra_port, held) == "b");
    REQUIRE(admin_command(setup.admin_port, "modify rule {id=\"x\", mode=\"ms\", " + listen + ", servers=[\"" +
                                                a.endpoint() + "\"]}").ok());
    CHECK(fetch_name(extra_port) == "a");
    CHECK(send_all(held.get(), "old version still connected"));
    const AdminReply cleaned = admin_command(setup.admin_port, "clean sessions x");
    CHECK(cleaned.ok());
    CHECK(contains(cleaned.body, "closed 1 session"));
    CHECK(read_until_closed(held.get(), 5s).closed());

    const AdminReply bad = admin_command(setup.admin_port, "modify rule {id=\"x\", mode=\"fastest\"}");
    CHECK(contains(bad.last, "error: "));
    CHECK(contains(bad.last, "mode"));

    REQUIRE(admin_command(setup.admin_port, "write config").ok());
    const std::string dumped = read_file(ringlb.config_path());
    CHECK(contains(dumped, "id = \"x\""));
    struct stat backup {};
    CHECK(::stat((ringlb.config_path() + ".1").c_str(), &backup) == 0);
    ::unlink((ringlb.config_path() + ".1").c_str());

    REQUIRE(admin_command(setup.admin_port, "remove rule x").ok());
    CHECK(!connect_to(extra_port, Family::V4, 1s).valid());
    CHECK(contains(admin_command(setup.admin_port, "remove rule test").last, "last rule"));
    CHECK_CLEAN_EXIT(ringlb);

    // The dumped file starts a ringlb with both rules.
    RinglbProcess again(dumped);
    RINGLB_LOG_ON_FAILURE(again);
    REQUIRE_READY(again);
    CHECK(fetch_name(setup.port) == "a");
    CHECK(fetch_name(extra_port) == "a");
    CHECK_CLEAN_EXIT(again);
}

TEST_CASE("admin: pipelined commands, CRLF, unknown commands and oversized lines keep the connection sane") {
    NameBackend a("a");
    AdminSetup setup;
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd admin = connect_to(setup.admin_port);
    REQUIRE(admin.valid());
    REQUIRE(send_all(admin.get(), "version\r\nbogus command\nshow stats\n"));
    const AdminReply version = read_admin_reply(admin.get());
    CHECK(version.ok());
    CHECK(contains(version.body, "ringlb"));
    const AdminReply bogus = read_admin_reply(admin.get());
    CHECK(contains(bogus.last, "error: "));
    CHECK(contains(bogus.last, "bogus"));
    const AdminReply stats = read_admin_reply(admin.get());
    CHECK(stats.ok());
    CHECK(contains(stats.body, "engine " + test_engine()));

    REQUIRE(send_all(admin.get(), std::string(5000, 'x') + "\nhelp\n"));
    CHECK(contains(read_admin_reply(admin.get()).last, "error: line longer than 4096 bytes"));
    const AdminReply help = read_admin_reply(admin.get());
    CHECK(help.ok());
    CHECK(contains(help.body, "show rules"));

    REQUIRE(send_all(admin.get(), "kill session 12345678\nset weight test 1.2.3.4:5 abc\n"));
    CHECK(contains(read_admin_reply(admin.get()).last, "error: "));
    CHECK(contains(read_admin_reply(admin.get()).last, "error: "));
    REQUIRE(send_all(admin.get(), "quit\n"));
    CHECK(read_admin_reply(admin.get()).ok());
    CHECK(read_until_closed(admin.get(), 5s).closed());
    CHECK(fetch_name(setup.port) == "a");  // forwarding was never disturbed
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: a token is required first, compared exactly") {
    NameBackend a("a");
    AdminSetup setup;
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}, {"token = \"s3cret-0123456789\""}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    CHECK(contains(admin_command(setup.admin_port, "show rules").last, "error: authentication required"));
    CHECK(contains(admin_command(setup.admin_port, "show rules", "wrong").last, "error: authentication failed"));
    CHECK(admin_command(setup.admin_port, "show rules", "s3cret-0123456789").ok());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: show sessions and kill session") {
    NameBackend a("a");
    AdminSetup setup;
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd held;
    REQUIRE(open_session(setup.port, held) == "a");
    const AdminReply sessions = admin_command(setup.admin_port, "list forwards");
    REQUIRE(sessions.ok());
    const auto at = sessions.body.find("session ");
    REQUIRE(at != std::string::npos);
    const std::string id = sessions.body.substr(at + 8, sessions.body.find(' ', at + 8) - at - 8);
    CHECK(contains(sessions.body, "rule=test server=" + a.endpoint()));
    CHECK(admin_command(setup.admin_port, "kill session " + id).ok());
    CHECK(read_until_closed(held.get(), 5s).closed());
    CHECK(contains(admin_command(setup.admin_port, "kill session " + id).last, "no session"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("ctl: prints the reply and exits 0 on ok, 1 on error, 2 when nothing listens") {
    NameBackend a("a");
    AdminSetup setup;
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string admin = loopback_endpoint(setup.admin_port);

    RunResult rules = run_to_exit({"ctl", "--admin", admin, "show", "rules"});
    INFO(rules.output);
    CHECK(rules.status.code == 0);
    CHECK(contains(rules.output, "rule test mode=round_robin"));
    CHECK(!contains(rules.output, "\nok\n"));

    RunResult wrong = run_to_exit({"ctl", "--admin", admin, "remove", "rule", "nope"});
    INFO(wrong.output);
    CHECK(wrong.status.code == 1);
    CHECK(contains(wrong.output, "no rule \"nope\""));

    RunResult nothing = run_to_exit({"ctl", "--admin", loopback_endpoint(find_free_port()), "show", "rules"});
    CHECK(nothing.status.code == 2);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: per-IP counts return to zero after thousands of refused, failed and finished sessions") {
    NameBackend a("a");
    AdminSetup setup;
    const std::uint16_t dead = find_free_port();
    GlobalSpec global;
    global.max_sessions_per_ip = 3;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(setup.admin_port) + "\""};
    RuleSpec rule;
    rule.listen = {loopback_endpoint(setup.port)};
    rule.servers = {{loopback_endpoint(dead)}, {a.endpoint()}};
    rule.extra_lines = {"down_time = \"100ms\"", "max_down_time = \"100ms\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // Bursts of 10 at once: 3 admitted per burst at most (the rest refused by the per-IP limit),
    // some of those first tried on the dead server.
    unsigned served = 0;
    for (int burst = 0; burst < 200; ++burst) {
        std::vector<UniqueFd> clients;
        for (int i = 0; i < 10; ++i) clients.push_back(start_connect(setup.port));
        for (auto& client : clients) {
            const ReadResult line = read_line(client.get(), 5s);
            served += line.end == ReadEnd::Limit && line.data == "a";
        }
    }
    // How many a burst admits depends on how fast the previous burst's sessions were released;
    // what matters below is that every count returns to zero.
    CHECK(served > 0);
    AdminReply stats;
    for (int i = 0; i < 50; ++i) {
        stats = admin_command(setup.admin_port, "show stats");
        // Workers' session counts and the shared limits are read at slightly different moments.
        if (contains(stats.body, "limits_active 0\n") && contains(stats.body, "active_sessions 0\n")) break;
        std::this_thread::sleep_for(50ms);
    }
    INFO(stats.body);
    CHECK(contains(stats.body, "active_sessions 0\n"));
    CHECK(contains(stats.body, "limits_active 0\n"));
    CHECK(contains(stats.body, "limits_tracked_ips 0\n"));
    CHECK(!contains(stats.body, "rejected_limit 0\n"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: show config only prints; write config keeps the mode, never follows FILE.tmp, keeps backups") {
    NameBackend a("a");
    AdminSetup setup;
    const std::string token = "operator-token-5f2c9a41e7";
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}, {"token = \"" + token + "\""}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string path = ringlb.config_path();
    REQUIRE(mode_of(path) == 0600);  // it holds the admin token
    const std::string original = read_file(path);

    const AdminReply shown = admin_command(setup.admin_port, "show config", token);
    INFO("show config: ", shown.last, "\n", shown.body);
    REQUIRE(shown.ok());
    CHECK(contains(shown.body, "[[rule]]\nid = \"test\""));
    CHECK(contains(shown.body, "token = \"(hidden)\""));
    CHECK(!contains(shown.body, token));
    CHECK(read_file(path) == original);
    CHECK(::access((path + ".1").c_str(), F_OK) != 0);

    // A file planted where the temporary file used to be: a symlink to something outside.
    TempFile victim("precious\n");
    REQUIRE(::symlink(victim.path().c_str(), (path + ".tmp").c_str()) == 0);
    const AdminReply written = admin_command(setup.admin_port, "write config", token);
    INFO("write config: ", written.last, "\n", written.body);
    CHECK(written.ok());
    CHECK(contains(written.body, "written to " + path + " (previous file kept as " + path + ".1)"));
    CHECK(victim.read() == "precious\n");
    struct stat status {};
    REQUIRE(::lstat(path.c_str(), &status) == 0);
    CHECK(S_ISREG(status.st_mode));
    CHECK(mode_of(path) == 0600);
    CHECK(contains(read_file(path), "token = \"" + token + "\""));  // the file keeps the real token
    CHECK(read_file(path + ".1") == original);

    // The old name writes too, and the backups shift.
    CHECK(admin_command(setup.admin_port, "dump rules", token).ok());
    CHECK(read_file(path + ".2") == original);
    for (const char* suffix : {".tmp", ".1", ".2"}) ::unlink((path + suffix).c_str());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("admin: clean sessions without a rule closes the sessions of earlier versions of every rule") {
    NameBackend a("a"), b("b");
    AdminSetup setup;
    const std::uint16_t extra_port = find_free_port();
    RinglbProcess ringlb(admin_config(setup, {{a.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const auto rule = [&](const std::string& id, std::uint16_t port, const std::string& server) {
        return "{id=\"" + id + "\", mode=\"rr\", listen=[\"" + loopback_endpoint(port) + "\"], servers=[\"" + server +
               "\"]}";
    };
    REQUIRE(admin_command(setup.admin_port, "add rule " + rule("x", extra_port, a.endpoint())).ok());

    UniqueFd old_test, old_x, current;
    REQUIRE(open_session(setup.port, old_test) == "a");
    REQUIRE(open_session(extra_port, old_x) == "a");
    REQUIRE(admin_command(setup.admin_port, "modify rule " + rule("test", setup.port, b.endpoint())).ok());
    REQUIRE(admin_command(setup.admin_port, "modify rule " + rule("x", extra_port, b.endpoint())).ok());
    REQUIRE(open_session(setup.port, current) == "b");

    const AdminReply cleaned = admin_command(setup.admin_port, "clean forwards");
    INFO(cleaned.body, cleaned.last);
    CHECK(cleaned.ok());
    CHECK(contains(cleaned.body, "closed 2 session(s) of earlier versions of every rule"));
    CHECK(read_until_closed(old_test.get(), 5s).closed());
    CHECK(read_until_closed(old_x.get(), 5s).closed());
    CHECK(!read_until_closed(current.get(), 300ms).closed());  // the current version's session is not touched
    CHECK(contains(admin_command(setup.admin_port, "show sessions").body, "server=" + b.endpoint()));
    CHECK_CLEAN_EXIT(ringlb);
}
