#pragma once
// Writing the running configuration back to its file, for the admin port.
#include <string>

namespace ringlb::app {

// Writes `text` to `path` so that a crash leaves either the old or the new file, never half of
// one. Returns an error message naming what failed, or "" on success.
std::string write_config_file(const std::string& path, const std::string& text);

}  // namespace ringlb::app
