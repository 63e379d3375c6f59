// Inputs that made a fuzz target (tests/fuzz) fail, run again through the same check function
// the target runs, so that each bug stays fixed. The fuzz_*.cpp files are compiled in here with
// RINGLB_FUZZ_REGRESSION defined, which leaves out their libFuzzer entry points; their checks
// then run against the normal ringlb_lib (and, in scripts/test.sh's second pass, under ASan and
// UBSan). A new crash input from tests/fuzz/crashes/ goes in as one more TEST_CASE below, with
// the bug it showed.
//
// The seed corpora are run through the checks as well: that keeps the harnesses compiling and
// their properties true on the inputs we know, in every normal test run.
#define RINGLB_FUZZ_REGRESSION

#include "../fuzz/fuzz_admin.cpp"
#include "../fuzz/fuzz_client_hello.cpp"
#include "../fuzz/fuzz_config.cpp"
#include "../fuzz/fuzz_import_g5.cpp"
#include "../fuzz/fuzz_proxy.cpp"
#include "../fuzz/fuzz_values.cpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>

#include "ringlb/config/config.hpp"
#include "ringlb/net/client_pattern.hpp"

namespace {

// Bytes as libFuzzer saved them; a literal's length, not strlen, since inputs may hold NULs.
template <size_t N>
std::string_view saved(const char (&bytes)[N]) {
    return std::string_view(bytes, N - 1);
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// tests/fuzz/corpus/<target>/, found from this file's own path (CMake compiles it by absolute path).
std::filesystem::path corpus_dir(std::string_view target) {
    return std::filesystem::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / target;
}

void check_corpus(std::string_view target, const std::function<void(std::string_view)>& check) {
    const auto dir = corpus_dir(target);
    REQUIRE_MESSAGE(std::filesystem::is_directory(dir), dir.string());
    size_t inputs = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        INFO("seed ", entry.path().string());
        CHECK_NOTHROW(check(read_file(entry.path())));
        ++inputs;
    }
    CHECK(inputs > 0);
}

}  // namespace

TEST_CASE("fuzz seeds pass every target's checks") {
    check_corpus("config", ringlb::fuzz::check_config);
    check_corpus("values", ringlb::fuzz::check_values);
    check_corpus("admin", ringlb::fuzz::check_admin);
    check_corpus("proxy", ringlb::fuzz::check_proxy);
    check_corpus("import_g5", ringlb::fuzz::check_import_g5);
    check_corpus("client_hello", ringlb::fuzz::check_client_hello);
}

// fuzz_values, values-crash-530f6862d9dfd73757cebd3e51f988fe50a67d02: the client pattern
// "0.0.0.0:01" was accepted as "0.0.0.0, port 1" but matched no client at all, since matches()
// compares the port's text ("1") with the pattern's ("01"); `clients = ["10.0.0.1:080"]` silently
// let nobody in. Ports with leading zeros are now refused with a message.
TEST_CASE("fuzz regression: a client pattern port with a leading zero") {
    CHECK_NOTHROW(ringlb::fuzz::check_values(saved("0.0.0.0:01")));
    std::string error;
    CHECK_FALSE(ringlb::net::ClientPattern::parse("0.0.0.0:01", &error).has_value());
    CHECK(error.find("without leading zeros") != std::string::npos);
    CHECK_FALSE(ringlb::net::ClientPattern::parse("[::1]:080").has_value());
    CHECK(ringlb::net::ClientPattern::parse("0.0.0.0:0").has_value());
    CHECK(ringlb::net::ClientPattern::parse("0.0.0.0:0*").has_value());  // a glob, matched as text
}

