// The admin server on a real epoll engine and real sockets: framing, auth, access control,
// large replies, back-pressure, limits, clean teardown, and `ringlb ctl` against it.
#include <dirent.h>
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ringlb/admin/admin_server.hpp"
#include "ringlb/app/ctl.hpp"
#include "ringlb/engine/epoll/epoll_engine.hpp"
#include "ringlb/net/unix_socket.hpp"

using namespace ringlb;
using namespace std::chrono_literals;
using admin::Reply;

namespace {

// Records every call as one line of text; answers with canned replies.
class FakeController final : public admin::Controller {
public:
    std::vector<std::string> calls;
    std::string sessions_body = "session 1 web 127.0.0.1:5000 -> 127.0.0.1:9001\n";

    Reply show_rules() override { return record("show_rules", Reply::success("rule web\nrule db\n")); }
    Reply show_sessions(std::string_view rule) override {
        return record("show_sessions " + std::string(rule), Reply::success(sessions_body));
    }
    Reply show_stats() override { return record("show_stats", Reply::success("accepted 5\nactive 2\n")); }
    Reply add_rule(std::string_view table) override {
        return record("add_rule " + std::string(table), Reply::success());
    }
    Reply modify_rule(std::string_view table) override {
        return record("modify_rule " + std::string(table), Reply::success());
    }
    Reply remove_rule(std::string_view id) override {
        if (id == "nope") return record("remove_rule nope", Reply::failure("remove rule: no rule \"nope\""));
        return record("remove_rule " + std::string(id), Reply::success());
    }
    Reply clean_sessions(std::string_view id) override {
        return record("clean_sessions " + std::string(id), Reply::success("closed 3 sessions\n"));
    }
    Reply set_server_state(std::string_view rule, std::string_view server, admin::ServerAdminState state,
                           std::optional<std::chrono::milliseconds> duration) override {
        const char* names[] = {"enabled", "disabled", "draining"};
        std::string call =
            "set_server_state " + std::string(rule) + " " + std::string(server) + " " + names[static_cast<int>(state)];
        if (duration) call += " " + std::to_string(duration->count()) + "ms";
        return record(call, Reply::success());
    }
    Reply set_weight(std::string_view rule, std::string_view server, unsigned weight) override {
        return record("set_weight " + std::string(rule) + " " + std::string(server) + " " + std::to_string(weight),
                      Reply::success());
    }
    Reply kill_session(uint64_t id) override { return record("kill_session " + std::to_string(id), Reply::success()); }
    Reply show_config() override { return record("show_config", Reply::success("[[rule]]\nid = \"web\"\n")); }
    Reply write_config() override { return record("write_config", Reply::success("written to x.toml\n")); }
    void reload(admin::ReplyCallback done) override {
        if (defer_reload) {
            pending_reload = std::move(done);
            calls.emplace_back("reload (deferred)");
            return;
        }
        done(record("reload", Reply::success()));
    }
    bool defer_reload = false;           // keep the reply back until the test calls pending_reload
    admin::ReplyCallback pending_reload;

private:
    Reply record(std::string call, Reply reply) {
        calls.push_back(std::move(call));
        return reply;
    }
};

// A log file the test can read back.
class CapturedLog {
public:
    CapturedLog() {
        char name[] = "/tmp/ringlb-admin-log-XXXXXX";
        const int fd = ::mkstemp(name);
        REQUIRE(fd >= 0);
        path_ = name;
        file_ = ::fdopen(fd, "w");
    }
    ~CapturedLog() {
        std::fclose(file_);
        ::unlink(path_.c_str());
    }
    std::FILE* file() const { return file_; }
    std::string text() const {
        std::ifstream in(path_);
        std::ostringstream all;
        all << in.rdbuf();
        return all.str();
    }

private:
    std::string path_;
    std::FILE* file_ = nullptr;
};

config::AdminConfig tcp_admin_config(const std::vector<std::string>& allow = {"127.0.0.0/8", "::1"}) {
    config::AdminConfig config;
    config.listen.enabled = true;
    config.listen.address = *net::SocketAddress::parse("127.0.0.1:0");
    for (const std::string& pattern : allow) config.allow.push_back(*net::ClientPattern::parse(pattern));
    return config;
}

engine::EngineOptions small_engine() {
    engine::EngineOptions options;
    options.buffer_size = 4096;
    options.initial_buffers = 32;
    options.max_buffers = 32;
    options.queue_depth = 64;
    return options;
}

// One engine, dispatcher and admin server, torn down server first (it needs the engine to finish).
struct Harness {
    explicit Harness(const config::AdminConfig& config, admin::AdminLimits limits = {})
        : log(LogLevel::Debug, captured.file()), engine(small_engine()), dispatcher(engine) {
        server.emplace(dispatcher, config, controller, log, "ringlb 9.9.9-test", limits);
    }
    ~Harness() {
        stop_thread();
        server.reset();
    }

