// ringlb command line: parse flags, load and check the config, then hand over to app::serve.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <optional>
#include <string>

#include "ringlb/app/server.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/util/log.hpp"

namespace {

struct Options {
    std::string config_path;
    std::optional<std::string> engine;
    std::optional<std::string> log_level;
    bool check = false;
};

ringlb::config::EngineChoice parse_engine(const std::string& text) {
    if (text == "uring") return ringlb::config::EngineChoice::Uring;
    if (text == "epoll") return ringlb::config::EngineChoice::Epoll;
    return ringlb::config::EngineChoice::Auto;
}

// Flags given on the command line win over the file (CLI11 has already checked their values).
void apply_overrides(const Options& options, ringlb::config::Config& config) {
    if (options.engine) config.global.engine = parse_engine(*options.engine);
    if (options.log_level) config.global.log_level = *ringlb::parse_log_level(*options.log_level);
}

void print_config_errors(const ringlb::config::ConfigError& error) {
    for (const auto& issue : error.issues()) std::cerr << issue.to_string() << '\n';
    const size_t count = error.issues().size();
    std::cerr << "ringlb: configuration rejected (" << count << " problem" << (count == 1 ? "" : "s") << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer that went away must not kill the forwarder
    ringlb::app::block_stop_signals();

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
        return ringlb::app::kExitBadConfig;
    }

    ringlb::config::Config config;
    try {
        config = ringlb::config::load_config_file(options.config_path);
    } catch (const ringlb::config::ConfigError& e) {
        print_config_errors(e);
        return ringlb::app::kExitBadConfig;
    }
    apply_overrides(options, config);
    if (options.check) {
        std::cout << ringlb::config::summarize(config) << '\n';
        return ringlb::app::kExitOk;
    }
    ringlb::Logger log(config.global.log_level);
    return ringlb::app::serve(config, log);
}
