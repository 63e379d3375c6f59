#include "prng_stream.hpp"

#include <cstring>

namespace ringlb::test {

namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

}  // namespace

std::uint64_t derive_seed(std::uint64_t base, std::uint64_t stream) {
    std::uint64_t state = base ^ (stream * 0xD1B54A32D192ED03ULL);
    return splitmix64(state);
}

std::uint64_t PrngStream::next_word() { return splitmix64(state_); }

std::uint8_t PrngStream::next_byte() {
    if (word_bytes_left_ == 0) {
        word_ = next_word();
        word_bytes_left_ = 8;
    }
    auto byte = static_cast<std::uint8_t>(word_ & 0xFF);
    word_ >>= 8;
    --word_bytes_left_;
    ++position_;
    return byte;
}

void PrngStream::fill(std::span<std::uint8_t> out) {
    std::size_t i = 0;
    // Finish a partly used word byte by byte, then go a whole word at a time (the fast path that
    // keeps 128 MiB of generation cheap even under AddressSanitizer).
    while (i < out.size() && word_bytes_left_ != 0) out[i++] = next_byte();
    while (out.size() - i >= 8) {
        std::uint64_t word = next_word();
        std::uint8_t bytes[8];
        for (int b = 0; b < 8; ++b) bytes[b] = static_cast<std::uint8_t>(word >> (8 * b));
        std::memcpy(out.data() + i, bytes, 8);
        i += 8;
        position_ += 8;
    }
    while (i < out.size()) out[i++] = next_byte();
}

std::optional<std::uint64_t> PrngStream::verify(std::span<const std::uint8_t> in) {
    std::uint8_t expected[4096];
    std::size_t done = 0;
    while (done < in.size()) {
        std::size_t n = std::min(sizeof expected, in.size() - done);
        std::uint64_t chunk_start = position_;
        fill(std::span<std::uint8_t>(expected, n));
        if (std::memcmp(expected, in.data() + done, n) != 0) {
            for (std::size_t k = 0; k < n; ++k)
                if (expected[k] != in[done + k]) return chunk_start + k;
        }
        done += n;
    }
    return std::nullopt;
}

}  // namespace ringlb::test
