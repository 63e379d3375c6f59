#include "ringlb/config/units.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <string>

namespace ringlb::config {
namespace {

// A number followed by a unit suffix, e.g. "250ms" -> {250, "ms"}.
struct Quantity {
    uint64_t value;
    std::string_view unit;
};

// Only plain decimal digits: no sign, no fraction, no spaces.
std::optional<Quantity> split_quantity(std::string_view text) {
    const auto first_non_digit = std::find_if(text.begin(), text.end(), [](char c) { return c < '0' || c > '9'; });
    const size_t digits = static_cast<size_t>(first_non_digit - text.begin());
    if (digits == 0) return std::nullopt;
    uint64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + digits, value);
    if (error != std::errc()) return std::nullopt;  // out of range
    return Quantity{value, text.substr(digits)};
}

std::optional<uint64_t> checked_multiply(uint64_t value, uint64_t factor, uint64_t limit) {
    if (value > limit / factor) return std::nullopt;
    return value * factor;
}

std::string lowercase(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

std::optional<uint64_t> millis_per_unit(std::string_view unit) {
    if (unit == "ms") return 1;
    if (unit.empty() || unit == "s") return 1000;
    if (unit == "m") return 60 * 1000;
    if (unit == "h") return 60 * 60 * 1000;
    return std::nullopt;
}

std::optional<uint64_t> bytes_per_unit(std::string_view unit) {
    std::string name = lowercase(unit);
    if (!name.empty() && name.back() == 'b') name.pop_back();  // "64kb" == "64k", "512b" == "512"
    if (name.empty()) return 1;
    if (name == "k") return uint64_t{1} << 10;
    if (name == "m") return uint64_t{1} << 20;
    if (name == "g") return uint64_t{1} << 30;
    return std::nullopt;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    const auto quantity = split_quantity(text);
    if (!quantity) return std::nullopt;
    const auto factor = millis_per_unit(quantity->unit);
    if (!factor) return std::nullopt;
    const auto limit = static_cast<uint64_t>(std::numeric_limits<std::chrono::milliseconds::rep>::max());
    const auto millis = checked_multiply(quantity->value, *factor, limit);
    if (!millis) return std::nullopt;
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(*millis));
}

std::optional<uint64_t> parse_size(std::string_view text) {
    const auto quantity = split_quantity(text);
    if (!quantity) return std::nullopt;
    const auto factor = bytes_per_unit(quantity->unit);
    if (!factor) return std::nullopt;
    return checked_multiply(quantity->value, *factor, std::numeric_limits<uint64_t>::max());
}

}  // namespace ringlb::config
