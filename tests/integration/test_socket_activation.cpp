// Socket activation: listeners the service manager opened and passed (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES, from fd 3 on) serve the listen addresses they are bound to instead of ringlb
// binding them. The test plays the service manager: it binds the sockets itself, without
// SO_REUSEPORT, so that ringlb could not bind the same addresses even if it tried.
#include <signal.h>
#include <sys/socket.h>

#include <fstream>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// The `accepted=` of each "worker N ..." line of `show stats`.
std::vector<long long> accepted_per_worker(std::uint16_t admin_port) {
    const AdminReply reply = admin_command(admin_port, "show stats");
    std::vector<long long> counts;
    for (size_t at = 0; (at = reply.body.find("\nworker ", at)) != std::string::npos; ++at) {
        const size_t line_end = reply.body.find('\n', at + 1);
        const size_t field = reply.body.find(" accepted=", at);
        if (field == std::string::npos || field > line_end) continue;
        counts.push_back(std::stoll(reply.body.substr(field + 10)));
    }
    return counts;
}

GlobalSpec with_admin(unsigned threads, std::uint16_t admin_port) {
    GlobalSpec global;
    global.threads = threads;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    return global;
}

// Whether a connection to `port` is taken by a listener (the kernel completes the handshake for
// a listening socket, whoever accepts it later); false when it is refused.
bool something_listens(std::uint16_t port) { return connect_to(port, Family::V4, 2s).valid(); }

void write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
}

}  // namespace

TEST_CASE("socket activation: two workers serve the passed listeners, an unmatched one is closed") {
    NameBackend web("web"), api("api");
    UniqueFd web_socket = listen_on_loopback(0), api_socket = listen_on_loopback(0), stray_socket = listen_on_loopback(0);
    const std::uint16_t web_port = local_port(web_socket.get()), api_port = local_port(api_socket.get());
    const std::uint16_t stray_port = local_port(stray_socket.get()), admin_port = find_free_port();

    RinglbOptions options;
    options.listen_fds = {web_socket.get(), api_socket.get(), stray_socket.get()};
    options.listen_fdnames = "web:api:stray";
    RinglbProcess ringlb(options, render_config(with_admin(2, admin_port),
                                                {one_server_rule("web", web_port, web.endpoint()),
                                                 one_server_rule("api", api_port, api.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.log_text().find("socket activation: 3 listening socket(s) from the service manager") != std::string::npos);
    CHECK(ringlb.log_text().find("inherited listening socket on " + loopback_endpoint(stray_port) +
                                 " matches no listen address: closed") != std::string::npos);
    stray_socket.reset();
    CHECK_FALSE(something_listens(stray_port));  // ringlb did not keep it open

    // Many clients at once, so that both workers find some waiting on the shared sockets.
    constexpr int kRounds = 20, kClientsPerRound = 20;
    for (int round = 0; round < kRounds; ++round) {
        std::vector<std::thread> clients;
        std::atomic<int> wrong{0};
        for (int i = 0; i < kClientsPerRound; ++i)
            clients.emplace_back([&, i] {
                const bool to_web = i % 2 == 0;
                if (fetch_name(to_web ? web_port : api_port) != (to_web ? "web" : "api")) ++wrong;
            });
        for (auto& client : clients) client.join();
        REQUIRE(wrong.load() == 0);
    }
    const std::vector<long long> accepted = accepted_per_worker(admin_port);
    INFO("accepted per worker: ", accepted.size() == 2 ? std::to_string(accepted[0]) + ", " + std::to_string(accepted[1]) : "?");
    REQUIRE(accepted.size() == 2);
    CHECK(accepted[0] + accepted[1] == kRounds * kClientsPerRound);
    CHECK(accepted[0] > 0);
    CHECK(accepted[1] > 0);

    CHECK_CLEAN_EXIT(ringlb);
    // ringlb closed its copies without shutting the sockets down: the service manager's still
    // listen, as they must for the next activation.
    CHECK(something_listens(web_port));
    CHECK(something_listens(api_port));
}

TEST_CASE("socket activation: an address dropped by a reload and added back is bound anew") {
    NameBackend web("web"), api("api");
    UniqueFd web_socket = listen_on_loopback(0), api_socket = listen_on_loopback(0);
    const std::uint16_t web_port = local_port(web_socket.get()), api_port = local_port(api_socket.get());
    RinglbOptions options;
    options.listen_fds = {web_socket.get(), api_socket.get()};
    const std::vector<RuleSpec> both{one_server_rule("web", web_port, web.endpoint()),
                                     one_server_rule("api", api_port, api.endpoint())};
    GlobalSpec global;
    global.threads = 2;
    RinglbProcess ringlb(options, render_config(global, both));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    api_socket.reset();  // ringlb's copies are the only ones now
    CHECK(fetch_name(api_port) == "api");

    write_file(ringlb.config_path(), render_config(global, {both[0]}));
    REQUIRE(::kill(ringlb.pid(), SIGHUP) == 0);
    REQUIRE(ringlb.wait_for_log("reloaded ", 10s));
    for (auto deadline = Clock::now() + 5s; something_listens(api_port) && Clock::now() < deadline;)
        std::this_thread::sleep_for(20ms);
    CHECK_FALSE(something_listens(api_port));
    CHECK(fetch_name(web_port) == "web");

    write_file(ringlb.config_path(), render_config(global, both));
    REQUIRE(::kill(ringlb.pid(), SIGHUP) == 0);
    for (auto deadline = Clock::now() + 5s; !something_listens(api_port) && Clock::now() < deadline;)
        std::this_thread::sleep_for(20ms);
    for (int i = 0; i < 10; ++i) CHECK(fetch_name(api_port) == "api");
    CHECK(fetch_name(web_port) == "web");
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("socket activation: the one-instance claim covers an activated listener") {
    NameBackend first_backend("first"), second_backend("second");
    UniqueFd socket = listen_on_loopback(0);
    const std::uint16_t port = local_port(socket.get());
    RinglbOptions options;
    options.listen_fds = {socket.get()};
    RinglbProcess first(options, simple_config(port, {{first_backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(first);
    REQUIRE_READY(first);

    GlobalSpec two_threads;
    two_threads.threads = 2;
    TempFile second_config(simple_config(port, {{second_backend.endpoint()}}, two_threads), ".toml");
    const RunResult second = run_to_exit({"-c", second_config.path(), "--engine", test_engine()}, 10s);
    INFO("second ringlb:\n", second.output);
    CHECK(second.status.exited);
    CHECK(second.status.code == 2);
    CHECK(second.output.find("is served by another ringlb process (pid " + std::to_string(first.pid()) + ")") !=
          std::string::npos);
    CHECK(fetch_name(port) == "first");
    CHECK_CLEAN_EXIT(first);
}

TEST_CASE("socket activation: variables meant for another process are ignored and the addresses bound") {
    NameBackend backend("bound");
    const std::uint16_t port = find_free_port();
    RinglbOptions options;
    options.environment = {"LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=web"};
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.log_text().find("LISTEN_FDS is for pid 1, not this process: ignored") != std::string::npos);
    CHECK(fetch_name(port) == "bound");
    CHECK_CLEAN_EXIT(ringlb);
}
