#pragma once
// The process's own resource use, read from /proc when a scrape asks for it (never on the data
// path), for the `process_*` metrics that Prometheus client libraries export under the same names.
#include <cstdint>
#include <optional>

namespace ringlb::admin {

struct ProcessStats {
    double cpu_seconds = 0;             // user + system, all threads
    uint64_t resident_bytes = 0;
    uint64_t virtual_bytes = 0;
    uint64_t open_fds = 0;
    uint64_t max_fds = 0;               // the soft RLIMIT_NOFILE
    double start_time_unix = 0;         // seconds since the Unix epoch
};

// nullopt when /proc cannot be read (not mounted in a minimal container): the metrics then leave
// the `process_*` families out rather than show zeros.
std::optional<ProcessStats> read_process_stats();

}  // namespace ringlb::admin
