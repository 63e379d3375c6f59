// The open file limit against the real binary: ringlb raises its soft limit to the hard one,
// warns when the limit is below what max_sessions needs, and when clients outnumber its
// descriptors it drops the excess at once, counts and logs every one, and keeps its admin and
// metrics ports answering all along.
#include <atomic>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "client_burst.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

GlobalSpec with_admin_and_metrics(std::uint16_t admin_port, std::uint16_t metrics_port,
                                  std::vector<std::string> extra_lines = {}) {
    GlobalSpec global;
    global.extra_lines = std::move(extra_lines);
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\"", "[metrics]",
                             "listen = \"" + loopback_endpoint(metrics_port) + "\""};
    return global;
}

// Keeps new clients arriving (and going) so the data path stays short of descriptors.
class Crowd {
public:
    explicit Crowd(std::uint16_t port) : thread_([this, port] { run(port); }) {}
    ~Crowd() {
        stopping_ = true;
        thread_.join();
    }

private:
    void run(std::uint16_t port) {
        std::vector<UniqueFd> waves[2];
        for (unsigned turn = 0; !stopping_; ++turn) {
            auto& wave = waves[turn % 2];
            wave.clear();  // the wave before last goes; ten new clients come
            for (int i = 0; i < 10; ++i) wave.push_back(start_connect(port));
            std::this_thread::sleep_for(20ms);
        }
    }

    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace

TEST_CASE("descriptors: under ulimit -n 40, clients beyond it are dropped, counted and logged; admin and metrics answer") {
    constexpr unsigned kClients = 25;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port(), metrics_port = find_free_port();
    RinglbOptions options;
    options.open_files_limit = 40;
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}, with_admin_and_metrics(admin_port, metrics_port)));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.wait_for_log("open file limit 40 is below", 1s));  // max_sessions = 100000 needs far more

    std::vector<UniqueFd> held;
    const BurstOutcome outcome = echo_burst(port, kClients, held);
    INFO("served ", outcome.served, ", closed ", outcome.closed, ", unanswered ", outcome.unanswered);
    CHECK(outcome.served > 0);
    CHECK(outcome.served < kClients);
    CHECK(outcome.unanswered == 0);
    CHECK(outcome.served + outcome.closed == kClients);
    CHECK(ringlb.wait_for_log("out of file descriptors: ", 2s));

    // More clients keep coming while the admin and metrics ports are asked, ten times each.
    {
        Crowd crowd(port);
        std::this_thread::sleep_for(200ms);
        for (int i = 0; i < 10; ++i) {
            CAPTURE(i);
            const auto asked = Clock::now();
            const AdminReply stats = admin_command(admin_port, "show stats");
            CHECK(stats.ok());
            CHECK(Clock::now() - asked < 1s);
            CHECK(reply_value(stats, "active_sessions") == static_cast<long long>(outcome.served));
            const auto dropped = reply_value(stats, "dropped_no_fd");
            REQUIRE(dropped);
            CHECK(*dropped >= static_cast<long long>(outcome.closed));  // every client turned away is counted
            const std::string metrics = http_get(metrics_port, "/metrics", 1s);
            CHECK(metrics.find(" 200 ") != std::string::npos);
            CHECK(metrics.find("ringlb_clients_dropped_no_fd_total{stage=\"accept\"}") != std::string::npos);
        }
    }
    // The sessions it holds were never disturbed.
    for (auto& client : held) {
        CHECK(send_all(client.get(), "again\n"));
        CHECK(read_exactly(client.get(), 6, 2s).data == "again\n");
    }
    CHECK(ringlb.running());
    held.clear();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("descriptors: the soft open file limit is raised to the hard one at start") {
    rlimit current{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &current) == 0);
    if (current.rlim_max < 200) {
        MESSAGE("skipped: the hard open file limit here is only ", current.rlim_max);
        return;
    }
    constexpr unsigned kClients = 25;  // 50 descriptors and more: beyond a soft limit of 40
    EchoBackend backend;
    const std::uint16_t port = find_free_port();
    RinglbOptions options;
    options.open_files_soft_limit = 40;
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.log_text().find("open file limit raised from 40 to " + std::to_string(current.rlim_max)) !=
          std::string::npos);

    std::vector<UniqueFd> held;
    const BurstOutcome outcome = echo_burst(port, kClients, held);
    CHECK(outcome.served == kClients);
    held.clear();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("descriptors: a warning when the limit is below what max_sessions needs, none when it is enough") {
    EchoBackend backend;
    for (const unsigned max_sessions : {1000u, 50u}) {
        CAPTURE(max_sessions);
        const std::uint16_t port = find_free_port();
        RinglbOptions options;
        options.open_files_limit = 256;  // 50 sessions need 2 x 50 + 16 reserved + 64 = 180
        GlobalSpec global;
        global.extra_lines = {"max_sessions = " + std::to_string(max_sessions)};
        RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}, global));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        const std::string log = ringlb.log_text();
        if (max_sessions == 1000)
            CHECK(log.find("open file limit 256 is below the 2080 that max_sessions = 1000 needs") != std::string::npos);
        else
            CHECK(log.find("is below the") == std::string::npos);
        CHECK_CLEAN_EXIT(ringlb);
    }
}
