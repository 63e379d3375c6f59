#pragma once
// The open file limit (RLIMIT_NOFILE) and how ringlb shares it. At start the soft limit is raised
// to the hard one. The data path (accepted clients and server sockets) keeps clear of the top
// part of the descriptor table, a reserve left to the control thread (admin and metrics
// connections, health checks, DNS), so those keep answering while clients are being dropped for
// want of descriptors.
#include <sys/resource.h>

#include <cstdint>
#include <string>

namespace ringlb::app {

struct DescriptorLimit {
    rlim_t found = 0;   // the soft limit at start
    rlim_t soft = 0;    // the soft limit now
    rlim_t hard = 0;
    std::string error;  // why raising failed; empty when it did not
};

// Raises the soft RLIMIT_NOFILE to the hard limit (or as far as the kernel allows).
DescriptorLimit raise_open_files_limit();

// Descriptors the data path leaves free under `limit`: a 32nd of it, at least 16, at most 256.
int descriptor_reserve(rlim_t limit);
// The first descriptor number the data path must not keep: limit - reserve.
int data_path_descriptor_ceiling(rlim_t limit);
// What `max_sessions` sessions and `pipes` splice pipes need: two descriptors each, the reserve,
// and 64 for listeners, engines and log files.
uint64_t descriptors_needed(uint32_t max_sessions, uint64_t pipes, rlim_t limit);

}  // namespace ringlb::app
