// ringlb_soak: a fault-injection soak against the real ringlb binary. Hundreds of concurrent
// scripted streams (1 B to 4 MiB each way, resets on either side, half-closes, slow readers)
// go through ringlb to backends that are killed and restarted, refuse, or accept and never answer.
// At the end every stream is judged from both ends, and ringlb must be back where it started:
// no session left, no descriptor leaked, memory within a stated bound.
//
//   ringlb_soak [--seconds 60] [--seed 1] [--engine epoll|uring] [--binary PATH]
//               [--clients 300] [--client-threads 4] [--threads 2] [--receive-buffers 1024]
//               [--zero-copy off|splice|auto]
//
// --engine and --binary default to $RINGLB_TEST_ENGINE and $RINGLB_BINARY, as in the
// integration tests. Exit status: 0 all invariants held, 1 a violation (each one printed),
// 2 bad usage or ringlb could not be started.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admin_client.hpp"
#include "config_text.hpp"
#include "prng_stream.hpp"
#include "proc_stats.hpp"
#include "ringlb_process.hpp"
#include "soak_backend.hpp"
#include "soak_client.hpp"
#include "soak_watch.hpp"

using namespace ringlb::soak;
namespace test = ringlb::test;

namespace {

// ringlb's receive buffers are 32 KiB each (buffer_size caps them lower; the soak keeps 64k).
constexpr long kReceiveBufferKib = 32;
// RSS allowed beyond baseline plus a fully touched receive pool: the session table and flow
// state of a few hundred sessions (well under 1 MiB), the admin port's buffers, and glibc's
// per-thread malloc arenas touching a few MiB each. Growth measured with 300 clients: ~5 MiB
// in all, most of it pool buffers; 16 MiB of slack leaves room without hiding a leak (a leak of
// one 32 KiB buffer per stream would pass the bound within a minute).
constexpr long kRssSlackKib = 16 * 1024;
constexpr auto kDrainTimeout = 100s;  // open streams may take this long to end after the run
constexpr auto kSettleTimeout = 20s;  // sessions and descriptors must be back within this

struct Options {
    unsigned seconds = 60;
    std::uint64_t seed = 1;
    std::string engine = test::test_engine();
    std::string binary = test::ringlb_binary();
    unsigned clients = 300;
    unsigned client_threads = 4;
    unsigned threads = 2;
    unsigned receive_buffers = 1024;
    std::string zero_copy = "off";  // the rule's zero_copy: "splice" runs every stream on the splice path
};

template <typename T>
bool parse_number(std::string_view text, T& out) {
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
    return error == std::errc{} && end == text.data() + text.size();
}

std::optional<Options> parse_options(int argc, char** argv) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (i + 1 >= argc) return std::nullopt;
        const std::string_view value = argv[++i];
        bool ok = true;
        if (flag == "--seconds") ok = parse_number(value, options.seconds);
        else if (flag == "--seed") ok = parse_number(value, options.seed);
        else if (flag == "--engine") options.engine = value;
        else if (flag == "--binary") options.binary = value;
        else if (flag == "--clients") ok = parse_number(value, options.clients);
        else if (flag == "--client-threads") ok = parse_number(value, options.client_threads);
        else if (flag == "--threads") ok = parse_number(value, options.threads);
        else if (flag == "--receive-buffers") ok = parse_number(value, options.receive_buffers);
        else if (flag == "--zero-copy") {
            options.zero_copy = value;
            ok = value == "off" || value == "splice" || value == "auto";
        } else ok = false;
        if (!ok) return std::nullopt;
    }
    if (options.client_threads == 0 || options.clients < options.client_threads || options.threads == 0) return std::nullopt;
    return options;
}

// Clients and backends together hold two descriptors per stream, and then some.
void raise_own_fd_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
}

struct Servers {
    std::vector<std::unique_ptr<StreamBackend>> good;
    BlackholeBackend blackhole;
    std::uint16_t refusing_port = test::find_free_port();  // nothing ever listens here
};

