// Fuzz target: the TOML config loader and validator, and the to_toml() writer behind
// `dump rules` and the reload diff.
//
// Properties:
// - parse_config() either returns a Config or throws ConfigError; any other exception (from
//   toml++, from a std::stoi somewhere, an out_of_range ...) is a bug, since the caller only
//   catches ConfigError and would die on a bad file instead of printing file:line:column.
// - A config that parsed, written with to_toml(), parses again, and writing that gives the same
//   text: `dump rules` output can be fed back as a config file, and the reload diff (which
//   compares rule_to_toml texts) sees no change where there is none.
//
// Inputs that would run into a known bug of toml++ 3.3 itself are skipped: see
// reaches_known_toml_bug() in fuzz_common.hpp.
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "ringlb/config/config.hpp"

namespace ringlb::fuzz {
namespace config_target {

std::optional<config::Config> parse_or_reject(std::string_view text) {
    try {
        return config::parse_config(text, "fuzz");
    } catch (const config::ConfigError&) {
        return std::nullopt;  // a rejected file is a correct outcome
    }
}

config::Config reparse_dump(const std::string& dumped) {
    try {
        return config::parse_config(dumped, "fuzz-dump");
    } catch (const config::ConfigError& error) {
        throw PropertyViolation(std::string("to_toml() output does not parse again:\n") + error.what() +
                                "\n--- to_toml() output:\n" + dumped);
    }
}

}  // namespace config_target

inline void check_config(std::string_view input) {
    const auto parsed = config_target::parse_or_reject(input);
    if (!parsed) return;
    const std::string dumped = config::to_toml(*parsed);
    const std::string redumped = config::to_toml(config_target::reparse_dump(dumped));
    require(redumped == dumped,
            "to_toml() text changed over a parse round trip\n--- first:\n" + dumped + "--- second:\n" + redumped);
    (void)config::summarize(*parsed);  // reads every rule and listener: cheap extra coverage
}

}  // namespace ringlb::fuzz

RINGLB_FUZZ_ENTRY_SKIPPING(ringlb::fuzz::check_config, ringlb::fuzz::reaches_known_toml_bug)
