#pragma once
// The parts of sends in flight, kept where the kernel can read them until each send completes:
// a gathered send hands the kernel a message header that points at up to kMaxSendParts pieces.
// Pooled, so only sends in flight hold an entry, never an idle connection.
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "ringlb/engine/engine.hpp"

namespace ringlb::engine {

class GatherPool {
public:
    // Copies the parts (1 to kMaxSendParts, else std::logic_error) into a free entry.
    uint32_t store(std::span<const SendPart> parts);
    // Valid, at the same address, until release(index).
    msghdr* message(uint32_t index) { return &entries_[index].message; }
    void release(uint32_t index) { free_.push_back(index); }

private:
    struct Entry {
        msghdr message{};
        std::array<iovec, kMaxSendParts> parts{};
    };
    std::deque<Entry> entries_;  // a deque: growing it moves no entry the kernel may be reading
    std::vector<uint32_t> free_;
};

}  // namespace ringlb::engine
