#include "ringlb/core/server_queue.hpp"

#include <algorithm>

namespace ringlb::core {

bool ServerQueue::try_push(const Waiter& waiter) {
    std::lock_guard lock(mutex_);
    if (waiters_.size() >= capacity_.load(std::memory_order_relaxed)) return false;
    waiters_.push_back(waiter);
    waiting_.store(static_cast<uint32_t>(waiters_.size()), std::memory_order_relaxed);
    return true;
}

std::optional<ServerQueue::Waiter> ServerQueue::pop() {
    std::lock_guard lock(mutex_);
    if (waiters_.empty()) return std::nullopt;
    const Waiter oldest = waiters_.front();
    waiters_.pop_front();
    waiting_.store(static_cast<uint32_t>(waiters_.size()), std::memory_order_relaxed);
    return oldest;
}

bool ServerQueue::remove(uint64_t session_id) {
    std::lock_guard lock(mutex_);
    const auto found = std::find_if(waiters_.begin(), waiters_.end(),
                                    [&](const Waiter& waiter) { return waiter.session_id == session_id; });
    if (found == waiters_.end()) return false;
    waiters_.erase(found);
    waiting_.store(static_cast<uint32_t>(waiters_.size()), std::memory_order_relaxed);
    return true;
}

std::shared_ptr<ServerQueue> ServerQueues::queue(std::string_view rule_id, uint32_t capacity) {
    std::string key(rule_id);
    std::lock_guard lock(mutex_);
    std::weak_ptr<ServerQueue>& entry = table_[key];
    std::shared_ptr<ServerQueue> queue = entry.lock();
    if (!queue) {
        // The last holder's release removes the entry, unless a new queue took its place meanwhile.
        queue = std::shared_ptr<ServerQueue>(new ServerQueue, [this, key](ServerQueue* gone) {
            delete gone;
            forget(key);
        });
        entry = queue;
    }
    queue->set_capacity(capacity);
    return queue;
}

void ServerQueues::forget(const std::string& rule_id) {
    std::lock_guard lock(mutex_);
    const auto it = table_.find(rule_id);
    if (it != table_.end() && it->second.expired()) table_.erase(it);
}

bool ServerQueues::offer(const std::shared_ptr<ServerQueue>& queue, const net::SocketAddress& server,
                         const ServerConnections::Handle& count) {
    if (!deliver_ || !queue || queue->waiting() == 0) return false;
    const auto waiter = queue->pop();
    if (!waiter) return false;
    deliver_(QueueGrant{waiter->session_id, server, count, queue, waiter->since});
    return true;
}

}  // namespace ringlb::core