    // For blocking clients (run_ctl): the dispatcher runs on its own thread meanwhile.
    void start_thread() {
        stop = false;
        loop = std::thread([this] { dispatcher.run(stop, 10ms); });
    }
    void stop_thread() {
        if (!loop.joinable()) return;
        stop = true;
        loop.join();
    }

    CapturedLog captured;
    Logger log;
    engine::EpollEngine engine;
    engine::Dispatcher dispatcher;
    FakeController controller;
    std::optional<admin::AdminServer> server;
    std::atomic<bool> stop{false};
    std::thread loop;
};

// A plain client socket: blocking writes (tests send little), non-blocking reads.
class TestClient {
public:
    explicit TestClient(const std::string& address) {
        if (address.starts_with("unix:")) {
            sockaddr_un sa{};
            socklen_t length = 0;
            REQUIRE(net::make_unix_address(address.substr(5), sa, length));
            fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
            REQUIRE(::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&sa), length) == 0);
        } else {
            const auto parsed = net::SocketAddress::parse(address);
            REQUIRE(parsed.has_value());
            fd_.reset(::socket(parsed->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
            REQUIRE(::connect(fd_.get(), parsed->sockaddr_ptr(), parsed->length()) == 0);
        }
    }

    void send(std::string_view text) {
        while (!text.empty()) {
            const ssize_t n = ::send(fd_.get(), text.data(), text.size(), MSG_NOSIGNAL);
            REQUIRE(n > 0);
            text.remove_prefix(static_cast<size_t>(n));
        }
    }
    // Takes whatever has arrived, without waiting.
    void read_available() {
        char chunk[65536];
        for (;;) {
            const ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, MSG_DONTWAIT);
            if (n > 0) {
                received.append(chunk, static_cast<size_t>(n));
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
            return;
        }
    }
    int fd() const { return fd_.get(); }
    void close() { fd_.reset(); }

    std::string received;
    bool closed = false;

private:
    net::UniqueFd fd_;
};

// Complete replies in `text`: each ends with a line that is "ok" or starts with "error:".
size_t count_replies(std::string_view text) {
    size_t replies = 0;
    size_t start = 0;
    for (size_t newline = text.find('\n'); newline != std::string_view::npos; newline = text.find('\n', start)) {
        const std::string_view line = text.substr(start, newline - start);
        if (line == "ok" || line.starts_with("error:")) ++replies;
        start = newline + 1;
    }
    return replies;
}

// Runs the dispatcher (and reads the client) until `done` holds or time runs out.
template <typename Done>
bool pump(Harness& harness, TestClient& client, Done done, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        harness.dispatcher.run_once(10ms);
        client.read_available();
        if (done()) return true;
    }
    return false;
}

// Waits for `count` more replies and returns them, leaving later bytes in client.received.
std::string read_replies(Harness& harness, TestClient& client, size_t count) {
    const bool complete =
        pump(harness, client, [&] { return count_replies(client.received) >= count || client.closed; });
    REQUIRE_MESSAGE(complete, "waited for ", count, " replies, have: ", client.received);
    size_t end = 0;
    for (size_t found = 0; found < count && end < client.received.size();) {
        const size_t newline = client.received.find('\n', end);
        if (newline == std::string::npos) break;
        const std::string_view line(client.received.data() + end, newline - end);
        if (line == "ok" || line.starts_with("error:")) ++found;
        end = newline + 1;
    }
    std::string replies = client.received.substr(0, end);
    client.received.erase(0, end);
    return replies;
}

bool wait_closed(Harness& harness, TestClient& client, std::chrono::milliseconds limit = 5s) {
    return pump(
        harness, client, [&] { return client.closed; }, limit);
}

size_t open_fd_count() {
    size_t count = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (::readdir(dir) != nullptr) ++count;
        ::closedir(dir);
    }
    return count;
}

std::string temp_dir() {
    char name[] = "/tmp/ringlb-admin-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    return name;
}

}  // namespace

TEST_CASE("admin server: pipelined commands in one write are answered in order") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send("version\nshow stats\nfoo\nshow rules\n");
    CHECK(read_replies(h, client, 4) ==
          "ringlb 9.9.9-test\nok\n"
          "accepted 5\nactive 2\nok\n"
          "error: unknown command \"foo\" (try help)\n"
          "rule web\nrule db\nok\n");
    CHECK(h.controller.calls == std::vector<std::string>{"show_stats", "show_rules"});
}

