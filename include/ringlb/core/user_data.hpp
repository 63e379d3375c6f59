#pragma once
// What a completion belongs to, packed into the 64-bit user_data every request carries:
// | op (8 bits) | generation (24 bits) | slot (32 bits) |
// The generation changes each time a slot is reused, so a completion that arrives for an
// earlier occupant of the slot is recognised and dropped.
#include <cstdint>

#include "ringlb/core/session.hpp"

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
    SpliceInClient,  // splice path: client -> pipe
    SpliceInServer,
    SpliceOutClient,  // pipe -> client
    SpliceOutServer,
};

constexpr Op recv_op(Side source) { return source == Side::Client ? Op::RecvClient : Op::RecvServer; }
constexpr Op send_op(Side destination) { return destination == Side::Client ? Op::SendClient : Op::SendServer; }
constexpr Op shutdown_op(Side destination) {
    return destination == Side::Client ? Op::ShutdownClient : Op::ShutdownServer;
}
constexpr Op splice_in_op(Side source) { return source == Side::Client ? Op::SpliceInClient : Op::SpliceInServer; }
constexpr Op splice_out_op(Side destination) {
    return destination == Side::Client ? Op::SpliceOutClient : Op::SpliceOutServer;
}

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
