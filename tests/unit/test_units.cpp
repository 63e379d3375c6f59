#include <doctest/doctest.h>

#include "ringlb/config/units.hpp"

using namespace std::chrono_literals;
using ringlb::config::parse_duration;
using ringlb::config::parse_size;

TEST_CASE("parse_duration accepts ms, s, m, h and bare seconds") {
    CHECK(parse_duration("300s") == 300s);
    CHECK(parse_duration("3s") == 3s);
    CHECK(parse_duration("250ms") == 250ms);
    CHECK(parse_duration("5m") == 5min);
    CHECK(parse_duration("1h") == 1h);
    CHECK(parse_duration("10") == 10s);
    CHECK(parse_duration("0s") == 0ms);
}

TEST_CASE("parse_duration rejects junk, signs, fractions and overflow") {
    for (const char* bad : {"", "s", "-1s", "+1s", "5x", "1.5s", " 5s", "5s ", "5 s", "5sec", "ms", "1hh"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_duration(bad).has_value());
    }
    CHECK_FALSE(parse_duration("99999999999999999999").has_value());  // beyond uint64
    CHECK_FALSE(parse_duration("9223372036854775807s").has_value());  // fits uint64, overflows in ms
    CHECK(parse_duration("9223372036854775807ms") == std::chrono::milliseconds(9223372036854775807));
}

TEST_CASE("parse_size accepts k, m, g (1024-based, any case, optional b) and bare bytes") {
    CHECK(parse_size("512") == 512u);
    CHECK(parse_size("512b") == 512u);
    CHECK(parse_size("64k") == 65536u);
    CHECK(parse_size("64K") == 65536u);
    CHECK(parse_size("64kb") == 65536u);
    CHECK(parse_size("64KB") == 65536u);
    CHECK(parse_size("1m") == 1048576u);
    CHECK(parse_size("2g") == 2147483648u);
    CHECK(parse_size("0") == 0u);
}

TEST_CASE("parse_size rejects junk, negatives and overflow") {
    for (const char* bad : {"", "k", "-1", "-1k", "1.5k", "12t", "64kbb", "64 k", "0x10", "k64"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_size(bad).has_value());
    }
    CHECK_FALSE(parse_size("18446744073709551616").has_value());  // 2^64
    CHECK_FALSE(parse_size("17179869184g").has_value());          // 2^34 * 2^30 = 2^64
    CHECK(parse_size("18446744073709551615") == 18446744073709551615ull);
}