// One rule over every kind of server. The good ones weigh most so that most streams complete;
// short idle and down times keep streams that hit the blackhole, and servers that were killed,
// from stalling the run.
std::string soak_config(const Options& options, const Servers& servers, std::uint16_t port, std::uint16_t admin_port) {
    test::GlobalSpec global;
    global.threads = options.threads;
    global.log_level = "info";  // "ready" is an info line
    // One line per session with its end cause: the first thing to read when a stream fails.
    global.extra_lines = {"receive_buffers = " + std::to_string(options.receive_buffers), "log_connections = true"};
    global.trailing_lines = {"[admin]", "listen = \"" + test::loopback_endpoint(admin_port) + "\""};
    test::RuleSpec rule;
    rule.id = "soak";
    rule.listen = {test::loopback_endpoint(port)};
    // Short: blackholed streams end, and the stalling servers are cut. A healthy stream that
    // happens to stall this long (a busy backend thread draining megabytes from its socket) is
    // cut too, and must then end in a reset at both ends, never in a clean end.
    rule.timeout = std::to_string(kIdleTimeout.count()) + "s";
    rule.connect_timeout = "1s";
    rule.extra_lines = {"down_time = \"1s\"", "max_down_time = \"2s\"", "zero_copy = \"" + options.zero_copy + "\""};
    for (const auto& backend : servers.good) rule.servers.push_back({backend->endpoint(), 30});
    rule.servers.push_back({servers.blackhole.endpoint(), 1});
    rule.servers.push_back({test::loopback_endpoint(servers.refusing_port), 1});
    return test::render_config(global, {rule});
}

// Polls until `condition` holds or `timeout` passes.
template <typename Condition>
bool wait_until(Condition condition, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (condition()) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(100ms);
    }
}

// The descriptor count once it holds still: the admin connection that start_ringlb() used to
// ask for readiness may still be open inside ringlb for a moment after the client closed it.
std::size_t settled_fd_count(pid_t pid) {
    std::size_t count = test::open_fd_count(pid).value_or(0);
    int unchanged = 0;
    for (int sample = 0; sample < 30 && unchanged < 3; ++sample) {
        std::this_thread::sleep_for(100ms);
        const std::size_t now = test::open_fd_count(pid).value_or(0);
        unchanged = now == count ? unchanged + 1 : 0;
        count = now;
    }
    return count;
}

std::string log_tail(const test::RinglbProcess& ringlb) {
    const std::string log = ringlb.log_text();
    return log.size() > 4000 ? log.substr(log.size() - 4000) : log;
}

// What ringlb looked like before and after the run, judged against the bounds.
struct ProcessFigures {
    std::size_t fd_baseline = 0;
    std::size_t fd_end = 0;
    long rss_baseline_kib = 0;
    long rss_bound_kib = 0;
    StatsSample stats_end;
    bool stats_answered = false;
    long long pipes_taken = -1;  // over the whole run, all workers
    std::size_t backend_connections_end = 0;
};

class Soak {
public:
    explicit Soak(const Options& options) : options_(options) {}
    int run();

private:
    bool start_ringlb();
    void drive_clients();
    void settle(ProcessFigures& figures);
    void check(const ProcessFigures& figures, const MonitorFigures& watched, SoakTotals& totals);
    std::uint64_t minimum_stall_cuts() const;
    void check_connection_log(SoakTotals& totals) const;
    void print_summary(const ProcessFigures& figures, const MonitorFigures& watched, const SoakTotals& totals) const;
    void keep_log(const std::vector<std::string>& violations) const;

    Options options_;
    Ledger ledger_;
    Servers servers_;
    std::uint16_t port_ = test::find_free_port();
    std::uint16_t admin_port_ = test::find_free_port();
    std::unique_ptr<test::RinglbProcess> ringlb_;
    std::unique_ptr<Chaos> chaos_;
    std::uint64_t streams_started_ = 0;
    std::string exit_status_;  // how ringlb ended on SIGTERM
};

bool Soak::start_ringlb() {
    test::RinglbOptions process;
    process.engine = options_.engine;
    process.binary = options_.binary;
    ringlb_ = std::make_unique<test::RinglbProcess>(process, soak_config(options_, servers_, port_, admin_port_));
    if (!ringlb_->wait_ready(10s) || !wait_until([&] { return query_stats(admin_port_).has_value(); }, 5s)) {
        std::cerr << "soak: ringlb did not start (" << options_.binary << ", engine " << options_.engine << "):\n"
                  << log_tail(*ringlb_) << "\n";
        return false;
    }
    return true;
}

