#pragma once
// What a completion belongs to, packed into the 64-bit user_data every request carries:
// | op (8 bits) | generation (24 bits) | slot (32 bits) |
// The generation changes each time a slot is reused, so a completion that arrives for an
// earlier occupant of the slot is recognised and dropped.
#include <cstdint>

namespace ringlb::core {

enum class Op : uint8_t {
    Accept = 1,  // slot = listener index
    Connect,
    RecvClient,
    RecvServer,
    SendClient,
    SendServer,
    ShutdownClient,
    ShutdownServer,
};

struct Token {
    uint32_t slot = 0;
    uint32_t generation = 0;  // only the low 24 bits are kept
    Op op = Op::Accept;

    static constexpr uint32_t kGenerationMask = (1u << 24) - 1;

    constexpr uint64_t pack() const {
        return (static_cast<uint64_t>(op) << 56) |
               (static_cast<uint64_t>(generation & kGenerationMask) << 32) | slot;
    }
    static constexpr Token unpack(uint64_t user_data) {
        return Token{static_cast<uint32_t>(user_data),
                     static_cast<uint32_t>(user_data >> 32) & kGenerationMask,
                     static_cast<Op>(user_data >> 56)};
    }
    constexpr bool operator==(const Token&) const = default;
};

}  // namespace ringlb::core
