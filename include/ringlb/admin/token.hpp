#pragma once
// The secret compare shared by the admin port and the metrics endpoint.
#include <string_view>

namespace ringlb::admin {

// Compares in time that depends only on the expected token's length, never on how many leading
// characters were right: a remote client cannot guess the token byte by byte from reply timing.
inline bool tokens_equal(std::string_view given, std::string_view expected) {
    unsigned difference = given.size() == expected.size() ? 0u : 1u;
    for (size_t i = 0; i < expected.size(); ++i) {
        const auto given_byte = static_cast<unsigned char>(i < given.size() ? given[i] : 0);
        difference |= given_byte ^ static_cast<unsigned char>(expected[i]);
    }
    return difference == 0;
}

}  // namespace ringlb::admin
