// Proves that ringlb forwards both directions of many simultaneous connections without losing,
// duplicating, reordering or mixing up bytes, and that it carries each side's FIN at the end.
#include <set>

#include "backends.hpp"
#include "config_text.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {
constexpr unsigned kConnections = 20;
constexpr std::uint64_t kTotalBytesEachWay = 64ull * 1024 * 1024;  // client->server, and again back
constexpr std::uint64_t kBytesPerConnection = kTotalBytesEachWay / kConnections;
constexpr std::uint64_t kFirstConnectionId = 0x5EED0000;
}  // namespace

TEST_CASE("integrity: 20 parallel full-duplex seeded streams (64 MiB each way) arrive byte for byte") {
    StreamCheckBackend backend(kBytesPerConnection);
    std::uint16_t port = find_free_port();
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    auto client_results = run_stream_clients(port, kConnections, kFirstConnectionId, kBytesPerConnection, 60s);
    REQUIRE(client_results.size() == kConnections);
    for (const auto& result : client_results) CHECK_MESSAGE(result.ok(kBytesPerConnection), result.describe());

    // The backend records a connection when it closes, which happens once it saw the client's FIN.
    CHECK(backend.wait_finished(kConnections, 10s));
    auto backend_results = backend.results();
    CHECK(backend_results.size() == kConnections);
    std::set<std::uint64_t> ids, expected_ids;
    for (const auto& result : backend_results) {
        CHECK_MESSAGE(result.ok(kBytesPerConnection), result.describe());
        ids.insert(result.id);
    }
    for (unsigned i = 0; i < kConnections; ++i) expected_ids.insert(kFirstConnectionId + i);
    CHECK_MESSAGE((ids == expected_ids), "every connection id must arrive exactly once");
    CHECK(backend.accepted() == kConnections);

    CHECK_CLEAN_EXIT(ringlb);
}

// The io_uring engine receives with multishot requests where the kernel can cap them; the
// one-shot receives it falls back to elsewhere must carry streams just as well.
TEST_CASE("integrity: with multishot_recv = false (one-shot receives), streams arrive byte for byte") {
    StreamCheckBackend backend(kBytesPerConnection / 4);
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.extra_lines = {"multishot_recv = false"};
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const std::string start = ringlb.first_log_line();
    INFO("first log line: ", start);
    if (test_engine() == "uring") CHECK(start.find("not used: multishot-recv (by configuration)") != std::string::npos);
    CHECK(start.substr(0, start.find(';')).find("multishot-recv") == std::string::npos);  // not among those used

    auto results = run_stream_clients(port, kConnections, kFirstConnectionId, kBytesPerConnection / 4, 60s);
    REQUIRE(results.size() == kConnections);
    for (const auto& result : results) CHECK_MESSAGE(result.ok(kBytesPerConnection / 4), result.describe());
    CHECK(backend.wait_finished(kConnections, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytesPerConnection / 4), result.describe());
    CHECK_CLEAN_EXIT(ringlb);
}