// fuzz_config, config-crash-1f83966e4e48112be035c99d81ea601e5633db16: a table header whose key
// starts with '.' ("[[.1:8E..."; "[.a]" is enough) makes toml++ 3.3 call parse_key() against its
// own precondition (marzer/tomlplusplus#301): the assert() fired while the fuzz build had
// -UNDEBUG; Debian's release build of toml++ compiles it out and reports a syntax error, which is
// what ringlb must keep doing.
TEST_CASE("fuzz regression: toml++ table header without a key start") {
    CHECK_NOTHROW(ringlb::fuzz::check_config(
        saved("[[.1:8E\0\0\0\0\0\0\0rvers = [\"127.0.0.1:9001\"]\n")));
    CHECK_THROWS_AS(ringlb::config::parse_config("[.a]\n", "test"), ringlb::config::ConfigError);
}

// fuzz_admin, admin-crash-bd71cec4cda221dc45508dc9317a05471bc45c70: an array starting with '}'
// inside an inline table (`add rule { ..., liten = [}]... }`) makes toml++ 3.3's parse_array()
// call parse_value() on a value terminator, breaking its precondition
// (TOML_ASSERT_ASSUME(!is_value_terminator(*cp))): an assert() under -UNDEBUG, compiled out in
// Debian's release build, which reports a syntax error.
TEST_CASE("fuzz regression: toml++ array starting with a closing brace") {
    CHECK_NOTHROW(ringlb::fuzz::check_admin(saved("{ id = \"ia_hash\", liten = [}]\"' , riseout= \" }")));
    CHECK_THROWS_AS(ringlb::config::parse_rule_inline("{ a = [}] }", "test"), ringlb::config::ConfigError);
}

// fuzz_admin, admin-crash-a33a5821be3315d9a5f79c3e5fbd70873ffee4b6: U+02E4 ("\xCB\xA4") after a
// bare key in `add rule` makes toml++ 3.3's is_non_ascii_horizontal_whitespace() reach
// __builtin_unreachable() (marzer/tomlplusplus#295, UBSan "execution reached an unreachable
// program point"): undefined behaviour, in a release build as well. The toml++ ringlb links must
// reject it as a syntax error; the fuzz targets skip such inputs (reaches_known_toml_bug).
TEST_CASE("fuzz regression: toml++ non-ASCII character where whitespace may be") {
    CHECK_NOTHROW(ringlb::fuzz::check_admin(
        saved("add rule {idten=[\"127.0.0.1:80)1\"], servers\xCB\xA4" "001\"]}")));
    CHECK_THROWS_AS(ringlb::config::parse_rule_inline("{a\xCB\xA4 = 1}", "test"), ringlb::config::ConfigError);
}

// fuzz_admin, admin-crash-b336c123cca3f2149f615e3dc9b410b496df48c2: once servers could be named,
// `drain server RULE NAME` takes a server name as well as an address; the target's check still
// wanted an address. A name is accepted, anything else is still refused.
TEST_CASE("fuzz regression: a server argument may be a server name") {
    CHECK_NOTHROW(ringlb::fuzz::check_admin(saved("drain server we1:ver we9001")));
    const auto parsed = ringlb::admin::parse_command("drain server web 9web");
    CHECK(std::holds_alternative<ringlb::admin::CommandError>(parsed));
}

// fuzz_import_g5, found after 111 s: a NUL inside a G5 client pattern ("1.2.3.4\0") passed the
// pattern check, since inet_pton read it as a C string and stopped at the NUL, and the import
// copied the byte raw into a TOML string, which ringlb then refused. Client patterns (and
// addresses) now refuse control characters, so the import reports the pattern instead of
// writing a file ringlb cannot load; its TOML strings escape every control character.
TEST_CASE("fuzz regression: a NUL inside a G5 client pattern") {
    const std::string_view input = saved("w RR 1.2.3.4\0 - 0.0.0.0:80 > 127.0.0.1:81 ;");
    CHECK_NOTHROW(ringlb::fuzz::check_import_g5(input));
    try {
        ringlb::config::import_g5(input, "g5.conf");
        FAIL("the import accepted a client pattern holding a NUL");
    } catch (const ringlb::config::ConfigError& error) {
        const std::string text = error.what();
        CHECK(text.find("g5.conf:1:6: w: bad client pattern '1.2.3.4\\u0000': contains the control character") !=
              std::string::npos);
    }
}
