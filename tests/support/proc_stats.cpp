#include "proc_stats.hpp"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace ringlb::test {

namespace {

std::string proc_path(pid_t pid, const char* entry) { return "/proc/" + std::to_string(pid) + "/" + entry; }

}  // namespace

std::optional<std::size_t> open_fd_count(pid_t pid) {
    DIR* directory = ::opendir(proc_path(pid, "fd").c_str());
    if (!directory) return std::nullopt;
    std::size_t count = 0;
    while (const dirent* entry = ::readdir(directory))
        if (entry->d_name[0] != '.') ++count;
    ::closedir(directory);
    return count;
}

std::optional<long> resident_kib_of(pid_t pid) {
    std::ifstream status(proc_path(pid, "status"));
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) != 0) continue;
        std::istringstream fields(line.substr(6));
        long kib = -1;
        if (fields >> kib) return kib;
    }
    return std::nullopt;
}

std::optional<std::chrono::milliseconds> cpu_time_of(pid_t pid) {
    std::ifstream stat(proc_path(pid, "stat"));
    std::string text;
    if (!std::getline(stat, text)) return std::nullopt;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const std::size_t name_end = text.rfind(')');
    if (name_end == std::string::npos) return std::nullopt;
    std::istringstream fields(text.substr(name_end + 1));
    std::string field;
    // After the name come state (field 3) ... utime (14) and stime (15).
    for (int skipped = 3; skipped <= 13; ++skipped)
        if (!(fields >> field)) return std::nullopt;
    unsigned long long user_ticks = 0, system_ticks = 0;
    if (!(fields >> user_ticks >> system_ticks)) return std::nullopt;
    const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
    if (ticks_per_second <= 0) return std::nullopt;
    return std::chrono::milliseconds((user_ticks + system_ticks) * 1000ULL / static_cast<unsigned long long>(ticks_per_second));
}

}  // namespace ringlb::test
