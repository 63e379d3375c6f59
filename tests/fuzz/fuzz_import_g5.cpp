// Fuzz target: the G5 config import (config/import_g5.hpp), whose whole point is that its
// output is a ringlb config.
//
// Properties:
// - import_g5() returns TOML or throws ConfigError, nothing else;
// - the TOML it returns is accepted by parse_config() (a ConfigError there means the importer
//   wrote something the loader refuses: the import said "done" but the user cannot start
//   ringlb with the result), and that config survives the to_toml() round trip as in
//   fuzz_config.
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/config/import_g5.hpp"

namespace ringlb::fuzz {
namespace import_g5_target {

std::optional<std::string> import_or_reject(std::string_view g5_text) {
    try {
        return config::import_g5(g5_text, "fuzz.conf");
    } catch (const config::ConfigError&) {
        return std::nullopt;  // G5 text without a faithful ringlb equivalent: a correct outcome
    }
}

config::Config parse_imported(std::string_view g5_text, const std::string& toml) {
    try {
        return config::parse_config(toml, "fuzz-import");
    } catch (const config::ConfigError& error) {
        throw PropertyViolation(std::string("import_g5() output is refused by parse_config():\n") + error.what() +
                                "\n--- G5 input:\n" + std::string(g5_text) + "\n--- import_g5() output:\n" + toml);
    }
}

}  // namespace import_g5_target

inline void check_import_g5(std::string_view input) {
    const auto toml = import_g5_target::import_or_reject(input);
    if (!toml) return;
    const config::Config imported = import_g5_target::parse_imported(input, *toml);
    const std::string dumped = config::to_toml(imported);
    std::string redumped;
    try {
        redumped = config::to_toml(config::parse_config(dumped, "fuzz-import-dump"));
    } catch (const config::ConfigError& error) {
        throw PropertyViolation(std::string("to_toml() of an imported config does not parse again:\n") + error.what());
    }
    require(redumped == dumped, "to_toml() text of an imported config changed over a parse round trip");
}

}  // namespace ringlb::fuzz

RINGLB_FUZZ_ENTRY(ringlb::fuzz::check_import_g5)
