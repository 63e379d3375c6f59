// Proves that several worker threads (each with its own engine and SO_REUSEPORT listener) forward
// byte-exact and that limits which must be global still hold across them.
#include <set>
#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {
constexpr unsigned kConnections = 24;
constexpr std::uint64_t kBytesPerConnection = 512 * 1024;
constexpr std::uint64_t kFirstConnectionId = 0x7EAD0000;
}  // namespace

TEST_CASE("threads = 2: parallel full-duplex streams arrive byte for byte") {
    StreamCheckBackend backend(kBytesPerConnection);
    std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.threads = 2;
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    CHECK(ringlb.log_text().find("2 worker threads") != std::string::npos);

    auto results = run_stream_clients(port, kConnections, kFirstConnectionId, kBytesPerConnection, 60s);
    REQUIRE(results.size() == kConnections);
    for (const auto& result : results) CHECK_MESSAGE(result.ok(kBytesPerConnection), result.describe());
    CHECK(backend.wait_finished(kConnections, 10s));
    for (const auto& result : backend.results()) CHECK_MESSAGE(result.ok(kBytesPerConnection), result.describe());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("threads = 2: max_sessions_per_ip counts sessions of every worker") {
    NameBackend backend("a");
    std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.threads = 2;
    global.max_sessions_per_ip = 3;
    RinglbProcess ringlb(simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    // Eight clients from different source ports land on both workers; only three may be served.
    std::vector<UniqueFd> clients;
    for (int i = 0; i < 8; ++i) clients.push_back(connect_to(port));
    int served = 0, refused = 0;
    for (UniqueFd& client : clients) {
        REQUIRE(client.valid());
        ReadResult line = read_line(client.get(), 3s);
        if (line.end == ReadEnd::Limit && line.data == "a") ++served;
        else if (line.closed() && line.data.empty()) ++refused;
    }
    CHECK(served == 3);
    CHECK(refused == 5);
    std::this_thread::sleep_for(200ms);
    CHECK(backend.accepted() == 3);
    CHECK_CLEAN_EXIT(ringlb);
}
