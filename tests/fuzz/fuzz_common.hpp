#pragma once
// What every fuzz target shares: how a broken property is reported, and the libFuzzer entry
// point around a target's check function.
//
// Each fuzz_<name>.cpp defines `void ringlb::fuzz::check_<name>(std::string_view input)`, which
// returns normally for every input that is handled correctly (rejected inputs included) and throws
// for a bug. The same function runs in two places:
// - in the fuzz target, through RINGLB_FUZZ_ENTRY, where anything thrown is printed and turned
//   into abort() so that libFuzzer saves the input as a crash;
// - in tests/unit/test_fuzz_regressions.cpp, which includes the fuzz_*.cpp files with
//   RINGLB_FUZZ_REGRESSION defined (no entry point then) and runs each saved crash input through
//   the check, so that a fixed bug stays fixed in the normal test suite.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>

// For TOML_LIB_MAJOR/MINOR only: which toml++ release the known-bug filter below is about.
#include <toml++/impl/version.h>

namespace ringlb::fuzz {

// An input that made a parser break one of its documented promises without crashing: the
// message says which promise and shows the data needed to see why.
class PropertyViolation : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

inline void require(bool condition, const std::string& promise) {
    if (!condition) throw PropertyViolation(promise);
}

// Inputs that reach a known bug of the toml++ release ringlb builds against (Debian 12 ships
// 3.3.0): marzer/tomlplusplus#295 (and #190), fixed upstream after 3.4. When the parser asks
// whether a non-ASCII code point is whitespace, is_non_ascii_horizontal_whitespace() reaches
// TOML_UNREACHABLE, i.e. __builtin_unreachable(), for most code points in U+00A1..U+0499,
// U+2C5E..U+3057 and U+FB26..U+FF1F: undefined behaviour that UBSan stops at. The targets that
// parse TOML skip inputs holding such a code point, so that fuzzing goes on into ringlb's own
// code instead of stopping at the same upstream bug in every run (see README.md).
namespace toml_3_3 {

inline bool in_unreachable_whitespace_ranges(uint32_t code_point) {
    if (code_point == 0xA0 || code_point == 0x3000 || code_point == 0xFEFF) return false;  // real whitespace
    return (code_point >= 0xA0 && code_point <= 0x499) || (code_point >= 0x2C5E && code_point <= 0x3057) ||
           (code_point >= 0xFB26 && code_point <= 0xFF1F);
}

// Decodes the 2- and 3-byte UTF-8 sequences (the only ones below U+10000) leniently: a
// malformed one is toml++'s to reject, and it does so before classifying anything. Looks inside
// strings and comments too: skipping a few more inputs than necessary costs nothing.
inline bool has_unreachable_whitespace_code_point(std::string_view text) {
    for (size_t i = 0; i < text.size(); ++i) {
        const auto lead = static_cast<unsigned char>(text[i]);
        const auto continuation = [&](size_t k) { return static_cast<unsigned char>(text[i + k]) & 0x3Fu; };
        uint32_t code_point = 0;
        if (lead >= 0xC2 && lead <= 0xDF && i + 1 < text.size()) code_point = ((lead & 0x1Fu) << 6) | continuation(1);
        else if (lead >= 0xE0 && lead <= 0xEF && i + 2 < text.size())
            code_point = ((lead & 0x0Fu) << 12) | (continuation(1) << 6) | continuation(2);
        if (in_unreachable_whitespace_ranges(code_point)) return true;
    }
    return false;
}

}  // namespace toml_3_3

// Whether `text`, parsed as TOML, would run into the known toml++ bug rather than into ringlb.
inline bool reaches_known_toml_bug(std::string_view text) {
#if defined(TOML_LIB_MAJOR) && (TOML_LIB_MAJOR < 3 || (TOML_LIB_MAJOR == 3 && TOML_LIB_MINOR <= 4))
    return toml_3_3::has_unreachable_whitespace_code_point(text);
#else
    (void)text;
    return false;
#endif
}

// Runs `check` on libFuzzer's bytes unless `skip` says the input reaches a known bug elsewhere.
// A normal return is a pass; anything thrown is a bug and abort()s, since libFuzzer only saves
// inputs that crash.
template <typename Check, typename Skip>
int run_fuzz_check(Check check, Skip skip, const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    if (skip(input)) return -1;  // -1: libFuzzer keeps the input out of the corpus
    try {
        check(input);
        return 0;
    } catch (const PropertyViolation& violation) {
        std::fprintf(stderr, "\n==ringlb-fuzz== property violated: %s\n", violation.what());
    } catch (const std::exception& error) {
        std::fprintf(stderr, "\n==ringlb-fuzz== unexpected exception %s: %s\n", typeid(error).name(), error.what());
    } catch (...) {
        std::fprintf(stderr, "\n==ringlb-fuzz== unexpected exception of a non-std type\n");
    }
    std::abort();
}

inline bool skip_nothing(std::string_view) { return false; }

}  // namespace ringlb::fuzz

// The libFuzzer entry point of a target: RINGLB_FUZZ_ENTRY(check) fuzzes every input,
// RINGLB_FUZZ_ENTRY_SKIPPING(check, skip) those for which skip(input) is false. In the unit test
// build (RINGLB_FUZZ_REGRESSION) there is no entry point: the test calls the check directly,
// without the skip, on inputs saved from crashes.
#ifdef RINGLB_FUZZ_REGRESSION
#define RINGLB_FUZZ_ENTRY_SKIPPING(check, skip)
#else
#define RINGLB_FUZZ_ENTRY_SKIPPING(check, skip)                                     \
    extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {       \
        return ::ringlb::fuzz::run_fuzz_check(check, skip, data, size);              \
    }
#endif
#define RINGLB_FUZZ_ENTRY(check) RINGLB_FUZZ_ENTRY_SKIPPING(check, ::ringlb::fuzz::skip_nothing)
