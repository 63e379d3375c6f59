// ringlb command line: parse flags, load the config, pick the engine, serve until a signal.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "ringlb/config/config.hpp"
#include "ringlb/core/forwarder.hpp"
#include "ringlb/engine/factory.hpp"
#include "ringlb/util/log.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitRuntimeFailure = 1;
constexpr int kExitBadConfig = 2;

struct Options {
    std::string config_path;
    std::optional<std::string> engine;
    std::optional<std::string> log_level;
    bool check = false;
};

std::optional<ringlb::config::EngineChoice> parse_engine(const std::string& text) {
    if (text == "auto") return ringlb::config::EngineChoice::Auto;
    if (text == "uring") return ringlb::config::EngineChoice::Uring;
    if (text == "epoll") return ringlb::config::EngineChoice::Epoll;
    return std::nullopt;
}

// Flags given on the command line win over the file.
void apply_overrides(const Options& options, ringlb::config::Config& config) {
    if (options.engine) config.global.engine = *parse_engine(*options.engine);
    if (options.log_level) config.global.log_level = *ringlb::parse_log_level(*options.log_level);
}

ringlb::engine::EngineOptions engine_options(const ringlb::config::GlobalConfig& global) {
    ringlb::engine::EngineOptions options;
    options.buffer_size = std::min<uint32_t>(options.buffer_size, global.buffer_size);
    return options;
}

// Waits for SIGINT/SIGTERM on its own thread (they are blocked everywhere else) and raises `stop`.
class SignalWatcher {
public:
    explicit SignalWatcher(std::atomic<bool>& stop, ringlb::Logger& log)
        : thread_([this, &stop, &log](std::stop_token token) { watch(token, stop, log); }) {}

    static void block_in_this_thread() {
        sigset_t set = handled();
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
    }

private:
    static sigset_t handled() {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        return set;
    }
    static void watch(const std::stop_token& token, std::atomic<bool>& stop, ringlb::Logger& log) {
        const sigset_t set = handled();
        const timespec poll_interval{0, 200 * 1000 * 1000};
        while (!token.stop_requested()) {
            const int signal = sigtimedwait(&set, nullptr, &poll_interval);
            if (signal > 0) {
                log.info("received ", signal == SIGINT ? "SIGINT" : "SIGTERM", ": stopping");
                stop.store(true);
                return;
            }
        }
    }

    std::jthread thread_;
};

int serve(ringlb::config::Config config) {
    ringlb::Logger log(config.global.log_level);
    ringlb::engine::EngineSelection selection;
    try {
        selection = ringlb::engine::make_engine(config.global.engine, engine_options(config.global));
    } catch (const std::exception& e) {
        log.error("engine=uring requested but cannot run: ", e.what());
        return kExitRuntimeFailure;
    }
    log.info(selection.description);
    try {
        ringlb::core::Forwarder forwarder(config, *selection.engine, log);
        std::atomic<bool> stop{false};
        SignalWatcher watcher(stop, log);
        forwarder.start_accepting();
        log.info("ready: ", forwarder.listener_count(), " listeners, ", config.rules.size(), " rules (",
                 config.source, ")");
        forwarder.run(stop);
        const auto& stats = forwarder.stats();
        log.info("stopped: ", stats.accepted, " accepted, ", stats.sessions_ended, " sessions ended, ",
                 forwarder.active_sessions(), " still open, ", stats.connect_failures, " connect failures, ",
                 stats.rejected_no_rule + stats.rejected_max_sessions + stats.rejected_per_ip, " rejected");
        return kExitOk;
    } catch (const ringlb::core::ListenError& e) {
        log.error(e.what());
        return kExitBadConfig;
    } catch (const std::exception& e) {
        log.error("fatal: ", e.what());
        return kExitRuntimeFailure;
    }
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer that went away must not kill the forwarder
    SignalWatcher::block_in_this_thread();

    Options options;
    CLI::App app{"ringlb: a TCP load-balancing forwarder built on io_uring"};
    app.set_version_flag("--version", std::string("ringlb ") + RINGLB_VERSION);
    app.add_option("-c,--config", options.config_path, "configuration file (TOML)")->required();
    app.add_option("--engine", options.engine, "engine: auto | uring | epoll (overrides [global] engine)")
        ->check(CLI::IsMember({"auto", "uring", "epoll"}));
    app.add_option("--log-level", options.log_level, "error | warn | info | debug (overrides [global] log_level)")
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
    app.add_flag("--check", options.check, "validate the configuration, print a summary and exit");
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return kExitBadConfig;
    }

    ringlb::config::Config config;
    try {
        config = ringlb::config::load_config_file(options.config_path);
    } catch (const ringlb::config::ConfigError& e) {
        for (const auto& issue : e.issues()) std::cerr << issue.to_string() << '\n';
        std::cerr << "ringlb: configuration rejected (" << e.issues().size() << " problem"
                  << (e.issues().size() == 1 ? "" : "s") << ")\n";
        return kExitBadConfig;
    }
    apply_overrides(options, config);
    if (options.check) {
        std::cout << ringlb::config::summarize(config) << '\n';
        return kExitOk;
    }
    return serve(std::move(config));
}
