// Proves that a client that stops reading holds back only its own session: others keep streaming,
// ringlb's memory stays bounded by buffer_size for the stalled direction, and once the slow client
// reads again it gets every byte.
#include <sys/socket.h>


#include "backends.hpp"
#include "config_text.hpp"
#include "prng_stream.hpp"
#include "proc_stats.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr std::uint64_t kSlowBytes = 16 * 1024 * 1024;
constexpr std::uint64_t kSlowId = 0x510E0001;
constexpr unsigned kFastConnections = 10;
constexpr std::uint64_t kFastFirstId = 0xFA570000;
constexpr std::uint64_t kFastBytes = 2 * 1024 * 1024;

std::string stream_bytes(std::uint64_t seed, std::uint64_t count) {
    std::string bytes(count, '\0');
    PrngStream(seed).fill({reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size()});
    return bytes;
}

}  // namespace

TEST_CASE("a stalled reader holds back only its own session and gets every byte later") {
    StreamCheckBackend slow_backend(kSlowBytes);
    StreamCheckBackend fast_backend(kFastBytes);
    const std::uint16_t slow_port = find_free_port();
    const std::uint16_t fast_port = find_free_port();
    RinglbProcess ringlb(render_config(GlobalSpec{}, {one_server_rule("slow", slow_port, slow_backend.endpoint()),
                                                      one_server_rule("fast", fast_port, fast_backend.endpoint())}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    const long rss_before = resident_kib_of(ringlb.pid()).value_or(0);

    // The slow client sends its whole stream but reads nothing for now.
    UniqueFd slow = connect_to(slow_port);
    REQUIRE(slow.valid());
    std::string id(8, '\0');
    for (int i = 0; i < 8; ++i) id[i] = static_cast<char>((kSlowId >> (8 * i)) & 0xFF);
    REQUIRE(send_all(slow.get(), id, 5s));
    REQUIRE(send_all(slow.get(), stream_bytes(client_to_server_seed(kSlowId), kSlowBytes), 30s));
    REQUIRE(::shutdown(slow.get(), SHUT_WR) == 0);

    // Meanwhile other sessions on the same worker stream at full speed.
    auto fast = run_stream_clients(fast_port, kFastConnections, kFastFirstId, kFastBytes, 30s);
    REQUIRE(fast.size() == kFastConnections);
    for (const auto& result : fast) CHECK_MESSAGE(result.ok(kFastBytes), result.describe());

    const long rss_stalled = resident_kib_of(ringlb.pid()).value_or(0);
    INFO("ringlb RSS before ", rss_before, " KiB, while a reader is stalled ", rss_stalled, " KiB");
    // 16 MiB wait for the slow client; ringlb may hold only buffer_size (64 KiB) of them plus its
    // pool's warm buffers: the rest stays in the kernel's socket buffers or at the backend.
    CHECK(rss_stalled - rss_before < 4 * 1024);

    // Now read: every byte arrives, in order, then EOF.
    ReadResult all = read_exactly(slow.get(), kSlowBytes, 30s);
    REQUIRE(all.data.size() == kSlowBytes);
    PrngStream expected(server_to_client_seed(kSlowId));
    CHECK_FALSE(expected.verify({reinterpret_cast<const std::uint8_t*>(all.data.data()), all.data.size()}));
    CHECK(read_until_closed(slow.get(), 5s).end == ReadEnd::Eof);
    CHECK(slow_backend.wait_finished(1, 10s));
    for (const auto& result : slow_backend.results()) CHECK_MESSAGE(result.ok(kSlowBytes), result.describe());
    CHECK_CLEAN_EXIT(ringlb);
}
