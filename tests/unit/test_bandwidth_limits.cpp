// upload_rate / download_rate: the config keys and the token bucket that enforces them.
#include <doctest/doctest.h>

#include <string>

#include "config_fixtures.hpp"
#include "ringlb/config/config.hpp"
#include "ringlb/core/token_bucket.hpp"

using namespace std::chrono_literals;
using namespace ringlb::config;
using ringlb::core::ByteRate;
using ringlb::core::Clock;
using ringlb::core::TokenBucket;
using ringlb::test::dump;
using ringlb::test::has_issue;
using ringlb::test::issues_of;

namespace {

std::string rule_with(const std::string& lines) {
    return "[[rule]]\nid = \"r\"\nlisten = [\"127.0.0.1:8080\"]\nservers = [\"127.0.0.1:9001\"]\n" + lines;
}

}  // namespace

TEST_CASE("upload_rate and download_rate are sizes per second; 0 or absent is unlimited") {
    const Config config = parse_config(rule_with("upload_rate = \"1m\"\ndownload_rate = 65536\n"), "t.toml");
    CHECK(config.rules[0].upload_rate == 1024 * 1024);
    CHECK(config.rules[0].download_rate == 65536);
    const Config plain = parse_config(rule_with(""), "t.toml");
    CHECK(plain.rules[0].upload_rate == 0);
    CHECK(plain.rules[0].download_rate == 0);
    CHECK(parse_config(rule_with("upload_rate = 0\n"), "t.toml").rules[0].upload_rate == 0);
    // The dump reads back to the same rule.
    const Config again = parse_config(to_toml(config), "dump.toml");
    CHECK(again.rules[0] == config.rules[0]);
}

TEST_CASE("a bad upload_rate or download_rate is an error naming the key and line") {
    auto issues = issues_of(rule_with("upload_rate = \"fast\"\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].upload_rate", 5, "size per second between 1k and 100g"), dump(issues));
    issues = issues_of(rule_with("download_rate = 100\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].download_rate", 5, "got 100"), dump(issues));
    issues = issues_of(rule_with("download_rate = -1\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].download_rate", 5, "must be 0 (unlimited)"), dump(issues));
    issues = issues_of(rule_with("upload_rate = true\n"));
    CHECK_MESSAGE(has_issue(issues, "rule[0].upload_rate", 5, "size per second"), dump(issues));
}

TEST_CASE("a token bucket starts with its burst, refills at its rate and goes into debt when overdrawn") {
    const ByteRate rate{100 * 1024};  // burst 10 KiB, chunk 5 KiB
    CHECK(rate.burst() == 10 * 1024);
    CHECK(rate.min_chunk() == 5 * 1024);
    const auto t0 = Clock::now();
    TokenBucket bucket;
    CHECK(bucket.available(rate, t0) == 10 * 1024);
    bucket.take(12 * 1024);  // a receive delivered more than it asked for
    CHECK(bucket.available(rate, t0) == -2 * 1024);
    // 7 KiB missing for a chunk: 70 ms at 100 KiB/s.
    const auto ready = bucket.ready_at(rate, rate.min_chunk(), t0);
    CHECK(ready - t0 >= 70ms);
    CHECK(ready - t0 <= 71ms);
    CHECK(bucket.available(rate, ready) >= 5 * 1024);
    // Never more than the burst, however long it waited.
    CHECK(bucket.available(rate, t0 + 1h) == 10 * 1024);
    // A later call with an earlier time changes nothing.
    CHECK(bucket.available(rate, t0) == 10 * 1024);
}

TEST_CASE("slow and fast rates get chunks within their bounds") {
    CHECK(ByteRate{1024}.min_chunk() == 512);
    CHECK(ByteRate{1024}.burst() == 512);
    CHECK(ByteRate{uint64_t{1} << 30}.min_chunk() == 16 * 1024);
    CHECK(ByteRate{uint64_t{1} << 30}.burst() == (uint64_t{1} << 30) / 10);
    CHECK_FALSE(ByteRate{0}.limited());
}