// Runs the client drivers (with the chaos schedule) to the end of their streams.
void Soak::drive_clients() {
    std::vector<StreamBackend*> victims;
    for (auto& backend : servers_.good) victims.push_back(backend.get());
    chaos_ = std::make_unique<Chaos>(victims, ringlb::test::derive_seed(options_.seed, 0xC4A05));

    const auto start = Clock::now();
    const auto stop_starting = start + std::chrono::seconds(options_.seconds);
    std::vector<std::unique_ptr<ClientDriver>> drivers;
    for (unsigned t = 0; t < options_.client_threads; ++t) {
        DriverSettings settings;
        settings.port = port_;
        settings.run_seed = options_.seed;
        settings.first_id = 1 + t;
        settings.id_stride = options_.client_threads;
        settings.concurrency = options_.clients / options_.client_threads;
        settings.stop_starting = stop_starting;
        drivers.push_back(std::make_unique<ClientDriver>(settings, ledger_));
    }
    // Progress every 10 s, so a long run shows it is alive (and where it stalls, if it does).
    auto next_report = start + 10s;
    const auto give_up = stop_starting + kDrainTimeout;
    for (;;) {
        std::uint64_t open = 0, started = 0;
        for (const auto& driver : drivers) {
            open += driver->open_streams();
            started += driver->started();
        }
        streams_started_ = started;
        const auto now = Clock::now();
        if (now >= stop_starting && open == 0) break;
        if (now >= give_up) break;  // the drivers' stream deadlines mark the stragglers as hung
        if (now >= next_report) {
            const auto rss = test::resident_kib_of(ringlb_->pid()).value_or(-1);
            std::printf("soak: t=%llds started=%llu open=%llu kills=%llu ringlb_rss=%ld KiB\n",
                        static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(now - start).count()),
                        static_cast<unsigned long long>(started), static_cast<unsigned long long>(open),
                        static_cast<unsigned long long>(chaos_->kills()), rss);
            std::fflush(stdout);
            next_report += 10s;
        }
        std::this_thread::sleep_for(200ms);
    }
    for (auto& driver : drivers) driver->join();
    chaos_->stop();  // every backend runs again from here on
}

// After the last stream: sessions and descriptors must come back to where they started.
void Soak::settle(ProcessFigures& figures) {
    const pid_t pid = ringlb_->pid();
    wait_until([&] {
        const auto stats = query_stats(admin_port_);
        figures.stats_answered = stats.has_value();
        if (stats) figures.stats_end = *stats;
        return stats && stats->active_sessions == 0 && stats->limits_active == 0;
    }, kSettleTimeout);
    figures.pipes_taken = test::pipes_taken(admin_port_);
    wait_until([&] {
        figures.fd_end = test::open_fd_count(pid).value_or(0);
        return figures.fd_end <= figures.fd_baseline;
    }, 5s);
    // ringlb has closed everything; the backends may still be reading what it sent last.
    wait_until([&] {
        figures.backend_connections_end = 0;
        for (const auto& backend : servers_.good) figures.backend_connections_end += backend->open_connections();
        return figures.backend_connections_end == 0;
    }, 10s);
}

// About 4 % of streams stall; each holds its client slot for the timeout and more. Runs of 30 s
// with 300 clients saw 160 to 432 cuts (fewer on a busier machine); one per second per 300
// clients, at least 10, leaves room for a loaded machine and still proves the case is exercised.
std::uint64_t Soak::minimum_stall_cuts() const {
    const std::uint64_t floor = std::uint64_t{options_.seconds} * options_.clients / 300;
    return std::max<std::uint64_t>(10, floor);
}

// ringlb's own account of the cuts: each stalled stream that both ends saw reset must have a
// connection log line saying the idle timeout ended it with a reset to each side. A client port
// may have served several streams in a run: any of its lines may be the one.
void Soak::check_connection_log(SoakTotals& totals) const {
    std::multimap<std::uint16_t, std::string> lines;
    const std::string log = ringlb_->log_text();
    const std::string key = " conn client=127.0.0.1:";
    for (std::size_t at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
        const std::size_t end = log.find('\n', at);
        std::uint16_t port = 0;
        parse_number(std::string_view(log).substr(at + key.size(), log.find(' ', at + key.size()) - at - key.size()), port);
        lines.emplace(port, log.substr(at, end == std::string::npos ? std::string::npos : end - at));
    }
    for (const std::uint16_t port : totals.stall_cut_ports) {
        const auto [first, last] = lines.equal_range(port);
        const bool logged = std::any_of(first, last, [](const auto& entry) {
            return entry.second.find(" end=idle-timeout client_end=reset server_end=reset") != std::string::npos;
        });
        if (!logged)
            totals.violations.push_back("client port " + std::to_string(port) + ": a stalled stream both ends saw reset " +
                                        "has no connection log line saying end=idle-timeout client_end=reset "
                                        "server_end=reset");
    }
}

