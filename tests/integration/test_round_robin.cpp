// Proves that sessions are spread over the servers in weighted round-robin order.
#include <map>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

// Opens `count` connections one after the other and returns the backend name each one got.
std::vector<std::string> sequential_names(std::uint16_t port, unsigned count) {
    std::vector<std::string> names;
    for (unsigned i = 0; i < count; ++i) names.push_back(fetch_name(port));
    return names;
}

std::map<std::string, unsigned> tally(const std::vector<std::string>& names) {
    std::map<std::string, unsigned> counts;
    for (const auto& name : names) ++counts[name];
    return counts;
}

std::string joined(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& name : names) out += (out.empty() ? "" : " ") + (name.empty() ? "<none>" : name);
    return out;
}

}  // namespace

TEST_CASE("round robin: equal weights alternate between two servers (10 sessions -> 5/5)") {
    NameBackend a("a"), b("b");
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{a.endpoint()}, {b.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    auto names = sequential_names(port, 10);
    INFO("sequence: ", joined(names));
    auto counts = tally(names);
    CHECK(counts["a"] == 5);
    CHECK(counts["b"] == 5);
    for (std::size_t i = 1; i < names.size(); ++i) CHECK(names[i] != names[i - 1]);
    CHECK(a.accepted() == 5);
    CHECK(b.accepted() == 5);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("round robin: weights 3:1 give 9 and 3 of 12 sessions") {
    NameBackend a("a"), b("b");
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{a.endpoint(), 3}, {b.endpoint(), 1}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    auto names = sequential_names(port, 12);
    INFO("sequence: ", joined(names));
    auto counts = tally(names);
    CHECK(counts["a"] == 9);
    CHECK(counts["b"] == 3);
    CHECK(a.accepted() == 9);
    CHECK(b.accepted() == 3);
    CHECK_CLEAN_EXIT(ringlb);
}
