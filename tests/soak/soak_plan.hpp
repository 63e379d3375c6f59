#pragma once
// The script of one soak stream, derived only from the run's seed and the stream's id: how many
// bytes go each way, whether either side ends it abruptly, half-closes early or reads slowly.
// The client sends the server's part of the script in a fixed-size header before its data, so
// the in-process backend behaves as planned whichever server ringlb picks.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace ringlb::soak {

enum class ServerAction : std::uint8_t {
    Finish,    // send all of down_bytes, then FIN
    FinEarly,  // send action_at bytes, then FIN (a half-close mid-stream), keep reading
    Reset,     // send action_at bytes, then close with SO_LINGER 0 (RST)
};

enum class ClientAction : std::uint8_t {
    Finish,          // send all of up_bytes, then FIN
    ResetAtConnect,  // RST right after the connect, before the header
    ResetMidStream,  // send the header and reset_at stream bytes, then RST
};

struct StreamPlan {
    std::uint64_t id = 0;
    std::uint32_t up_bytes = 1;    // client -> server stream bytes (after the header)
    std::uint32_t down_bytes = 1;  // server -> client stream bytes
    ServerAction server_action = ServerAction::Finish;
    std::uint32_t server_action_at = 0;  // down bytes sent before FinEarly/Reset
    bool server_replies_after_eof = false;  // the server sends nothing until the client's FIN
    // ... and then waits kStall, longer than ringlb's idle timeout: ringlb must cut the stream,
    // and both ends must see a reset, not a clean end (the client's FIN came, its reply never).
    bool server_stalls = false;
    bool server_reads_slowly = false;
    ClientAction client_action = ClientAction::Finish;
    std::uint32_t client_reset_at = 0;  // up bytes sent before ResetMidStream
    bool client_reads_slowly = false;
    std::chrono::milliseconds slow_for{0};  // how long a slow reader keeps to 1 KiB/s

    // Down bytes the server sends before its FIN or RST.
    std::uint32_t server_send_limit() const {
        return server_action == ServerAction::Finish ? down_bytes : server_action_at;
    }
};

constexpr std::uint32_t kMaxMessageBytes = 4u << 20;  // 4 MiB

// ringlb's idle timeout in the soak, and how long a stalling server waits after the client's
// FIN before it would reply: long enough past the timeout that ringlb's cut always comes first.
constexpr std::chrono::seconds kIdleTimeout{3};
constexpr std::chrono::milliseconds kStall{6000};
static_assert(kStall >= kIdleTimeout + std::chrono::seconds(3));
// The longest a slow reader keeps to 1 KiB/s. Its peer's bytes wait in ringlb's socket buffers
// meanwhile, and ringlb, whose sends completed, sees no activity: a slow phase as long as the
// idle timeout made a healthy stream idle for the whole timeout, cut by ringlb just as its server
// replied (a reset for the client while the server, closing first, saw a clean end). Slow readers
// end a second before the timeout; the stalls above are the streams the timeout is for.
constexpr std::chrono::milliseconds kSlowReaderLongest{2000};
static_assert(kSlowReaderLongest + std::chrono::seconds(1) <= kIdleTimeout);
constexpr std::size_t kHeaderBytes = 28;
using Header = std::array<std::uint8_t, kHeaderBytes>;

StreamPlan plan_stream(std::uint64_t run_seed, std::uint64_t id);

// The server's part of the plan on the wire (client-only fields are not sent).
Header encode_header(const StreamPlan& plan);
std::optional<StreamPlan> decode_header(std::span<const std::uint8_t, kHeaderBytes> bytes);

// Seeds of the two data directions of a stream.
std::uint64_t up_seed(std::uint64_t run_seed, std::uint64_t id);
std::uint64_t down_seed(std::uint64_t run_seed, std::uint64_t id);

// A small deterministic random source (splitmix64), so a seed means the same run on every
// standard library (std:: distributions are implementation-defined).
class Dice {
public:
    explicit Dice(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next();
    std::uint64_t below(std::uint64_t bound);  // uniform in [0, bound); bound > 0
    bool percent(unsigned chance) { return below(100) < chance; }
    // Log-uniform in [1, max]: as many tiny messages as multi-megabyte ones.
    std::uint32_t message_size(std::uint32_t max);
    std::chrono::milliseconds millis_between(unsigned low, unsigned high) {
        return std::chrono::milliseconds(low + below(high - low + 1));
    }

private:
    std::uint64_t state_;
};

}  // namespace ringlb::soak