void Soak::check(const ProcessFigures& figures, const MonitorFigures& watched, SoakTotals& totals) {
    check_connection_log(totals);
    auto& violations = totals.violations;
    if (totals.stalls_cut < minimum_stall_cuts())
        violations.push_back("only " + std::to_string(totals.stalls_cut) + " streams stalled past the idle timeout were " +
                             "seen cut, fewer than the " + std::to_string(minimum_stall_cuts()) + " required");
    if (totals.streams != streams_started_)
        violations.push_back("the ledger holds " + std::to_string(totals.streams) + " client records for " +
                             std::to_string(streams_started_) + " streams started");
    if (watched.ringlb_vanished) violations.push_back("ringlb's /proc entry vanished during the run (crash?)");
    if (watched.admin_failures > 0)
        violations.push_back("the admin port failed " + std::to_string(watched.admin_failures) + " of " +
                             std::to_string(watched.admin_queries) + " `show stats` queries during the run");
    if (!figures.stats_answered) violations.push_back("`show stats` did not answer after the run");
    // Otherwise a run meant for the splice path would pass on the copy path alone.
    if (options_.zero_copy != "off" && figures.pipes_taken <= 0)
        violations.push_back("zero_copy = \"" + options_.zero_copy + "\", yet no direction took a pipe (pipes_taken " +
                             std::to_string(figures.pipes_taken) + ")");
    if (figures.stats_end.active_sessions != 0)
        violations.push_back("active_sessions is " + std::to_string(figures.stats_end.active_sessions) +
                             " after every stream ended (expected 0)");
    if (figures.stats_end.limits_active != 0)
        violations.push_back("limits_active is " + std::to_string(figures.stats_end.limits_active) +
                             " after every stream ended (expected 0)");
    if (figures.fd_end > figures.fd_baseline)
        violations.push_back("ringlb has " + std::to_string(figures.fd_end) + " open descriptors after the run, " +
                             std::to_string(figures.fd_baseline) + " before it (leak)");
    if (figures.backend_connections_end != 0)
        violations.push_back(std::to_string(figures.backend_connections_end) +
                             " backend connections are still open although ringlb has no session left");
    if (watched.rss_max_kib > figures.rss_bound_kib)
        violations.push_back("ringlb's RSS reached " + std::to_string(watched.rss_max_kib) + " KiB, over the bound of " +
                             std::to_string(figures.rss_bound_kib) + " KiB");
    if (exit_status_ != "exit code 0")
        violations.push_back("ringlb did not stop cleanly on SIGTERM: " + exit_status_);
}

