#include "ringlb/admin/process_stats.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace ringlb::admin {
namespace {

// The fields of /proc/self/stat after the command name, which is in parentheses and may itself
// hold spaces and parentheses: so the split starts after the last ')'.
std::optional<std::vector<std::string>> stat_fields() {
    std::ifstream file("/proc/self/stat");
    std::string line;
    if (!std::getline(file, line)) return std::nullopt;
    const size_t close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(line.substr(close + 1));
    std::vector<std::string> fields;
    for (std::string field; rest >> field;) fields.push_back(field);
    return fields;
}

// Boot time from /proc/stat ("btime SECONDS"), the base of a process's start time.
std::optional<uint64_t> boot_time_unix() {
    std::ifstream file("/proc/stat");
    for (std::string line; std::getline(file, line);) {
        if (line.rfind("btime ", 0) != 0) continue;
        try {
            return std::stoull(line.substr(6));
        } catch (const std::exception&) {
            return std::nullopt;  // not a number: leave the families out
        }
    }
    return std::nullopt;
}

uint64_t count_open_fds() {
    std::error_code error;
    uint64_t count = 0;
    for (std::filesystem::directory_iterator it("/proc/self/fd", error), end; !error && it != end; it.increment(error))
        ++count;
    return count > 0 ? count - 1 : 0;  // the iterator's own descriptor is in the listing
}

}  // namespace

std::optional<ProcessStats> read_process_stats() {
    // Field numbers of proc(5) minus 3 (pid and comm are gone, the list starts at `state`).
    constexpr size_t kUtime = 11, kStime = 12, kStartTime = 19, kVsize = 20, kRss = 21;
    const auto fields = stat_fields();
    const auto boot = boot_time_unix();
    if (!fields || fields->size() <= kRss || !boot) return std::nullopt;
    const auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    ProcessStats stats;
    try {
        stats.cpu_seconds = static_cast<double>(std::stoull((*fields)[kUtime]) + std::stoull((*fields)[kStime])) / ticks;
        stats.start_time_unix = static_cast<double>(*boot) + static_cast<double>(std::stoull((*fields)[kStartTime])) / ticks;
        stats.virtual_bytes = std::stoull((*fields)[kVsize]);
        stats.resident_bytes = std::stoull((*fields)[kRss]) * page;
    } catch (const std::exception&) {
        return std::nullopt;  // a kernel with another layout: leave the families out
    }
    stats.open_fds = count_open_fds();
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) stats.max_fds = limit.rlim_cur;
    return stats;
}

}  // namespace ringlb::admin
