#include "soak_watch.hpp"

#include "admin_client.hpp"
#include "proc_stats.hpp"

namespace ringlb::soak {

namespace {
constexpr auto kProcessSampleInterval = 100ms;
constexpr auto kAdminInterval = 1s;
}  // namespace

std::optional<StatsSample> query_stats(std::uint16_t admin_port) {
    const test::AdminReply reply = test::admin_command(admin_port, "show stats");
    if (!reply.ok()) return std::nullopt;
    StatsSample sample;
    sample.active_sessions = test::reply_value(reply, "active_sessions").value_or(-1);
    sample.limits_active = test::reply_value(reply, "limits_active").value_or(-1);
    return sample;
}

Monitor::Monitor(pid_t pid, std::uint16_t admin_port) : pid_(pid), admin_port_(admin_port) {
    thread_ = std::thread([this] { run(); });
}

void Monitor::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

MonitorFigures Monitor::figures() const {
    std::lock_guard lock(mutex_);
    return figures_;
}

void Monitor::run() {
    auto next_admin = Clock::now();
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        lock.unlock();
        sample_process();
        if (Clock::now() >= next_admin) {
            sample_admin();
            next_admin = Clock::now() + kAdminInterval;
        }
        lock.lock();
        wake_.wait_for(lock, kProcessSampleInterval, [this] { return stopping_; });
    }
}

void Monitor::sample_process() {
    const auto rss = test::resident_kib_of(pid_);
    const auto fds = test::open_fd_count(pid_);
    std::lock_guard lock(mutex_);
    if (!rss || !fds) {
        figures_.ringlb_vanished = true;
        return;
    }
    figures_.rss_max_kib = std::max(figures_.rss_max_kib, *rss);
    figures_.fd_max = std::max(figures_.fd_max, *fds);
}

void Monitor::sample_admin() {
    const auto sample = query_stats(admin_port_);
    std::lock_guard lock(mutex_);
    ++figures_.admin_queries;
    if (!sample) ++figures_.admin_failures;
    else figures_.sessions_max = std::max(figures_.sessions_max, sample->active_sessions);
}

// ---------------------------------------------------------------------------------------------

Chaos::Chaos(std::vector<StreamBackend*> victims, std::uint64_t seed) : victims_(std::move(victims)), seed_(seed) {
    thread_ = std::thread([this] { run(); });
}

void Chaos::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool Chaos::pause(std::chrono::milliseconds duration) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, duration, [this] { return stopping_; });
}

void Chaos::run() {
    Dice dice(seed_);
    // One victim at a time, so some backend is always up and most streams can complete.
    while (pause(dice.millis_between(1000, 3000))) {
        StreamBackend& victim = *victims_[dice.below(victims_.size())];
        victim.kill();
        ++kills_;
        const bool stopping = !pause(dice.millis_between(200, 1500));
        victim.restart();
        if (stopping) break;
    }
}

}  // namespace ringlb::soak
