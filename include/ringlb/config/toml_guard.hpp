#pragma once
// A guard in front of the TOML library. toml++ 3.3 (Debian 12) reaches __builtin_unreachable()
// (undefined behaviour: a crash at best) when it meets certain non-ASCII characters where it
// expects a key, a value or whitespace (upstream marzer/tomlplusplus#295, fixed after 3.4).
// Config files and `add rule` lines come from operators and from the admin port, so ringlb
// refuses such characters outside strings and comments itself, with a clear error, before the
// library sees them. Inside strings and comments they are harmless and allowed.
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringlb::config {

struct UnsafeCharacter {
    unsigned line = 0;    // 1-based
    unsigned column = 0;  // 1-based, in bytes
    uint32_t code_point = 0;
};

// The first character outside strings and comments that the TOML library cannot classify
// safely; nullopt when there is none.
std::optional<UnsafeCharacter> find_unsafe_character(std::string_view toml_text);

}  // namespace ringlb::config
