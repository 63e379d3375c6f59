#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

#include "ringlb/app/server.hpp"

namespace ringlb::app {

namespace {

// A cgroup CPU quota as a CPU count (rounded up), or 0 when none is set.
unsigned cgroup_cpu_limit() {
    std::ifstream v2("/sys/fs/cgroup/cpu.max");  // "max 100000" or "150000 100000"
    std::string quota;
    double period = 0;
    if (v2 >> quota >> period && quota != "max" && period > 0)
        return static_cast<unsigned>(std::ceil(std::stod(quota) / period));
    std::ifstream v1_quota("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    std::ifstream v1_period("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    double q = -1;
    if (v1_quota >> q && v1_period >> period && q > 0 && period > 0)
        return static_cast<unsigned>(std::ceil(q / period));
    return 0;
}

}  // namespace

unsigned usable_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    unsigned cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? static_cast<unsigned>(CPU_COUNT(&set)) : 1;
    if (const unsigned limit = cgroup_cpu_limit(); limit > 0) cpus = std::min(cpus, limit);
    return std::max(cpus, 1u);
}

}  // namespace ringlb::app
