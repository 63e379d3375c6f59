// How sessions that ringlb ends itself end, as each peer sees it: a FIN only when nothing was lost
// (the session was quiescent), a reset whenever the stream was cut, whatever the cause (idle
// timeout, no server left, kill session, clean sessions, the end of a graceful stop, a worker's
// fatal error). The connection log says which ending each side got.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// A server the test drives by hand: it accepts ringlb's connection when asked and reads or
// stays silent as the test decides, so what it receives, and how its connection ends, is plain.
struct ManualServer {
    UniqueFd listener = listen_on_loopback(0);
    std::string endpoint() const { return loopback_endpoint(local_port(listener.get())); }

    UniqueFd accept_one(std::chrono::milliseconds timeout = 5s) const {
        if (!wait_readable(listener.get(), timeout)) return {};
        return UniqueFd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    }
};

struct Setup {
    std::uint16_t port = find_free_port();
    std::uint16_t admin_port = find_free_port();
};

std::string endings_config(const Setup& setup, const std::vector<ServerSpec>& servers,
                           const std::string& timeout = "300s", std::vector<std::string> rule_lines = {},
                           unsigned threads = 1) {
    GlobalSpec global;
    global.threads = threads;
    global.extra_lines = {"log_connections = true"};
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(setup.admin_port) + "\""};
    RuleSpec rule;
    rule.listen = {loopback_endpoint(setup.port)};
    rule.servers = servers;
    rule.timeout = timeout;
    rule.connect_timeout = "1s";
    rule.extra_lines = std::move(rule_lines);
    return render_config(global, {rule});
}

// The connection log line of the session whose client used `client_port`; "" when none came.
std::string connection_line(RinglbProcess& ringlb, std::uint16_t client_port) {
    const std::string needle = " conn client=127.0.0.1:" + std::to_string(client_port) + " ";
    if (!ringlb.wait_for_log(needle, 5s)) return "";
    const std::string log = ringlb.log_text();
    const auto at = log.find(needle);
    return log.substr(at, log.find('\n', at) - at);
}

bool has(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

// Sends until the socket stays full for a moment: ringlb then holds bytes it could not pass on.
std::size_t send_until_stalled(int fd) {
    const std::string chunk(64 * 1024, 'x');
    std::size_t sent = 0;
    const auto give_up = Clock::now() + 10s;
    while (Clock::now() < give_up) {
        const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, 300) == 0) break;  // full, and staying full
    }
    return sent;
}

// The id of the only session `show sessions` lists.
std::string only_session_id(std::uint16_t admin_port) {
    const AdminReply sessions = admin_command(admin_port, "show sessions");
    const auto at = sessions.body.find("session ");
    if (at == std::string::npos) return "";
    return sessions.body.substr(at + 8, sessions.body.find(' ', at + 8) - at - 8);
}

// Whether a reset reaches a socket whose read side has ended already (a server that read the
// client's FIN): a read says nothing more there, so the reset is seen as the socket's error
// (EPIPE: Linux's name for a reset in that state).
bool reset_after_eof(int fd, std::chrono::milliseconds timeout = 5s) {
    pollfd p{fd, 0, 0};  // POLLERR and POLLHUP are always reported
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    int error = 0;
    socklen_t length = sizeof error;
    return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && (error == EPIPE || error == ECONNRESET);
}

// A client that sent a request and half-closed, and the server that read all of it, FIN included:
// both now wait, the client for the reply, the server to send it.
struct HalfClosedSession {
    UniqueFd client;
    UniqueFd server;
    std::uint16_t client_port = 0;
};

HalfClosedSession open_half_closed(std::uint16_t port, const ManualServer& backend) {
    HalfClosedSession session;
    session.client = connect_to(port);
    REQUIRE(session.client.valid());
    session.client_port = local_port(session.client.get());
    REQUIRE(send_all(session.client.get(), std::string(1000, 'q')));
    REQUIRE(::shutdown(session.client.get(), SHUT_WR) == 0);
    session.server = backend.accept_one();
    REQUIRE(session.server.valid());
    const ReadResult request = read_until_closed(session.server.get(), 5s);
    REQUIRE(request.data.size() == 1000);
    REQUIRE(request.end == ReadEnd::Eof);  // the client's FIN arrived after its bytes
    return session;
}

// A keep-alive session after one exchange: nothing half-closed, nothing in flight.
struct QuietSession {
    UniqueFd client;
    UniqueFd server;
    std::uint16_t client_port = 0;
};

