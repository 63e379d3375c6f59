#include "soak_plan.hpp"

#include <bit>

#include "prng_stream.hpp"

namespace ringlb::soak {

namespace {

constexpr std::uint32_t kMagic = 0x4B414F53;  // "SOAK" little endian: a stray connection is obvious

// How often each fault is injected, in percent of streams. Resets and early FINs are common
// enough to happen hundreds of times a minute, rare enough that most streams complete.
constexpr unsigned kClientResetPercent = 10;
constexpr unsigned kServerFinEarlyPercent = 8;
constexpr unsigned kServerResetPercent = 8;
constexpr unsigned kReplyAfterEofPercent = 25;
constexpr unsigned kStallPercent = 4;  // of all streams; a stalled one has no other fault
constexpr unsigned kClientSlowPercent = 6;
constexpr unsigned kServerSlowPercent = 4;

template <typename T>
void put(std::uint8_t*& out, T value) {
    for (std::size_t i = 0; i < sizeof(T); ++i) *out++ = static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i));
}

template <typename T>
T take(const std::uint8_t*& in) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) value |= std::uint64_t{*in++} << (8 * i);
    return static_cast<T>(value);
}

// Flags byte: bits 0-1 server action, bit 2 reply after EOF, bit 3 slow reader, bit 4 stall.
std::uint8_t server_flags(const StreamPlan& plan) {
    return static_cast<std::uint8_t>(static_cast<unsigned>(plan.server_action) | (plan.server_replies_after_eof ? 4u : 0u) |
                                     (plan.server_reads_slowly ? 8u : 0u) | (plan.server_stalls ? 16u : 0u));
}

// A stalled stream is the plain request/reply case and nothing else: the client sends all and
// its FIN, reads at full speed; the server reads at full speed and stays silent past the timeout.
void make_stall(StreamPlan& plan) {
    plan.server_stalls = true;
    plan.server_replies_after_eof = true;
    plan.server_action = ServerAction::Finish;
    plan.server_action_at = 0;
    plan.server_reads_slowly = false;
    plan.client_action = ClientAction::Finish;
    plan.client_reset_at = 0;
    plan.client_reads_slowly = false;
}

void plan_server(Dice& dice, StreamPlan& plan) {
    const auto roll = dice.below(100);
    if (roll < kServerResetPercent) plan.server_action = ServerAction::Reset;
    else if (roll < kServerResetPercent + kServerFinEarlyPercent) plan.server_action = ServerAction::FinEarly;
    // Strictly before the end, and at least one byte for FinEarly: a clean end after 0 bytes
    // would look like a stream that never reached a backend.
    if (plan.server_action == ServerAction::FinEarly)
        plan.server_action_at = plan.down_bytes > 1 ? 1 + static_cast<std::uint32_t>(dice.below(plan.down_bytes - 1)) : 1;
    if (plan.server_action == ServerAction::Reset) plan.server_action_at = static_cast<std::uint32_t>(dice.below(plan.down_bytes));
    plan.server_replies_after_eof = dice.percent(kReplyAfterEofPercent);
    plan.server_reads_slowly = dice.percent(kServerSlowPercent);
}

void plan_client(Dice& dice, StreamPlan& plan) {
    if (dice.percent(kClientResetPercent)) {
        plan.client_action = dice.percent(20) ? ClientAction::ResetAtConnect : ClientAction::ResetMidStream;
        plan.client_reset_at = static_cast<std::uint32_t>(dice.below(plan.up_bytes));
    }
    plan.client_reads_slowly = dice.percent(kClientSlowPercent);
}

}  // namespace

std::uint64_t Dice::next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

std::uint64_t Dice::below(std::uint64_t bound) { return next() % bound; }

std::uint32_t Dice::message_size(std::uint32_t max) {
    const unsigned top_bit = static_cast<unsigned>(std::bit_width(max)) - 1;  // 22 for 4 MiB
    const unsigned bit = static_cast<unsigned>(below(top_bit + 1));
    const std::uint64_t low = std::uint64_t{1} << bit;
    const std::uint64_t size = low + below(low);  // [2^bit, 2^(bit+1))
    return static_cast<std::uint32_t>(size > max ? max : size);
}

StreamPlan plan_stream(std::uint64_t run_seed, std::uint64_t id) {
    Dice dice(test::derive_seed(run_seed, id));
    StreamPlan plan;
    plan.id = id;
    plan.up_bytes = dice.message_size(kMaxMessageBytes);
    plan.down_bytes = dice.message_size(kMaxMessageBytes);
    plan_server(dice, plan);
    plan_client(dice, plan);
    plan.slow_for = dice.millis_between(500, static_cast<unsigned>(kSlowReaderLongest.count()));
    if (dice.percent(kStallPercent)) make_stall(plan);
    return plan;
}

Header encode_header(const StreamPlan& plan) {
    Header header{};
    std::uint8_t* out = header.data();
    put(out, kMagic);
    put(out, plan.id);
    put(out, plan.up_bytes);
    put(out, plan.down_bytes);
    put(out, plan.server_action_at);
    put(out, server_flags(plan));
    put(out, std::uint8_t{0});
    put(out, static_cast<std::uint16_t>(plan.slow_for.count()));
    return header;
}

std::optional<StreamPlan> decode_header(std::span<const std::uint8_t, kHeaderBytes> bytes) {
    const std::uint8_t* in = bytes.data();
    if (take<std::uint32_t>(in) != kMagic) return std::nullopt;
    StreamPlan plan;
    plan.id = take<std::uint64_t>(in);
    plan.up_bytes = take<std::uint32_t>(in);
    plan.down_bytes = take<std::uint32_t>(in);
    plan.server_action_at = take<std::uint32_t>(in);
    const auto flags = take<std::uint8_t>(in);
    take<std::uint8_t>(in);
    plan.slow_for = std::chrono::milliseconds(take<std::uint16_t>(in));
    if ((flags & 3u) > 2u) return std::nullopt;
    plan.server_action = static_cast<ServerAction>(flags & 3u);
    plan.server_replies_after_eof = (flags & 4u) != 0;
    plan.server_reads_slowly = (flags & 8u) != 0;
    plan.server_stalls = (flags & 16u) != 0;
    return plan;
}

std::uint64_t up_seed(std::uint64_t run_seed, std::uint64_t id) { return test::derive_seed(test::derive_seed(run_seed, id), 1); }
std::uint64_t down_seed(std::uint64_t run_seed, std::uint64_t id) { return test::derive_seed(test::derive_seed(run_seed, id), 2); }

}  // namespace ringlb::soak
