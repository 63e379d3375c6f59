#include "ringlb/engine/gather_pool.hpp"

#include <stdexcept>
#include <string>

namespace ringlb::engine {

uint32_t GatherPool::store(std::span<const SendPart> parts) {
    if (parts.empty() || parts.size() > kMaxSendParts)
        throw std::logic_error("a send takes 1 to " + std::to_string(kMaxSendParts) + " parts, not " +
                               std::to_string(parts.size()));
    uint32_t index;
    if (free_.empty()) {
        index = static_cast<uint32_t>(entries_.size());
        entries_.emplace_back();
    } else {
        index = free_.back();
        free_.pop_back();
    }
    Entry& entry = entries_[index];
    for (size_t i = 0; i < parts.size(); ++i)
        // iovec has no const variant; the kernel only reads what a send points at.
        entry.parts[i] = iovec{const_cast<std::byte*>(parts[i].data), parts[i].length};
    entry.message = msghdr{};
    entry.message.msg_iov = entry.parts.data();
    entry.message.msg_iovlen = parts.size();
    return index;
}

}  // namespace ringlb::engine
