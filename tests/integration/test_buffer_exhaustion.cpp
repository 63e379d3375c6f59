// Proves that running out of receive buffers only slows sessions down: with a pool far smaller
// than the number of busy connections, every stream still arrives byte for byte.
#include "backends.hpp"
#include "config_text.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {
constexpr unsigned kConnections = 1000;
constexpr std::uint64_t kBytesPerConnection = 64 * 1024;
constexpr std::uint64_t kFirstConnectionId = 0xB0F0000;
}  // namespace

TEST_CASE("a receive buffer pool of 16 serves 1,000 busy full-duplex connections byte for byte") {
    StreamCheckBackend backend(kBytesPerConnection);
    std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.extra_lines.push_back("receive_buffers = 16");
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    auto results = run_stream_clients(port, kConnections, kFirstConnectionId, kBytesPerConnection, 90s);
    REQUIRE(results.size() == kConnections);
    for (const auto& result : results) CHECK_MESSAGE(result.ok(kBytesPerConnection), result.describe());
    CHECK(backend.wait_finished(kConnections, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytesPerConnection), result.describe());
    CHECK_CLEAN_EXIT(ringlb);
}