TEST_CASE("admin server: every command reaches the controller with its arguments") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send(
        "list forwards web\nshow sessions\nadd rule { id = \"x\" }\nmodify rule { id = \"x\", mode = \"lc\" }\n"
        "remove rule x\nclean forwards web\ndisable server web 127.0.0.1:9001 30s\n"
        "disable server web 127.0.0.1:9001\nenable server web 127.0.0.1:9001\ndrain server web [::1]:9002\n"
        "set weight web 127.0.0.1:9001 250\nkill session 18446744073709551615\nshow config\nwrite config\n"
        "dump rules\nclean sessions\nreload\n");
    const std::string replies = read_replies(h, client, 17);
    CHECK(replies.find("error") == std::string::npos);
    CHECK(h.controller.calls == std::vector<std::string>{
                                    "show_sessions web",
                                    "show_sessions ",
                                    "add_rule { id = \"x\" }",
                                    "modify_rule { id = \"x\", mode = \"lc\" }",
                                    "remove_rule x",
                                    "clean_sessions web",
                                    "set_server_state web 127.0.0.1:9001 disabled 30000ms",
                                    "set_server_state web 127.0.0.1:9001 disabled",
                                    "set_server_state web 127.0.0.1:9001 enabled",
                                    "set_server_state web [::1]:9002 draining",
                                    "set_weight web 127.0.0.1:9001 250",
                                    "kill_session 18446744073709551615",
                                    "show_config",
                                    "write_config",
                                    "write_config",
                                    "clean_sessions ",
                                    "reload",
                                });
    // State changes leave an audit line naming the client.
    CHECK(h.captured.text().find("admin: 127.0.0.1:") != std::string::npos);
    CHECK(h.captured.text().find(": set weight web 127.0.0.1:9001 250") != std::string::npos);
}

TEST_CASE("admin server: controller errors and bad arguments end with one error line") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send("remove rule nope\nset weight web 127.0.0.1:9001 abc\n");
    CHECK(read_replies(h, client, 2) ==
          "error: remove rule: no rule \"nope\"\n"
          "error: set weight: weight must be 0..1000, got \"abc\"\n");
}

TEST_CASE("admin server: CRLF lines, lines split over writes, blank lines") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send("ver\r\n\r\n  \nshow st");
    CHECK(read_replies(h, client, 1) == "ringlb 9.9.9-test\nok\n");
    client.send("ats\r\n");
    CHECK(read_replies(h, client, 1) == "accepted 5\nactive 2\nok\n");
}

TEST_CASE("admin server: help lists the commands") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send("?\n");
    const std::string reply = read_replies(h, client, 1);
    CHECK(reply.find("set weight <rule> <server> <0..1000>") != std::string::npos);
    CHECK(reply.ends_with("\nok\n"));
}

TEST_CASE("admin server: an over-long line gets one error and the connection stays usable") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    SUBCASE("in one write") { client.send(std::string(5000, 'a') + "\nversion\n"); }
    SUBCASE("spread over several writes") {
        for (int i = 0; i < 4; ++i) {
            client.send(std::string(3000, 'b'));
            pump(
                h, client, [] { return false; }, 30ms);
        }
        client.send("\r\nversion\n");
    }
    CHECK(read_replies(h, client, 2) == "error: line longer than 4096 bytes\nringlb 9.9.9-test\nok\n");
    pump(
        h, client, [] { return false; }, 50ms);
    CHECK(client.received.empty());
    CHECK_FALSE(client.closed);
}

TEST_CASE("admin server: a line of exactly the limit is still a command") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    const std::string table = "{ id = \"" + std::string(4096 - 11 - 9, 'x') + "\" }";
    const std::string line = "add rule " + table;
    REQUIRE(line.size() == 4096);
    client.send(line + "\r\n");
    CHECK(read_replies(h, client, 1) == "ok\n");
    REQUIRE(h.controller.calls.size() == 1);
    CHECK(h.controller.calls[0] == "add_rule " + table);
}

TEST_CASE("admin server: with a token, commands need auth first") {
    config::AdminConfig config = tcp_admin_config();
    config.token = "s3cret";
    Harness h(config);
    TestClient client(h.server->listen_address());

    SUBCASE("wrong then right token") {
        client.send("show stats\nhelp\nauth wrong\nauth s3cret\nshow stats\n");
        CHECK(read_replies(h, client, 5) ==
              "error: authentication required\n"
              "error: authentication required\n"
              "error: authentication failed\n"
              "ok\n"
              "accepted 5\nactive 2\nok\n");
        CHECK(h.controller.calls == std::vector<std::string>{"show_stats"});
    }
    SUBCASE("three failures close the connection") {
        client.send("auth a\nauth b\nauth c\nauth s3cret\n");
        CHECK(read_replies(h, client, 3) ==
              "error: authentication failed\n"
              "error: authentication failed\n"
              "error: authentication failed\n");
        CHECK(wait_closed(h, client));
        CHECK(client.received.empty());  // the fourth attempt was never answered
        CHECK(h.captured.text().find("authentication failed") != std::string::npos);
        CHECK(h.captured.text().find("s3cret") == std::string::npos);  // the token is never logged
    }
}

