#pragma once
// Durations ("300s", "250ms", "5m", "1h") and sizes ("64k", "1m", "2g", "512") as written in
// the config file.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringlb::config {

// Units ms, s, m, h; a bare number means seconds. Rejects negatives, overflow, junk.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);
// Units k, m, g (powers of 1024, either case, optional trailing 'b'/'B'); a bare number means bytes.
std::optional<uint64_t> parse_size(std::string_view text);

}  // namespace ringlb::config