QuietSession open_quiet(std::uint16_t port, const ManualServer& backend) {
    QuietSession session;
    session.client = connect_to(port);
    REQUIRE(session.client.valid());
    session.client_port = local_port(session.client.get());
    REQUIRE(send_all(session.client.get(), "ping"));
    session.server = backend.accept_one();
    REQUIRE(session.server.valid());
    REQUIRE(read_exactly(session.server.get(), 4, 5s).data == "ping");
    REQUIRE(send_all(session.server.get(), "pong"));
    REQUIRE(read_exactly(session.client.get(), 4, 5s).data == "pong");
    return session;
}

}  // namespace

TEST_CASE("idle timeout 1s: a client that half-closed and waits for a late reply gets a reset, not a clean end") {
    ManualServer backend;
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{backend.endpoint()}}, "1s"));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    HalfClosedSession session = open_half_closed(setup.port, backend);
    // The server would reply 2.5 s after the client's FIN: the timeout comes first.
    const auto started = Clock::now();
    const ReadResult client = read_until_closed(session.client.get(), 5s);
    const auto elapsed = Clock::now() - started;
    INFO("client: ", to_string(client.end), " after ", client.data.size(), " bytes, ",
         std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), " ms");
    CHECK(client.end == ReadEnd::Reset);
    CHECK(client.data.empty());
    CHECK(elapsed < 2500ms);  // ended by the timeout, before the reply was due
    // The server learns it too: its reply has nowhere to go.
    CHECK(reset_after_eof(session.server.get()));

    const std::string line = connection_line(ringlb, session.client_port);
    INFO("connection log: ", line);
    CHECK(has(line, " up=1000 down=0 "));
    CHECK(has(line, " end=idle-timeout client_end=reset server_end=reset"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("idle timeout 1s: an idle keep-alive session ends with a FIN on both sides") {
    ManualServer backend;
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{backend.endpoint()}}, "1s"));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    QuietSession session = open_quiet(setup.port, backend);
    const ReadResult client = read_until_closed(session.client.get(), 5s);
    CHECK(client.end == ReadEnd::Eof);
    CHECK(client.data.empty());
    CHECK(read_until_closed(session.server.get(), 5s).end == ReadEnd::Eof);

    const std::string line = connection_line(ringlb, session.client_port);
    INFO("connection log: ", line);
    CHECK(has(line, " end=idle-timeout client_end=fin server_end=fin"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("no server left after the client's bytes were read: the client gets a reset") {
    Setup setup;
    const std::uint16_t dead = find_free_port();
    RinglbProcess ringlb(endings_config(setup, {{loopback_endpoint(dead)}}, "300s", {"accept_proxy = true"}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // The PROXY header and a request in one packet: ringlb reads both before it picks a server.
    UniqueFd client = connect_to(setup.port);
    REQUIRE(client.valid());
    REQUIRE(send_all(client.get(), "PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\nGET / HTTP/1.0\r\n\r\n"));
    const ReadResult result = read_until_closed(client.get(), 5s);
    CHECK(result.end == ReadEnd::Reset);
    CHECK(result.data.empty());
    REQUIRE(ringlb.wait_for_log(" conn client=192.0.2.1:5555 "));  // the address the header gave
    const std::string log = ringlb.log_text();
    const auto at = log.find(" conn client=192.0.2.1:5555 ");
    const std::string line = log.substr(at, log.find('\n', at) - at);
    INFO("connection log: ", line);
    CHECK(has(line, " end=connect-failed client_end=reset server_end=-"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("no server left after a connect timeout, with the client's bytes waiting: reset; with none: FIN") {
    // A listener whose accept queue is full drops further SYNs: ringlb's connect hangs until
    // connect_timeout (1 s) and then no server is left.
    UniqueFd full = listen_on_loopback(0, Family::V4, 0);
    const std::uint16_t full_port = local_port(full.get());
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 2; ++i) fillers.push_back(start_connect(full_port));
    std::this_thread::sleep_for(100ms);
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{loopback_endpoint(full_port)}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd talker = connect_to(setup.port);
    UniqueFd silent = connect_to(setup.port);
    REQUIRE(talker.valid());
    REQUIRE(silent.valid());
    REQUIRE(send_all(talker.get(), "a request nobody will serve"));
    const std::uint16_t talker_port = local_port(talker.get()), silent_port = local_port(silent.get());

    const ReadResult talked = read_until_closed(talker.get(), 5s);
    CHECK(talked.end == ReadEnd::Reset);
    const ReadResult quiet = read_until_closed(silent.get(), 5s);
    CHECK(quiet.end == ReadEnd::Eof);

    const std::string talker_line = connection_line(ringlb, talker_port);
    const std::string silent_line = connection_line(ringlb, silent_port);
    INFO("connection log:\n", talker_line, "\n", silent_line);
    CHECK(has(talker_line, " end=connect-failed client_end=reset server_end=-"));
    CHECK(has(silent_line, " end=connect-failed client_end=fin server_end=-"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("kill session: bytes in flight mean a reset on both sides; a quiet session gets FINs") {
    ManualServer backend;
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    SUBCASE("bytes in flight") {
        UniqueFd client = connect_to(setup.port);
        REQUIRE(client.valid());
        const std::uint16_t client_port = local_port(client.get());
        UniqueFd server = backend.accept_one();
        REQUIRE(server.valid());
        // The server never reads: the client's bytes pile up in the sockets and in ringlb.
        CHECK(send_until_stalled(client.get()) > 0);
        const std::string id = only_session_id(setup.admin_port);
        REQUIRE_FALSE(id.empty());
        REQUIRE(admin_command(setup.admin_port, "kill session " + id).ok());
        CHECK(read_until_closed(client.get(), 5s).end == ReadEnd::Reset);
        CHECK(read_until_closed(server.get(), 5s).end == ReadEnd::Reset);
        const std::string line = connection_line(ringlb, client_port);
        INFO("connection log: ", line);
        CHECK(has(line, " end=admin client_end=reset server_end=reset"));
    }
    SUBCASE("quiet") {
        QuietSession session = open_quiet(setup.port, backend);
        const std::string id = only_session_id(setup.admin_port);
        REQUIRE_FALSE(id.empty());
        REQUIRE(admin_command(setup.admin_port, "kill session " + id).ok());
        CHECK(read_until_closed(session.client.get(), 5s).end == ReadEnd::Eof);
        CHECK(read_until_closed(session.server.get(), 5s).end == ReadEnd::Eof);
        const std::string line = connection_line(ringlb, session.client_port);
        INFO("connection log: ", line);
        CHECK(has(line, " end=admin client_end=fin server_end=fin"));
    }
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("clean sessions: an old version's session with bytes in flight is reset on both sides") {
    ManualServer backend;
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    UniqueFd client = connect_to(setup.port);
    REQUIRE(client.valid());
    const std::uint16_t client_port = local_port(client.get());
    UniqueFd server = backend.accept_one();
    REQUIRE(server.valid());
    CHECK(send_until_stalled(client.get()) > 0);
    const std::string modified = "modify rule {id=\"test\", mode=\"rr\", listen=[\"" + loopback_endpoint(setup.port) +
                                 "\"], servers=[\"" + backend.endpoint() + "\"]}";
    REQUIRE(admin_command(setup.admin_port, modified).ok());
    const AdminReply cleaned = admin_command(setup.admin_port, "clean sessions test");
    REQUIRE(cleaned.ok());
    CHECK(has(cleaned.body, "closed 1 session"));
    CHECK(read_until_closed(client.get(), 5s).end == ReadEnd::Reset);
    CHECK(read_until_closed(server.get(), 5s).end == ReadEnd::Reset);
    const std::string line = connection_line(ringlb, client_port);
    INFO("connection log: ", line);
    CHECK(has(line, " end=admin client_end=reset server_end=reset"));
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("graceful stop: at the deadline a half-closed session is reset, a quiet one gets FINs") {
    ManualServer backend;
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{backend.endpoint()}}));  // shutdown_timeout = 1s
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    HalfClosedSession waiting = open_half_closed(setup.port, backend);
    QuietSession quiet = open_quiet(setup.port, backend);
    REQUIRE(::kill(ringlb.pid(), SIGTERM) == 0);
    CHECK(read_until_closed(waiting.client.get(), 5s).end == ReadEnd::Reset);
    CHECK(reset_after_eof(waiting.server.get()));
    CHECK(read_until_closed(quiet.client.get(), 5s).end == ReadEnd::Eof);
    CHECK(read_until_closed(quiet.server.get(), 5s).end == ReadEnd::Eof);

    const ExitStatus status = ringlb.wait_exit(10s);
    CHECK(status.exited);
    CHECK(status.code == 0);
    const std::string waiting_line = connection_line(ringlb, waiting.client_port);
    const std::string quiet_line = connection_line(ringlb, quiet.client_port);
    INFO("connection log:\n", waiting_line, "\n", quiet_line);
    CHECK(has(waiting_line, " end=shutdown client_end=reset server_end=reset"));
    CHECK(has(quiet_line, " end=shutdown client_end=fin server_end=fin"));
}

TEST_CASE("a worker's fatal error: its half-closed sessions are reset, its quiet ones get FINs, and so on every worker") {
    // Worker 1's engine fails for good after 40 polls (a few seconds: an idle worker polls four
    // times a second); ringlb then exits 1, worker 0 stopping with it.
    ManualServer backend;
    Setup setup;
    RinglbOptions options;
    options.environment = {"RINGLB_FAULT=engine-poll-fails-after:40@1"};
    RinglbProcess ringlb(options, endings_config(setup, {{backend.endpoint()}}, "300s", {}, 2));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // Sessions land on either worker (the kernel spreads them); a few of each kind.
    std::vector<HalfClosedSession> waiting;
    std::vector<QuietSession> quiet;
    for (int i = 0; i < 4; ++i) {
        waiting.push_back(open_half_closed(setup.port, backend));
        quiet.push_back(open_quiet(setup.port, backend));
    }
    const ExitStatus status = ringlb.wait_exit(20s);
    INFO("ringlb ended with ", status.describe());
    CHECK(status.exited);
    CHECK(status.code == 1);
    REQUIRE(ringlb.log_text().find(" worker 1 failed: ") != std::string::npos);

    for (HalfClosedSession& session : waiting) {
        CAPTURE(session.client_port);
        CHECK(read_until_closed(session.client.get(), 5s).end == ReadEnd::Reset);
        CHECK(reset_after_eof(session.server.get()));
        const std::string line = connection_line(ringlb, session.client_port);
        INFO("connection log: ", line);
        CHECK((has(line, " end=error client_end=reset server_end=reset") ||
               has(line, " end=shutdown client_end=reset server_end=reset")));
    }
    for (QuietSession& session : quiet) {
        CAPTURE(session.client_port);
        CHECK(read_until_closed(session.client.get(), 5s).end == ReadEnd::Eof);
        CHECK(read_until_closed(session.server.get(), 5s).end == ReadEnd::Eof);
        const std::string line = connection_line(ringlb, session.client_port);
        INFO("connection log: ", line);
        CHECK((has(line, " end=error client_end=fin server_end=fin") ||
               has(line, " end=shutdown client_end=fin server_end=fin")));
    }
    // The failing worker's own sessions were ended by it, as an error.
    CHECK(ringlb.log_text().find(" end=error client_end=") != std::string::npos);
}

// A server's FIN that arrives behind its last bytes leaves with them (MSG_MORE, then shutdown):
// hostile readers must get no less. One that reads late gets every byte, then the FIN, and its
// own direction stays open; one that resets while the last bytes wait for it ends its session;
// a fresh client meanwhile is served whole at once.
TEST_CASE("a server's last bytes and FIN: a late reader gets them whole, then the FIN; a reader that resets ends its session") {
    std::string greeting(256 * 1024, '\0');
    for (size_t i = 0; i < greeting.size(); ++i) greeting[i] = static_cast<char>('a' + (i * 7 + i / 997) % 26);
    WriteFirstBackend backend(greeting);
    Setup setup;
    RinglbProcess ringlb(endings_config(setup, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    const auto stalled_client = [&] {
        UniqueFd client = connect_to(setup.port);
        const int small = 4096;
        ::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        return client;
    };
    UniqueFd late = stalled_client();
    UniqueFd resetter = stalled_client();
    REQUIRE(late.valid());
    REQUIRE(resetter.valid());
    const std::uint16_t late_port = local_port(late.get());
    const std::uint16_t resetter_port = local_port(resetter.get());
    std::this_thread::sleep_for(500ms);  // both paths fill; their servers have sent everything and their FINs

    UniqueFd fresh = connect_to(setup.port);
    REQUIRE(fresh.valid());
    const ReadResult served = read_until_closed(fresh.get(), 5s);
    CHECK(served.end == ReadEnd::Eof);
    CHECK(served.data.size() == greeting.size());
    CHECK((served.data == greeting));
    const std::uint16_t fresh_port = local_port(fresh.get());
    fresh.reset();

    const linger reset{1, 0};
    ::setsockopt(resetter.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    resetter.reset();

    const ReadResult late_read = read_until_closed(late.get(), 10s);
    CHECK(late_read.end == ReadEnd::Eof);
    CHECK(late_read.data.size() == greeting.size());
    CHECK((late_read.data == greeting));
    // Its own direction is still open after the server's FIN: the server gets what it sends now.
    CHECK(send_all(late.get(), "still here", 5s));
    ::shutdown(late.get(), SHUT_WR);
    CHECK(backend.wait_finished(3, 5s));

    const std::string late_line = connection_line(ringlb, late_port);
    const std::string resetter_line = connection_line(ringlb, resetter_port);
    INFO("late reader: ", late_line);
    INFO("resetting reader: ", resetter_line);
    CHECK(has(late_line, " down=262144 "));
    CHECK(has(late_line, " client_end=fin server_end=fin"));
    CHECK(has(resetter_line, " end=client-reset "));
    const std::vector<std::string> received = backend.received();
    CHECK(std::count(received.begin(), received.end(), "still here") == 1);
    CHECK(has(connection_line(ringlb, fresh_port), " client_end=fin server_end=fin"));
    CHECK(reply_value(admin_command(setup.admin_port, "show stats"), "active_sessions") == 0);
    CHECK_CLEAN_EXIT(ringlb);
}