TEST_CASE("admin server: clients outside the allow list are closed at once") {
    Harness h(tcp_admin_config({"10.0.0.0/8"}));
    TestClient client(h.server->listen_address());
    client.send("version\n");
    CHECK(wait_closed(h, client));
    CHECK(client.received.empty());
    CHECK(h.controller.calls.empty());
    const std::string log = h.captured.text();
    CHECK(log.find("warn admin: refused connection from 127.0.0.1:") != std::string::npos);
}

TEST_CASE("admin server: quit replies ok and closes; the rest of the input is ignored") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send("exit\nversion\n");
    CHECK(read_replies(h, client, 1) == "ok\n");
    CHECK(wait_closed(h, client));
    CHECK(client.received.empty());
    CHECK(h.server->connection_count() == 0);
}

TEST_CASE("admin server: input ended without a final newline is still answered") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    client.send("show rules\nversion");
    ::shutdown(client.fd(), SHUT_WR);
    CHECK(read_replies(h, client, 2) == "rule web\nrule db\nok\nringlb 9.9.9-test\nok\n");
    CHECK(wait_closed(h, client));
}

TEST_CASE("admin server: a 200 KiB reply arrives complete") {
    Harness h(tcp_admin_config());
    std::string body;
    for (int i = 0; body.size() < 200 * 1024; ++i)
        body += "session " + std::to_string(i) + " web 127.0.0.1:" + std::to_string(10000 + i % 50000) + "\n";
    h.controller.sessions_body = body;
    TestClient client(h.server->listen_address());
    client.send("show sessions\nversion\n");
    CHECK(read_replies(h, client, 2) == body + "ok\nringlb 9.9.9-test\nok\n");
}

TEST_CASE("admin server: a client that does not read is not served beyond the output limit") {
    admin::AdminLimits limits;
    limits.max_unsent_bytes = 64 * 1024;
    Harness h(tcp_admin_config(), limits);
    h.controller.sessions_body = std::string(512 * 1024 - 1, 's') + "\n";
    TestClient client(h.server->listen_address());
    constexpr size_t kCommands = 40;  // 20 MiB of replies: far more than socket buffers hold
    std::string commands;
    for (size_t i = 0; i < kCommands; ++i) commands += "show sessions\n";
    client.send(commands);
    for (int round = 0; round < 50; ++round) h.dispatcher.run_once(5ms);
    const size_t served_while_blocked = h.controller.calls.size();
    CHECK(served_while_blocked >= 1);
    CHECK(served_while_blocked < kCommands);

    // Once the client reads, the held-back commands are answered, all of them, in order.
    const std::string replies = read_replies(h, client, kCommands);
    CHECK(h.controller.calls.size() == kCommands);
    CHECK(replies.size() == kCommands * (h.controller.sessions_body.size() + 3));
}

TEST_CASE("admin server: connections beyond the limit are closed at once") {
    admin::AdminLimits limits;
    limits.max_connections = 2;
    Harness h(tcp_admin_config(), limits);
    TestClient first(h.server->listen_address());
    TestClient second(h.server->listen_address());
    first.send("version\n");
    second.send("version\n");
    read_replies(h, first, 1);
    read_replies(h, second, 1);
    TestClient third(h.server->listen_address());
    CHECK(wait_closed(h, third));
    CHECK(third.received == "error: too many admin connections\n");
    // The first two are unaffected.
    first.send("version\n");
    CHECK(read_replies(h, first, 1) == "ringlb 9.9.9-test\nok\n");
}

TEST_CASE("admin server: idle connections are closed") {
    admin::AdminLimits limits;
    limits.idle_timeout = 100ms;
    Harness h(tcp_admin_config(), limits);
    TestClient idle(h.server->listen_address());
    const auto start = std::chrono::steady_clock::now();
    CHECK(wait_closed(h, idle, 3s));
    CHECK(std::chrono::steady_clock::now() - start >= 100ms);
    CHECK(h.server->connection_count() == 0);
}

