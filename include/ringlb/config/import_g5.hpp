#pragma once
// Import of G5 forwarder configs: translates G5's one-line-per-rule syntax
//   id MODE [( timeout N )] client-pattern [( maxclients N )]... - listen-addr... > server-addr... ;
// plus the global `( maxsessions_per_ip N )` into ringlb TOML that parse_config() accepts.
// The mapping decisions are documented at the top of src/config/import_g5.cpp.
#include <string>
#include <string_view>

#include "ringlb/config/config.hpp"

namespace ringlb::config {

// Returns the TOML text, starting with a comment naming `source_name`. Throws ConfigError with
// every problem found (file = source_name, line and column of the G5 text, key = the rule id or
// the global setting concerned) when some part has no faithful ringlb equivalent or is malformed.
std::string import_g5(std::string_view g5_text, std::string_view source_name);

}  // namespace ringlb::config
