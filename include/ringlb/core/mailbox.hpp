#pragma once
// Messages to one worker thread: tasks posted by the control thread (admin commands, reloads,
// snapshots, health reports) and run by the worker between rounds of completions, so all state
// of a worker is only ever touched by its own thread. The poster wakes the worker's engine.
#include <functional>
#include <future>
#include <mutex>
#include <vector>

namespace ringlb::core {

class Mailbox {
public:
    using Task = std::function<void()>;

    void post(Task task) {
        std::lock_guard lock(mutex_);
        tasks_.push_back(std::move(task));
    }

    // Worker side: runs every task posted so far, in order.
    void run_pending() {
        {
            std::lock_guard lock(mutex_);
            if (tasks_.empty()) return;
            running_.swap(tasks_);
        }
        for (Task& task : running_) task();
        running_.clear();
    }

private:
    std::mutex mutex_;
    std::vector<Task> tasks_;
    std::vector<Task> running_;  // only touched by the worker
};

}  // namespace ringlb::core