TEST_CASE("admin server: unix socket listener") {
    const std::string dir = temp_dir();
    const std::string path = dir + "/admin.sock";
    config::AdminConfig config;
    config.listen.enabled = true;
    config.listen.unix_path = path;
    {
        // A socket file left behind by a process that is gone must not stop the server.
        net::UniqueFd leftover(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un sa{};
        socklen_t length = 0;
        REQUIRE(net::make_unix_address(path, sa, length));
        REQUIRE(::bind(leftover.get(), reinterpret_cast<const sockaddr*>(&sa), length) == 0);
    }
    {
        Harness h(config);
        CHECK(h.server->listen_address() == "unix:" + path);
        struct stat status {};
        REQUIRE(::stat(path.c_str(), &status) == 0);
        CHECK((status.st_mode & 0777) == 0660);
        // A second server on a live socket is refused, and leaves the first one's file alone.
        const std::string expected = "bind unix:" + path;
        CHECK_THROWS_WITH_AS(net::listen_unix(path, 8), doctest::Contains(expected.c_str()), net::SystemError);
        TestClient client(h.server->listen_address());
        client.send("version\nshow stats\n");
        CHECK(read_replies(h, client, 2) == "ringlb 9.9.9-test\nok\naccepted 5\nactive 2\nok\n");
    }
    CHECK(::access(path.c_str(), F_OK) != 0);  // removed by the destructor
    ::rmdir(dir.c_str());
}

TEST_CASE("listen_unix refuses to replace a file that is not a socket") {
    const std::string dir = temp_dir();
    const std::string path = dir + "/not-a-socket";
    std::ofstream(path) << "data";
    const std::string expected = "unix:" + path;
    CHECK_THROWS_WITH_AS(net::listen_unix(path, 8), doctest::Contains(expected.c_str()), net::SystemError);
    CHECK(::access(path.c_str(), F_OK) == 0);
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
}

TEST_CASE("admin server: a busy TCP address is reported with the address") {
    Harness first(tcp_admin_config());
    config::AdminConfig config = tcp_admin_config();
    config.listen.address = *net::SocketAddress::parse(first.server->listen_address());
    engine::EpollEngine engine(small_engine());
    engine::Dispatcher dispatcher(engine);
    FakeController controller;
    const std::string expected = "bind " + first.server->listen_address();
    CHECK_THROWS_WITH_AS(admin::AdminServer(dispatcher, config, controller, first.log, "v"),
                         doctest::Contains(expected.c_str()), net::SystemError);
}

TEST_CASE("admin server: the destructor closes every fd, also mid-conversation") {
    engine::EpollEngine engine(small_engine());
    engine::Dispatcher dispatcher(engine);
    FakeController controller;
    CapturedLog captured;
    Logger log(LogLevel::Debug, captured.file());
    const size_t fds_before = open_fd_count();
    {
        admin::AdminServer server(dispatcher, tcp_admin_config(), controller, log, "v");
        controller.sessions_body = std::string(4 * 1024 * 1024, 'x') + "\n";  // a send still pending
        TestClient reading(server.listen_address());
        TestClient stuck(server.listen_address());
        reading.send("version\n");
        stuck.send("show sessions\n");
        for (int i = 0; i < 20; ++i) dispatcher.run_once(5ms);
        CHECK(server.connection_count() == 2);
    }
    CHECK(open_fd_count() == fds_before);
    // No dispatcher rounds after this point: the Dispatcher cannot unregister a component, so it
    // would still tick the destroyed server.
}

TEST_CASE("ringlb ctl against the admin server") {
    config::AdminConfig config = tcp_admin_config();
    Harness h(config);
    h.start_thread();
    const std::string address = h.server->listen_address();
    std::ostringstream out, err;

    SUBCASE("ok: the body goes to stdout, exit 0") {
        CHECK(app::run_ctl(address, "", {"show", "stats"}, out, err) == app::kCtlOk);
        CHECK(out.str() == "accepted 5\nactive 2\n");
        CHECK(err.str().empty());
    }
    SUBCASE("error: the message goes to stderr, exit 1") {
        CHECK(app::run_ctl(address, "", {"set", "weight", "web", "127.0.0.1:9001", "abc"}, out, err) ==
              app::kCtlCommandFailed);
        CHECK(out.str().empty());
        CHECK(err.str() == "ringlb ctl: set weight: weight must be 0..1000, got \"abc\"\n");
    }
    SUBCASE("a failure from the controller is exit 1") {
        CHECK(app::run_ctl(address, "", {"remove", "rule", "nope"}, out, err) == app::kCtlCommandFailed);
        CHECK(err.str() == "ringlb ctl: remove rule: no rule \"nope\"\n");
    }
    SUBCASE("no words is a usage error") {
        CHECK(app::run_ctl(address, "", {}, out, err) == app::kCtlUnreachable);
        CHECK(err.str().starts_with("ringlb ctl: usage: ringlb ctl"));
    }
    h.stop_thread();
}

TEST_CASE("ringlb ctl with a token and over a unix socket") {
    const std::string dir = temp_dir();
    config::AdminConfig config;
    config.listen.enabled = true;
    config.listen.unix_path = dir + "/ctl.sock";
    config.token = "t0ken";
    {
        Harness h(config);
        h.start_thread();
        std::ostringstream out, err;
        SUBCASE("right token") {
            CHECK(app::run_ctl("unix:" + config.listen.unix_path, "t0ken", {"version"}, out, err) == app::kCtlOk);
            CHECK(out.str() == "ringlb 9.9.9-test\n");
        }
        SUBCASE("wrong token") {
            CHECK(app::run_ctl("unix:" + config.listen.unix_path, "guess", {"version"}, out, err) ==
                  app::kCtlCommandFailed);
            CHECK(err.str() == "ringlb ctl: authentication failed\n");
        }
        SUBCASE("no token") {
            CHECK(app::run_ctl("unix:" + config.listen.unix_path, "", {"version"}, out, err) == app::kCtlCommandFailed);
            CHECK(err.str() == "ringlb ctl: authentication required\n");
        }
        h.stop_thread();
    }
    ::rmdir(dir.c_str());
}

TEST_CASE("ringlb ctl: nothing listening is exit 2 naming the address") {
    // A port that was just free: bind port 0, note it, close it.
    std::string address;
    {
        net::UniqueFd probe = net::listen_tcp(*net::SocketAddress::parse("127.0.0.1:0"), 1);
        address = net::local_address(probe.get()).to_string();
    }
    std::ostringstream out, err;
    CHECK(app::run_ctl(address, "", {"version"}, out, err) == app::kCtlUnreachable);
    CHECK(err.str().starts_with("ringlb ctl: cannot connect to " + address + ": "));
    CHECK(app::run_ctl("unix:/nonexistent/ringlb.sock", "", {"version"}, out, err) == app::kCtlUnreachable);
    CHECK(app::run_ctl("not-an-address", "", {"version"}, out, err) == app::kCtlUnreachable);
    CHECK(err.str().find("bad admin address \"not-an-address\"") != std::string::npos);
}

TEST_CASE("ringlb ctl: a client refused by the allow list is exit 2") {
    Harness h(tcp_admin_config({"10.0.0.0/8"}));
    h.start_thread();
    std::ostringstream out, err;
    CHECK(app::run_ctl(h.server->listen_address(), "", {"version"}, out, err) == app::kCtlUnreachable);
    // Refused after connecting: either the send or the first read notices, both name the address.
    CHECK(err.str().find(h.server->listen_address()) != std::string::npos);
    h.stop_thread();
}

TEST_CASE("admin server: reload answers later; other clients are served meanwhile and replies keep their order") {
    Harness h(tcp_admin_config());
    h.controller.defer_reload = true;
    TestClient reloader(h.server->listen_address());
    TestClient other(h.server->listen_address());
    reloader.send("reload\nversion\n");
    REQUIRE(pump(h, reloader, [&] { return static_cast<bool>(h.controller.pending_reload); }));
    // While the reload is under way: another client is answered, the reloader's next line waits.
    other.send("show stats\n");
    CHECK(read_replies(h, other, 1) == "accepted 5\nactive 2\nok\n");
    pump(h, reloader, [] { return false; }, 100ms);
    CHECK(reloader.received.empty());
    h.controller.pending_reload(Reply::success("reloaded test.toml\n"));
    CHECK(read_replies(h, reloader, 2) == "reloaded test.toml\nok\nringlb 9.9.9-test\nok\n");
}

TEST_CASE("admin server: a reload asked for as the last line before the client's end of input is still answered") {
    Harness h(tcp_admin_config());
    h.controller.defer_reload = true;
    TestClient client(h.server->listen_address());
    client.send("reload");
    REQUIRE(::shutdown(client.fd(), SHUT_WR) == 0);
    REQUIRE(pump(h, client, [&] { return static_cast<bool>(h.controller.pending_reload); }));
    pump(h, client, [] { return false; }, 100ms);
    CHECK_FALSE(client.closed);
    h.controller.pending_reload(Reply::failure("reload: broken"));
    CHECK(read_replies(h, client, 1) == "error: reload: broken\n");
    CHECK(wait_closed(h, client));
}

TEST_CASE("admin server: a reload reply for a connection closed meanwhile does not reach the slot's next owner") {
    admin::AdminLimits limits;
    limits.max_connections = 1;
    limits.idle_timeout = 300ms;  // closes the reloader's connection before its reply comes
    Harness h(tcp_admin_config(), limits);
    h.controller.defer_reload = true;
    admin::ReplyCallback late;
    {
        TestClient client(h.server->listen_address());
        client.send("reload\n");
        REQUIRE(pump(h, client, [&] { return static_cast<bool>(h.controller.pending_reload); }));
        late = std::move(h.controller.pending_reload);
        REQUIRE(wait_closed(h, client));
    }
    TestClient next(h.server->listen_address());  // the only slot: the one the reloader had
    next.send("version\n");
    CHECK(read_replies(h, next, 1) == "ringlb 9.9.9-test\nok\n");
    late(Reply::success("nobody reads this\n"));
    next.send("version\n");
    CHECK(read_replies(h, next, 1) == "ringlb 9.9.9-test\nok\n");
}

// ---- defences against clients that do not authenticate -------------------------------------

namespace {

config::AdminConfig token_config() {
    config::AdminConfig config = tcp_admin_config();
    config.token = "s3cret-admin-token";
    return config;
}

// Sends without failing the test when the server has already closed the connection.
void send_quietly(const TestClient& client, std::string_view text) {
    [[maybe_unused]] const ssize_t sent = ::send(client.fd(), text.data(), text.size(), MSG_NOSIGNAL);
}

// Runs the dispatcher for a while, reading nothing.
void run_for(Harness& harness, std::chrono::milliseconds duration) {
    const auto until = std::chrono::steady_clock::now() + duration;
    while (std::chrono::steady_clock::now() < until) harness.dispatcher.run_once(5ms);
}

// Connects and runs the loop until the server has taken the connection, so that connections
// opened one after the other are also accepted in that order.
std::unique_ptr<TestClient> connect_accepted(Harness& harness) {
    const size_t before = harness.server->connection_count();
    auto client = std::make_unique<TestClient>(harness.server->listen_address());
    for (int round = 0; round < 200 && harness.server->connection_count() == before; ++round)
        harness.dispatcher.run_once(5ms);
    return client;
}

size_t count_occurrences(const std::string& text, std::string_view needle) {
    size_t count = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
    return count;
}

}  // namespace

TEST_CASE("admin server: a client that trickles bytes but never authenticates is closed at the deadline") {
    admin::AdminLimits limits;
    limits.auth_timeout = 300ms;
    Harness h(token_config(), limits);
    TestClient trickler(h.server->listen_address());
    const auto start = std::chrono::steady_clock::now();
    // One byte every 50 ms, never a whole line: activity that used to keep it open for ever.
    while (!trickler.closed && std::chrono::steady_clock::now() - start < 5s) {
        send_quietly(trickler, "x");
        pump(h, trickler, [&] { return trickler.closed; }, 50ms);
    }
    CHECK(trickler.closed);
    CHECK(std::chrono::steady_clock::now() - start >= 300ms);
    CHECK(trickler.received == "error: closed: not authenticated in time\n");
    CHECK(h.server->counters().auth_timeouts == 1);
    CHECK(h.captured.text().find("not authenticated within 300 ms") != std::string::npos);
}

TEST_CASE("admin server: unauthenticated clients get a share of the slots; the oldest makes room") {
    admin::AdminLimits limits;
    limits.max_unauthenticated = 2;
    Harness h(token_config(), limits);
    auto oldest = connect_accepted(h);
    auto second = connect_accepted(h);
    auto operator_client = connect_accepted(h);
    CHECK(wait_closed(h, *oldest));
    CHECK(oldest->received == "error: closed to make room: too many unauthenticated admin connections\n");
    CHECK(h.server->counters().evicted_unauthenticated == 1);

    operator_client->send("auth s3cret-admin-token\nversion\n");
    CHECK(read_replies(h, *operator_client, 2) == "ok\nringlb 9.9.9-test\nok\n");

    // An authenticated client is never evicted: the next newcomers push out `second`, then each other.
    auto third = connect_accepted(h);
    auto fourth = connect_accepted(h);
    CHECK(wait_closed(h, *second));
    CHECK(h.server->counters().evicted_unauthenticated == 2);
    operator_client->send("version\n");
    CHECK(read_replies(h, *operator_client, 1) == "ringlb 9.9.9-test\nok\n");
    CHECK_FALSE(operator_client->closed);
    CHECK_FALSE(third->closed);
    CHECK_FALSE(fourth->closed);
    CHECK(h.captured.text().find("closed unauthenticated connection from 127.0.0.1:") != std::string::npos);
}

TEST_CASE("admin server: when authenticated clients hold every slot, a newcomer is refused and counted") {
    admin::AdminLimits limits;
    limits.max_connections = 2;
    Harness h(token_config(), limits);
    TestClient first(h.server->listen_address());
    TestClient second(h.server->listen_address());
    first.send("auth s3cret-admin-token\n");
    second.send("auth s3cret-admin-token\n");
    CHECK(read_replies(h, first, 1) == "ok\n");
    CHECK(read_replies(h, second, 1) == "ok\n");
    TestClient third(h.server->listen_address());
    CHECK(wait_closed(h, third));
    CHECK(third.received == "error: too many admin connections\n");
    CHECK(h.server->counters().refused_full == 1);
    CHECK(h.server->counters().evicted_unauthenticated == 0);
}

TEST_CASE("admin server: wrong tokens slow further attempts from that IP, growing; the right one still works") {
    admin::AdminLimits limits;
    limits.auth_backoff.first_delay = 100ms;
    limits.auth_backoff.max_delay = 400ms;
    Harness h(token_config(), limits);
    using Clock = std::chrono::steady_clock;
    const auto timed_reply = [&](TestClient& client, std::string_view line) {
        const auto start = Clock::now();
        client.send(line);
        const std::string reply = read_replies(h, client, 1);
        return std::pair{reply, Clock::now() - start};
    };

    TestClient guesser(h.server->listen_address());
    CHECK(timed_reply(guesser, "auth guess-1\n").first == "error: authentication failed\n");
    const auto [second_reply, second_wait] = timed_reply(guesser, "auth guess-2\n");
    CHECK(second_reply == "error: authentication failed\n");
    CHECK(second_wait >= 100ms);
    const auto [third_reply, third_wait] = timed_reply(guesser, "auth guess-3\n");
    CHECK(third_reply == "error: authentication failed\n");
    CHECK(third_wait >= 200ms);
    CHECK(wait_closed(h, guesser));

    // Another connection from the same address is not refused, only slowed: by the cap now.
    TestClient operator_client(h.server->listen_address());
    const auto [reply, wait] = timed_reply(operator_client, "auth s3cret-admin-token\n");
    CHECK(reply == "ok\n");
    CHECK(wait >= 400ms);
    CHECK(wait < 2s);
    operator_client.send("version\n");  // authenticated: no more waiting
    CHECK(read_replies(h, operator_client, 1) == "ringlb 9.9.9-test\nok\n");
    CHECK(h.server->counters().auth_failures == 3);
}

TEST_CASE("admin server: a burst of silent connects does not push out a client whose line has arrived") {
    admin::AdminLimits limits;
    limits.max_unauthenticated = 2;
    Harness h(token_config(), limits);
    // All of them wait in the accept queue and are accepted in one round, before any receive.
    TestClient operator_client(h.server->listen_address());
    operator_client.send("auth s3cret-admin-token\nversion\n");
    std::vector<std::unique_ptr<TestClient>> silent;
    for (int i = 0; i < 4; ++i) silent.push_back(std::make_unique<TestClient>(h.server->listen_address()));
    CHECK(read_replies(h, operator_client, 2) == "ok\nringlb 9.9.9-test\nok\n");
    CHECK(h.server->counters().evicted_unauthenticated == 3);
    CHECK(wait_closed(h, *silent[0]));
    CHECK(wait_closed(h, *silent[2]));
}

TEST_CASE("admin server: a client waiting out the back-off is evicted last") {
    admin::AdminLimits limits;
    limits.max_unauthenticated = 2;
    limits.auth_backoff.first_delay = 500ms;
    limits.auth_backoff.max_delay = 500ms;
    Harness h(token_config(), limits);
    {
        TestClient guesser(h.server->listen_address());
        guesser.send("auth wrong\n");
        CHECK(read_replies(h, guesser, 1) == "error: authentication failed\n");
    }
    auto operator_client = connect_accepted(h);
    operator_client->send("auth s3cret-admin-token\nversion\n");
    run_for(h, 50ms);  // its line is read and now waits out the back-off
    CHECK(operator_client->received.empty());
    auto idle = connect_accepted(h);
    auto newcomer = connect_accepted(h);
    CHECK(wait_closed(h, *idle));
    CHECK(read_replies(h, *operator_client, 2) == "ok\nringlb 9.9.9-test\nok\n");
    CHECK_FALSE(newcomer->closed);
}

TEST_CASE("admin server: failed logins are logged as a count per interval, not one line each") {
    admin::AdminLimits limits;
    limits.log_interval = 300ms;
    limits.auth_backoff.first_delay = 1ms;
    limits.auth_backoff.max_delay = 1ms;
    Harness h(token_config(), limits);
    for (int i = 0; i < 10; ++i) {
        TestClient guesser(h.server->listen_address());
        guesser.send("auth a\nauth b\nauth c\n");
        CHECK(read_replies(h, guesser, 3).size() == 3 * std::string("error: authentication failed\n").size());
        CHECK(wait_closed(h, guesser));
    }
    run_for(h, 400ms);
    const std::string log = h.captured.text();
    CHECK(count_occurrences(log, "authentication failed") == 1);
    CHECK(log.find("29 more failed admin authentication attempts in the last ") != std::string::npos);
    CHECK(h.server->counters().auth_failures == 30);
}

TEST_CASE("admin server: control bytes from the client are escaped in the log and in error replies") {
    Harness h(tcp_admin_config());
    TestClient client(h.server->listen_address());
    // ESC [2K erases the terminal line and CR returns to its start: on a terminal this would show
    // as a log line of its own. A NUL used to cut the error reply short.
    const std::string forged = "\x1b[2K\r2026-01-01T00:00:00.000Z warn admin: FAKE entry";
    client.send("add rule {x}" + forged + std::string(1, '\0') + "tail\n");
    CHECK(read_replies(h, client, 1) == "ok\n");
    client.send("bogus" + forged.substr(0, 5) + std::string(1, '\0') + "tail\n");
    CHECK(read_replies(h, client, 1) == "error: unknown command \"bogus\\u001B[2K\\r\\u0000tail\" (try help)\n");
    const std::string log = h.captured.text();
    CHECK(log.find("add rule {x}\\u001B[2K\\r2026-01-01T00:00:00.000Z warn admin: FAKE entry\\u0000tail\n") !=
          std::string::npos);
    CHECK(log.find('\x1b') == std::string::npos);
    CHECK(log.find('\r') == std::string::npos);
    CHECK(log.find('\0') == std::string::npos);
}
