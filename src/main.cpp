// ringlb command line: parse flags, load and check the config, then hand over to app::serve.
// Two subcommands: `ringlb ctl ...` talks to a running ringlb's admin port, `ringlb import-g5`
// converts a G5 config.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "ringlb/app/ctl.hpp"
#include "ringlb/app/privileges.hpp"
#include "ringlb/app/server.hpp"
#include "ringlb/app/signals.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/config/import_g5.hpp"
#include "ringlb/util/log.hpp"

namespace {

struct Options {
    std::string config_path;
    std::optional<std::string> engine;
    std::optional<std::string> log_level;
    bool check = false;
    // ctl
    std::string admin_address = "127.0.0.1:9900";
    std::string token;
    std::vector<std::string> command;
    // import-g5
    std::string g5_file;
};

std::string env_or(const char* name, std::string fallback) {
    const char* value = std::getenv(name);
    return value && *value ? std::string(value) : std::move(fallback);
}

int import_g5(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        std::cerr << "ringlb import-g5: cannot read " << path << '\n';
        return ringlb::app::kExitBadConfig;
    }
    std::ostringstream text;
    text << in.rdbuf();
    try {
        std::cout << ringlb::config::import_g5(text.str(), path);
        return ringlb::app::kExitOk;
    } catch (const ringlb::config::ConfigError& e) {
        for (const auto& issue : e.issues()) std::cerr << issue.to_string() << '\n';
        return ringlb::app::kExitBadConfig;
    }
}

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

// What only this machine can tell: `user` must name an account here. "" when all is well.
std::string system_problem(const ringlb::config::Config& config) {
    if (config.global.user.empty()) return {};
    try {
        ringlb::app::check_user_exists(config.global.user);
    } catch (const ringlb::app::PrivilegeError& e) {
        return config.source + ": " + e.what();
    }
    return {};
}

void print_config_errors(const ringlb::config::ConfigError& error) {
    for (const auto& issue : error.issues()) std::cerr << issue.to_string() << '\n';
    const size_t count = error.issues().size();
    std::cerr << "ringlb: configuration rejected (" << count << " problem" << (count == 1 ? "" : "s") << ")\n";
}

int run(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer that went away must not kill the forwarder
    ringlb::app::block_control_signals();

    Options options;
    CLI::App app{"ringlb: a TCP load-balancing forwarder built on io_uring"};
    app.set_version_flag("--version", std::string("ringlb ") + RINGLB_VERSION);
    app.add_option("-c,--config", options.config_path, "configuration file (TOML)");
    app.add_option("--engine", options.engine, "engine: auto | uring | epoll (overrides [global] engine)")
        ->check(CLI::IsMember({"auto", "uring", "epoll"}));
    app.add_option("--log-level", options.log_level, "error | warn | info | debug (overrides [global] log_level)")
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
    app.add_flag("--check", options.check, "validate the configuration, print a summary and exit");

    options.admin_address = env_or("RINGLB_ADMIN", options.admin_address);
    options.token = env_or("RINGLB_TOKEN", "");
    CLI::App* ctl = app.add_subcommand("ctl", "send one command to a running ringlb's admin port and print the reply");
    ctl->add_option("--admin", options.admin_address, "admin address: host:port or unix:/path (env RINGLB_ADMIN)")
        ->capture_default_str();
    ctl->add_option("--token", options.token, "admin token, when [admin] token is set (env RINGLB_TOKEN)");
    ctl->add_option("command", options.command, "the command, e.g.: show rules")->required();
    CLI::App* import = app.add_subcommand("import-g5", "convert a G5 config file to ringlb TOML on stdout");
    import->add_option("file", options.g5_file, "the G5 config file")->required();
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return ringlb::app::kExitBadConfig;
    }
    if (ctl->parsed()) return ringlb::app::run_ctl(options.admin_address, options.token, options.command);
    if (import->parsed()) return import_g5(options.g5_file);
    if (options.config_path.empty()) {
        std::cerr << "ringlb: -c/--config is required (see --help)\n";
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
    if (const std::string problem = system_problem(config); !problem.empty()) {
        std::cerr << problem << "\nringlb: configuration rejected (1 problem)\n";
        return ringlb::app::kExitBadConfig;
    }
    if (options.check) {
        for (const auto& warning : config.warnings) std::cerr << "warning: " << warning.to_string() << '\n';
        std::cout << ringlb::config::summarize(config) << '\n';
        return ringlb::app::kExitOk;
    }
    ringlb::Logger log(config.global.log_level);
    // Every line of the stream in one format, so that a JSON log collector never sees a text line.
    if (config.global.log_format == ringlb::config::LogFormat::Json) log.set_format(ringlb::Logger::Format::Json);
    if (!config.global.log_file.empty()) {
        try {
            log.open_file(config.global.log_file);
        } catch (const std::exception& e) {
            std::cerr << "ringlb: " << e.what() << '\n';
            return ringlb::app::kExitBadConfig;
        }
    }
    for (const auto& warning : config.warnings) log.warn("config: ", warning.to_string());
    try {
        return ringlb::app::serve(options.config_path, std::move(config), log,
                                  [options](ringlb::config::Config& next) { apply_overrides(options, next); });
    } catch (const std::exception& e) {  // a last resort, written in the log's own format
        log.error("stopping: ", e.what());
        return ringlb::app::kExitRuntimeFailure;
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // a last resort: every expected failure has its own message
        std::cerr << "ringlb: " << e.what() << '\n';
        return ringlb::app::kExitRuntimeFailure;
    }
}