void Soak::print_summary(const ProcessFigures& figures, const MonitorFigures& watched, const SoakTotals& totals) const {
    const auto mib = [](std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); };
    std::printf("soak summary: engine=%s seed=%llu seconds=%u clients=%u threads=%u zero_copy=%s\n",
                options_.engine.c_str(), static_cast<unsigned long long>(options_.seed), options_.seconds,
                options_.clients, options_.threads, options_.zero_copy.c_str());
    std::printf("  streams %llu: ok %llu (%llu with a planned early server FIN), resets %llu (client %llu, server %llu, "
                "backend killed %llu, stalled server %llu, other %llu), unserved %llu\n",
                static_cast<unsigned long long>(totals.streams), static_cast<unsigned long long>(totals.completed),
                static_cast<unsigned long long>(totals.completed_early), static_cast<unsigned long long>(totals.resets),
                static_cast<unsigned long long>(totals.resets_by_client), static_cast<unsigned long long>(totals.resets_by_server),
                static_cast<unsigned long long>(totals.resets_by_kill), static_cast<unsigned long long>(totals.resets_by_stall),
                static_cast<unsigned long long>(totals.resets_other), static_cast<unsigned long long>(totals.unserved));
    std::printf("  stalled past the %llds idle timeout: %llu served, %llu cut with a reset at both ends (at least %llu "
                "required)\n",
                static_cast<long long>(kIdleTimeout.count()), static_cast<unsigned long long>(totals.stalled),
                static_cast<unsigned long long>(totals.stalls_cut), static_cast<unsigned long long>(minimum_stall_cuts()));
    std::printf("  bytes verified: up %.1f MiB, down %.1f MiB; backend kills %llu; blackhole connections %llu; "
                "headerless backend connections %llu\n",
                mib(totals.bytes_up), mib(totals.bytes_down), static_cast<unsigned long long>(chaos_ ? chaos_->kills() : 0),
                static_cast<unsigned long long>(servers_.blackhole.accepted()), static_cast<unsigned long long>(totals.anonymous));
    std::printf("  fds baseline %zu end %zu max %zu; rss baseline %ld KiB max %ld KiB bound %ld KiB; "
                "active_sessions max %lld end %lld; limits_active end %lld; pipes taken %lld; admin queries %llu "
                "failed %llu; ringlb %s\n",
                figures.fd_baseline, figures.fd_end, watched.fd_max, figures.rss_baseline_kib, watched.rss_max_kib,
                figures.rss_bound_kib, watched.sessions_max, figures.stats_end.active_sessions,
                figures.stats_end.limits_active, figures.pipes_taken, static_cast<unsigned long long>(watched.admin_queries),
                static_cast<unsigned long long>(watched.admin_failures), exit_status_.c_str());
    constexpr std::size_t kShown = 25;
    for (std::size_t i = 0; i < totals.violations.size() && i < kShown; ++i)
        std::printf("VIOLATION: %s\n", totals.violations[i].c_str());
    if (totals.violations.size() > kShown) std::printf("... and %zu more violations\n", totals.violations.size() - kShown);
    std::printf("soak %s: %zu violations\n", totals.violations.empty() ? "PASSED" : "FAILED", totals.violations.size());
}

// ringlb's log (with one line per session, found by the client_port of a violation) outlives the
// run when something failed: the RinglbProcess removes its own copy.
void Soak::keep_log(const std::vector<std::string>& violations) const {
    const char* dir = std::getenv("TMPDIR");
    const std::string path = std::string(dir && *dir ? dir : "/tmp") + "/ringlb-soak-" + options_.engine +
                             (options_.zero_copy == "off" ? "" : "-" + options_.zero_copy) + "-seed" +
                             std::to_string(options_.seed) + ".log";
    std::ofstream(path) << ringlb_->log_text();
    std::ofstream every(path + ".violations");
    for (const std::string& violation : violations) every << violation << "\n";
    std::printf("ringlb log kept in %s, every violation in %s.violations\n", path.c_str(), path.c_str());
}

int Soak::run() {
    for (int i = 0; i < 3; ++i) servers_.good.push_back(std::make_unique<StreamBackend>(options_.seed, ledger_));
    if (!start_ringlb()) return 2;

    ProcessFigures figures;
    const pid_t pid = ringlb_->pid();
    figures.fd_baseline = settled_fd_count(pid);
    figures.rss_baseline_kib = test::resident_kib_of(pid).value_or(0);
    // Worst case every worker touches its whole receive pool once; beyond that only the slack.
    figures.rss_bound_kib = figures.rss_baseline_kib +
                            static_cast<long>(options_.threads) * options_.receive_buffers * kReceiveBufferKib + kRssSlackKib;

    Monitor monitor(pid, admin_port_);
    drive_clients();
    settle(figures);
    monitor.stop();
    MonitorFigures watched = monitor.figures();

    const bool alive = ringlb_->running();
    exit_status_ = alive ? ringlb_->stop(SIGTERM).describe() : "died during the run: " + ringlb_->wait_exit(0ms).describe();
    SoakTotals totals = ledger_.judge();
    check(figures, watched, totals);
    print_summary(figures, watched, totals);
    if (!totals.violations.empty()) keep_log(totals.violations);
    return totals.violations.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const auto options = parse_options(argc, argv);
    if (!options) {
        std::cerr << "usage: ringlb_soak [--seconds N] [--seed N] [--engine epoll|uring] [--binary PATH]\n"
                     "                   [--clients N] [--client-threads N] [--threads N] [--receive-buffers N]\n"
                     "                   [--zero-copy off|splice|auto]\n";
        return 2;
    }
    // A peer's reset must show up as EPIPE from send(), not kill the soak.
    ::signal(SIGPIPE, SIG_IGN);
    raise_own_fd_limit();
    try {
        Soak soak(*options);
        return soak.run();
    } catch (const std::exception& error) {
        std::cerr << "soak: " << error.what() << "\n";
        return 2;
    }
}
