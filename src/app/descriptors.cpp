#include "ringlb/app/descriptors.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

namespace ringlb::app {

namespace {

constexpr rlim_t kFixedDescriptors = 64;

}  // namespace

DescriptorLimit raise_open_files_limit() {
    DescriptorLimit limit;
    rlimit current{};
    if (::getrlimit(RLIMIT_NOFILE, &current) != 0) {
        limit.error = std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
        return limit;
    }
    limit.found = limit.soft = current.rlim_cur;
    limit.hard = current.rlim_max;
    if (current.rlim_cur >= current.rlim_max) return limit;
    rlimit raised = current;
    raised.rlim_cur = current.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        limit.soft = raised.rlim_cur;
        return limit;
    }
    // An unlimited hard limit is more than the kernel takes (fs.nr_open): ask for that much.
    limit.error = std::string("setrlimit(RLIMIT_NOFILE) to the hard limit: ") + std::strerror(errno);
    rlim_t kernel_max = 1 << 20;
    if (std::FILE* nr_open = std::fopen("/proc/sys/fs/nr_open", "r")) {
        unsigned long value = 0;
        if (std::fscanf(nr_open, "%lu", &value) == 1) kernel_max = value;
        std::fclose(nr_open);
    }
    raised.rlim_cur = std::min(current.rlim_max, kernel_max);
    if (raised.rlim_cur > current.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        limit.soft = raised.rlim_cur;
        limit.error.clear();
    }
    return limit;
}

// 256 at most: the admin and metrics ports hold 64 connections each, the rest is for health
// checks, DNS and files. More would be taken from clients for nothing (an eighth, as once, kept
// 1,024 of a 20,000 limit and refused clients that HAProxy under the same limit took).
int descriptor_reserve(rlim_t limit) { return static_cast<int>(std::clamp<rlim_t>(limit / 32, 16, 256)); }

int data_path_descriptor_ceiling(rlim_t limit) {
    const rlim_t capped = std::min<rlim_t>(limit, INT_MAX);
    return static_cast<int>(capped) - descriptor_reserve(capped);
}

uint64_t descriptors_needed(uint32_t max_sessions, uint64_t pipes, rlim_t limit) {
    return 2 * (uint64_t{max_sessions} + pipes) + static_cast<uint64_t>(descriptor_reserve(limit)) + kFixedDescriptors;
}

}  // namespace ringlb::app
