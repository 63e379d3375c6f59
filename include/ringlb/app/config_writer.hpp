#pragma once
// Writing the running configuration back to its file, for the admin port's `write config`.
#include <string>

namespace ringlb::app {

// How many earlier versions `write config` keeps: FILE.1 (the newest) .. FILE.5.
inline constexpr unsigned kConfigBackups = 5;

struct ConfigWriteResult {
    std::string error;   // what failed and why; empty on success
    std::string backup;  // where the previous file was kept ("" when there was none)
    bool ok() const { return error.empty(); }
};

// Replaces the file at `path` with `text` so that a crash leaves either the old or the new file,
// never half of one, and nothing outside the file's directory is ever opened or written:
// - refused, with the file left untouched, when `path` is a symbolic link (a mounted ConfigMap, a
//   file managed elsewhere), not a regular file, read-only, or not writable by this process (as
//   after dropping privileges), or when the new file cannot get the old one's owner;
// - the new text goes to a temporary file created exclusively under a random name in the same
//   directory (O_EXCL | O_NOFOLLOW: a planted symlink is never followed), with the old file's
//   owner and mode (0600 for a new file), then fsync, rename over `path`, fsync of the directory;
// - the previous file is kept as path.1, earlier ones shift to path.2 .. path.<backups>.
ConfigWriteResult write_config_file(const std::string& path, const std::string& text,
                                    unsigned backups = kConfigBackups);

}  // namespace ringlb::app
