// Timer memory follows live sessions, not the connection rate times the timeout: 100,000 short
// sessions on a rule with a one-hour idle timeout leave ringlb's memory where it was, and the
// armed timers (show stats timers_armed) never exceed two per live session.
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "admin_client.hpp"
#include "backends.hpp"
#include "config_text.hpp"
#include "proc_stats.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// `total` sessions from `threads` clients in parallel, each: connect, one byte echoed, close.
// The client ends each with a reset (SO_LINGER 0), which ringlb passes on to the backend: no
// side keeps a TIME_WAIT entry, so 100,000 connections in a few seconds never run out of ports.
unsigned run_short_sessions(std::uint16_t port, unsigned total, unsigned threads) {
    std::atomic<unsigned> next{0};
    std::atomic<unsigned> failed{0};
    std::vector<std::thread> clients;
    for (unsigned t = 0; t < threads; ++t) {
        clients.emplace_back([&] {
            while (next.fetch_add(1) < total) {
                UniqueFd client = connect_to(port, Family::V4, 5s);
                const bool ok = client.valid() && send_all(client.get(), "x", 5s) &&
                                read_exactly(client.get(), 1, 5s).data == "x";
                if (!ok) ++failed;
                if (client.valid()) {
                    const linger abortive{1, 0};
                    ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
                }
            }
        });
    }
    for (auto& client : clients) client.join();
    return failed.load();
}

struct TimerSample {
    long long timers = 0;
    long long sessions = 0;
};

// Samples show stats every 50 ms until stopped; keeps every sample.
class TimerSampler {
public:
    explicit TimerSampler(std::uint16_t admin_port) : thread_([this, admin_port] { run(admin_port); }) {}
    ~TimerSampler() { stop(); }
    void stop() {
        stopping_ = true;
        if (thread_.joinable()) thread_.join();
    }
    const std::vector<TimerSample>& samples() const { return samples_; }

private:
    void run(std::uint16_t admin_port) {
        while (!stopping_) {
            const AdminReply stats = admin_command(admin_port, "show stats");
            const auto timers = reply_value(stats, "timers_armed");
            const auto sessions = reply_value(stats, "active_sessions");
            samples_.push_back({timers.value_or(-1), sessions.value_or(-1)});
            std::this_thread::sleep_for(50ms);
        }
    }

    std::atomic<bool> stopping_{false};
    std::vector<TimerSample> samples_;
    std::thread thread_;
};

bool settles_at_zero(std::uint16_t admin_port, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        const AdminReply stats = admin_command(admin_port, "show stats");
        if (reply_value(stats, "active_sessions") == 0 && reply_value(stats, "timers_armed") == 0) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(50ms);
    }
}

}  // namespace

TEST_SUITE("scale") {
TEST_CASE("timers: 100,000 short sessions with timeout = 1h: memory stays put, at most two timers per live session") {
    constexpr unsigned kWarmUp = 5000, kSessions = 100000, kClients = 8;
    EchoBackend backend;
    const std::uint16_t port = find_free_port(), admin_port = find_free_port();
    RuleSpec rule;
    rule.listen = {loopback_endpoint(port)};
    rule.servers = {{backend.endpoint()}};
    rule.timeout = "1h";
    GlobalSpec global;
    global.trailing_lines = {"[admin]", "listen = \"" + loopback_endpoint(admin_port) + "\""};
    RinglbProcess ringlb(render_config(global, {rule}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // A first round brings the session table, engine and allocator to their working size.
    REQUIRE(run_short_sessions(port, kWarmUp, kClients) == 0);
    CHECK(settles_at_zero(admin_port, 10s));
    const long rss_before = resident_kib_of(ringlb.pid()).value_or(0);

    const auto started = Clock::now();
    TimerSampler sampler(admin_port);
    const unsigned failed = run_short_sessions(port, kSessions, kClients);
    sampler.stop();
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    CHECK(failed == 0);
    CHECK(settles_at_zero(admin_port, 10s));
    const long rss_after = resident_kib_of(ringlb.pid()).value_or(0);

    long long most_timers = 0;
    unsigned over = 0, unanswered = 0;
    for (const TimerSample& sample : sampler.samples()) {
        if (sample.timers < 0 || sample.sessions < 0) ++unanswered;  // no reply, or no gauge in it
        most_timers = std::max(most_timers, sample.timers);
        if (sample.timers > 2 * sample.sessions) ++over;
    }
    INFO(kSessions, " sessions in ", elapsed.count(), " ms; RSS before ", rss_before, " KiB, after ", rss_after,
         " KiB; ", sampler.samples().size(), " samples, most timers armed ", most_timers, ", samples above two per session ",
         over);
    CHECK(sampler.samples().size() > 10);
    CHECK(unanswered == 0);
    CHECK(over == 0);
    CHECK(rss_after - rss_before <= 1024);
    CHECK(reply_value(admin_command(admin_port, "show stats"), "sessions_ended") == kWarmUp + kSessions);
    MESSAGE(kSessions, " sessions in ", elapsed.count(), " ms; RSS before ", rss_before, " KiB, after ", rss_after,
            " KiB; most timers armed at once ", most_timers);
    CHECK_CLEAN_EXIT(ringlb);
}
}  // TEST_SUITE("scale")
