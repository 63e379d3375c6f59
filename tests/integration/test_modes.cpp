// Every balancing mode against three real backends: rr spreads evenly, ms sends everything to the
// first server, hs keeps a client on one server, lc spreads open sessions, and rd, p2c and rt
// serve every connection.
#include <map>
#include <set>

#include "backends.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

struct ModeFixture {
    NameBackend a{"a"}, b{"b"}, c{"c"};
    std::uint16_t port = find_free_port();

    std::string config(const std::string& mode) const {
        RuleSpec rule;
        rule.mode = mode;
        rule.listen = {loopback_endpoint(port)};
        rule.servers = {{a.endpoint()}, {b.endpoint()}, {c.endpoint()}};
        return render_config({}, {rule});
    }
};

// Opens `count` connections one after the other, each closed once its name was read.
std::map<std::string, unsigned> sequential_tally(std::uint16_t port, unsigned count) {
    std::map<std::string, unsigned> counts;
    for (unsigned i = 0; i < count; ++i) ++counts[fetch_name(port)];
    return counts;
}

std::string describe(const std::map<std::string, unsigned>& counts) {
    std::string out;
    for (const auto& [name, n] : counts) out += (out.empty() ? "" : " ") + (name.empty() ? "<none>" : name) + "=" + std::to_string(n);
    return out;
}

// Every connection got one of the three backend names.
void check_all_served(const std::map<std::string, unsigned>& counts, unsigned expected) {
    INFO("tally: ", describe(counts));
    unsigned served = 0;
    for (const auto& [name, n] : counts) {
        CHECK((name == "a" || name == "b" || name == "c"));
        served += n;
    }
    CHECK(served == expected);
}

}  // namespace

TEST_CASE("mode rr: 30 connections over 3 servers -> 10/10/10") {
    ModeFixture f;
    RinglbProcess ringlb(f.config("rr"));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    auto counts = sequential_tally(f.port, 30);
    INFO("tally: ", describe(counts));
    CHECK(counts["a"] == 10);
    CHECK(counts["b"] == 10);
    CHECK(counts["c"] == 10);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("mode ms: every connection goes to the first server") {
    ModeFixture f;
    RinglbProcess ringlb(f.config("ms"));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    auto counts = sequential_tally(f.port, 20);
    INFO("tally: ", describe(counts));
    CHECK(counts["a"] == 20);
    CHECK(f.b.accepted() == 0);
    CHECK(f.c.accepted() == 0);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("mode hs: the same client always reaches the same server") {
    ModeFixture f;
    RinglbProcess ringlb(f.config("hs"));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    auto counts = sequential_tally(f.port, 20);  // all from 127.0.0.1
    INFO("tally: ", describe(counts));
    REQUIRE(counts.size() == 1);
    check_all_served(counts, 20);
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("mode lc: 30 open sessions spread 10/10/10") {
    ModeFixture f;
    RinglbProcess ringlb(f.config("lc"));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    // Each session stays open, so the active counts least-connections compares are exact.
    std::vector<UniqueFd> open;
    std::map<std::string, unsigned> counts;
    for (int i = 0; i < 30; ++i) {
        UniqueFd client = connect_to(f.port);
        REQUIRE(client.valid());
        ReadResult line = read_line(client.get());
        ++counts[line.end == ReadEnd::Limit ? line.data : ""];
        open.push_back(std::move(client));
    }
    INFO("tally: ", describe(counts));
    check_all_served(counts, 30);
    CHECK(counts["a"] == 10);
    CHECK(counts["b"] == 10);
    CHECK(counts["c"] == 10);
    open.clear();
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("modes rd, p2c, rt: every connection is served") {
    for (const char* mode : {"rd", "p2c", "rt"}) {
        CAPTURE(mode);
        ModeFixture f;
        RinglbProcess ringlb(f.config(mode));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        check_all_served(sequential_tally(f.port, 30), 30);
        CHECK(f.a.accepted() + f.b.accepted() + f.c.accepted() == 30);
        CHECK_CLEAN_EXIT(ringlb);
    }
}
