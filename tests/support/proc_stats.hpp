#pragma once
// What the kernel reports about a running process in /proc/PID: open descriptors, resident
// memory and CPU time. The soak and the exhaustion tests use them to prove that ringlb leaks no
// descriptors, keeps its memory bounded and does not spin while it cannot make progress.
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>

namespace ringlb::test {

// Entries of /proc/PID/fd; nullopt when the process is gone (or not ours to inspect).
std::optional<std::size_t> open_fd_count(pid_t pid);

// VmRSS of /proc/PID/status in KiB; nullopt when unreadable.
std::optional<long> resident_kib_of(pid_t pid);

// User plus system CPU time consumed so far (/proc/PID/stat utime + stime); nullopt when unreadable.
std::optional<std::chrono::milliseconds> cpu_time_of(pid_t pid);

}  // namespace ringlb::test
