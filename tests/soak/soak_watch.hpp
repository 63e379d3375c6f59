#pragma once
// The soak's two background actors besides clients and backends:
// - Monitor samples ringlb from the outside (RSS, open descriptors, `show stats` on the admin
//   port) so the summary can state maxima and prove the admin port kept answering;
// - Chaos kills one backend at a time and restarts it a moment later, on a seeded schedule.
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "soak_backend.hpp"

namespace ringlb::soak {

struct StatsSample {
    long long active_sessions = -1;
    long long limits_active = -1;
};

// One `show stats` round trip; nullopt when the admin port did not answer in time.
std::optional<StatsSample> query_stats(std::uint16_t admin_port);

struct MonitorFigures {
    long rss_max_kib = 0;
    std::size_t fd_max = 0;
    std::uint64_t admin_queries = 0;
    std::uint64_t admin_failures = 0;
    long long sessions_max = 0;
    bool ringlb_vanished = false;
};

class Monitor {
public:
    Monitor(pid_t pid, std::uint16_t admin_port);
    ~Monitor() { stop(); }
    Monitor(const Monitor&) = delete;
    Monitor& operator=(const Monitor&) = delete;

    void stop();
    MonitorFigures figures() const;

private:
    void run();
    void sample_process();
    void sample_admin();

    pid_t pid_;
    std::uint16_t admin_port_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    MonitorFigures figures_;
    std::thread thread_;
};

class Chaos {
public:
    Chaos(std::vector<StreamBackend*> victims, std::uint64_t seed);
    ~Chaos() { stop(); }
    Chaos(const Chaos&) = delete;
    Chaos& operator=(const Chaos&) = delete;

    // Stops the schedule; every backend is running again when this returns.
    void stop();
    std::uint64_t kills() const { return kills_.load(); }

private:
    void run();
    // Sleeps for `duration` unless stop() comes first; false when stopping.
    bool pause(std::chrono::milliseconds duration);

    std::vector<StreamBackend*> victims_;
    std::uint64_t seed_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::atomic<std::uint64_t> kills_{0};
    std::thread thread_;
};

}  // namespace ringlb::soak
