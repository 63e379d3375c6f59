#pragma once
// A deterministic pseudo-random byte stream: both ends of a connection derive the same bytes from
// a seed, so megabytes can be checked byte for byte without being stored anywhere.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace ringlb::test {

// Mixes two values into a seed (so "client->server of connection 7" and "server->client of
// connection 7" get unrelated streams).
std::uint64_t derive_seed(std::uint64_t base, std::uint64_t stream);

// splitmix64 output, consumed 8 bytes at a time in little-endian order.
class PrngStream {
public:
    explicit PrngStream(std::uint64_t seed) : state_(seed) {}

    // Writes the next out.size() bytes of the stream.
    void fill(std::span<std::uint8_t> out);

    // Compares `in` with the next in.size() bytes of the stream and advances past them. Returns
    // the stream offset of the first differing byte, or nullopt when all match.
    std::optional<std::uint64_t> verify(std::span<const std::uint8_t> in);

    // How many bytes were generated or verified so far.
    std::uint64_t position() const { return position_; }

private:
    std::uint8_t next_byte();
    std::uint64_t next_word();

    std::uint64_t state_;
    std::uint64_t word_ = 0;
    unsigned word_bytes_left_ = 0;
    std::uint64_t position_ = 0;
};

}  // namespace ringlb::test
