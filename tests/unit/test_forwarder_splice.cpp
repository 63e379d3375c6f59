// The splice path of the session core (rule key zero_copy), driven by a recording engine: when a
// direction asks for splice_in instead of recv, what it does with the bytes a pipe holds, when it
// gives a pipe back and how, and when it goes back to copying.
#include <doctest/doctest.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "forwarder_harness.hpp"
#include "recording_engine.hpp"
#include "ringlb/core/forwarder.hpp"

using namespace ringlb;
using test::LoopbackPair;
using test::RecordingEngine;
using Kind = RecordingEngine::Kind;

namespace {

constexpr size_t kFullReceive = 1024;  // the recording engine's receive buffer

config::Config splice_config(config::ZeroCopy mode, uint32_t max_pipes = 1024) {
    config::Config config;
    config.source = "test";
    config.global.max_pipes = max_pipes;
    config::RuleConfig rule;
    rule.id = "web";
    rule.listen.push_back(*net::SocketAddress::parse("127.0.0.1:0"));
    rule.servers.push_back({*net::SocketAddress::parse("127.0.0.1:1"), 1});
    rule.zero_copy = mode;
    config.rules.push_back(rule);
    return config;
}

struct Harness : test::ForwarderHarness {
    using ForwarderHarness::ForwarderHarness;

    int client_fd = -1;
    int server_fd = -1;

    // Accepts the pair's connection and completes its connect: the session is established.
    void establish(const LoopbackPair& pair) {
        accept_client(pair);
        const auto connect = engine.take(Kind::Connect);
        engine.complete(connect, 0);
        turn();
        client_fd = pair.accepted;
        server_fd = connect.fd;
    }

    // A splice_in that moved `bytes` into pipe `pipe`.
    void complete_splice_in(const RecordingEngine::Request& request, int bytes, uint16_t pipe) {
        engine.ready.push_back({request.user_data, bytes, false, false, 0, true, pipe});
        turn();
    }
    // A splice_in that moved nothing: end of stream (0) or an error (-errno), no pipe taken.
    void complete_without_pipe(const RecordingEngine::Request& request, int result) {
        engine.complete(request, result);
        turn();
    }

    // One receive from the client on the copy path, of `size` bytes, sent on whole to the server.
    void copy_one_upstream(size_t size) {
        engine.complete_recv(engine.take(Kind::Recv, client_fd), std::string(size, 'c'), 0);
        turn();
        const auto send = engine.take(Kind::Send, server_fd);
        CHECK(send.bytes.size() == size);
        engine.complete(send, static_cast<int>(size));
        turn();
    }

    // One splice from the client of `bytes` into `pipe`, spliced on whole to the server.
    void splice_one_upstream(int bytes, uint16_t pipe) {
        complete_splice_in(engine.take(Kind::SpliceIn, client_fd), bytes, pipe);
        const auto out = engine.take(Kind::SpliceOut, server_fd);
        CHECK(out.pipe == pipe);
        CHECK(out.length == static_cast<uint32_t>(bytes));
        engine.complete(out, bytes);
        turn();
    }
};

using Released = std::vector<std::pair<uint16_t, bool>>;

}  // namespace

TEST_CASE("zero_copy splice: both sides splice_in; a pipe's bytes go out whole before the next splice_in") {
    Harness h(splice_config(config::ZeroCopy::Splice));
    LoopbackPair pair;
    h.establish(pair);
    CHECK(h.engine.has(Kind::SpliceIn, h.client_fd));
    CHECK(h.engine.has(Kind::SpliceIn, h.server_fd));
    CHECK_FALSE(h.engine.has(Kind::Recv));

    h.complete_splice_in(h.engine.take(Kind::SpliceIn, h.client_fd), 3000, 7);
    auto out = h.engine.take(Kind::SpliceOut, h.server_fd);
    CHECK(out.pipe == 7);
    CHECK(out.length == 3000);
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));  // one pipe's worth in flight

    h.engine.complete(out, 1000);  // short: the rest is asked for, from the same pipe
    h.turn();
    out = h.engine.take(Kind::SpliceOut, h.server_fd);
    CHECK(out.pipe == 7);
    CHECK(out.length == 2000);
    CHECK(h.engine.released_pipes.empty());
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));

    h.engine.complete(out, 2000);
    h.turn();
    CHECK(h.engine.released_pipes == Released{{7, true}});
    CHECK(h.engine.has(Kind::SpliceIn, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceOut));
    CHECK_FALSE(h.engine.has(Kind::Recv));

    // The other direction works the same way, into the client.
    h.complete_splice_in(h.engine.take(Kind::SpliceIn, h.server_fd), 500, 2);
    out = h.engine.take(Kind::SpliceOut, h.client_fd);
    CHECK(out.pipe == 2);
    CHECK(out.length == 500);
    h.engine.complete(out, 500);
    h.turn();
    CHECK(h.engine.released_pipes == Released{{7, true}, {2, true}});
    CHECK(h.engine.has(Kind::SpliceIn, h.server_fd));
    CHECK(h.forwarder.active_sessions() == 1);
}

TEST_CASE("zero_copy auto: four full receives in a row move a direction to splice, four small splices back") {
    Harness h(splice_config(config::ZeroCopy::Auto));
    LoopbackPair pair;
    h.establish(pair);
    CHECK(h.engine.has(Kind::Recv, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn));

    // Three full receives, then a short one: the count starts over, the copy path stays.
    for (int i = 0; i < 3; ++i) h.copy_one_upstream(kFullReceive);
    h.copy_one_upstream(kFullReceive - 1);
    CHECK(h.engine.has(Kind::Recv, h.client_fd));
    for (int i = 0; i < 3; ++i) h.copy_one_upstream(kFullReceive);
    CHECK(h.engine.has(Kind::Recv, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));

    // The fourth full one: no further receive; once its send is done, the next request is a splice.
    h.engine.complete_recv(h.engine.take(Kind::Recv, h.client_fd), std::string(kFullReceive, 'c'), 0);
    h.turn();
    CHECK_FALSE(h.engine.has(Kind::Recv, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));  // not while its bytes are queued
    const auto send = h.engine.take(Kind::Send, h.server_fd);
    h.engine.complete(send, static_cast<int>(kFullReceive));
    h.turn();
    CHECK(h.engine.has(Kind::SpliceIn, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::Recv, h.client_fd));
    // The other direction saw no bulk: it still copies.
    CHECK(h.engine.has(Kind::Recv, h.server_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.server_fd));

    // Splices under 4 KiB: a big one in between starts the count over; the fourth small one in a
    // row moves the direction back to receiving once its pipe is empty.
    for (int i = 0; i < 3; ++i) h.splice_one_upstream(100, 1);
    h.splice_one_upstream(4096, 1);
    for (int i = 0; i < 3; ++i) h.splice_one_upstream(4095, 1);
    CHECK(h.engine.has(Kind::SpliceIn, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::Recv, h.client_fd));
    h.complete_splice_in(h.engine.take(Kind::SpliceIn, h.client_fd), 10, 1);
    CHECK_FALSE(h.engine.has(Kind::Recv, h.client_fd));  // not while the pipe holds bytes
    const auto out = h.engine.take(Kind::SpliceOut, h.server_fd);
    h.engine.complete(out, 10);
    h.turn();
    CHECK(h.engine.has(Kind::Recv, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));
    CHECK(h.engine.released_pipes.size() == 8);
    for (const auto& [pipe, empty] : h.engine.released_pipes) CHECK(empty);
}

TEST_CASE("zero_copy splice: no pipe to be had (-ENOBUFS) copies the next 16 receives, then splices again") {
    Harness h(splice_config(config::ZeroCopy::Splice));
    LoopbackPair pair;
    h.establish(pair);
    h.complete_without_pipe(h.engine.take(Kind::SpliceIn, h.client_fd), -ENOBUFS);
    CHECK(h.forwarder.active_sessions() == 1);
    CHECK(h.engine.has(Kind::Recv, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));
    for (int i = 0; i < 15; ++i) {
        CAPTURE(i);
        h.copy_one_upstream(10);  // small receives: only the count matters in "splice"
        REQUIRE(h.engine.has(Kind::Recv, h.client_fd));
        CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));
    }
    h.copy_one_upstream(10);  // the 16th
    CHECK_FALSE(h.engine.has(Kind::Recv, h.client_fd));
    CHECK(h.engine.has(Kind::SpliceIn, h.client_fd));
    // The server's direction never fell back: it kept its splice_in.
    CHECK(h.engine.has(Kind::SpliceIn, h.server_fd));
    CHECK_FALSE(h.engine.has(Kind::Recv, h.server_fd));
    CHECK(h.engine.released_pipes.empty());
}

TEST_CASE("zero_copy splice: the end of the stream is passed on once the pipe is drained") {
    Harness h(splice_config(config::ZeroCopy::Splice));
    LoopbackPair pair;
    h.establish(pair);
    h.complete_splice_in(h.engine.take(Kind::SpliceIn, h.client_fd), 500, 4);
    auto out = h.engine.take(Kind::SpliceOut, h.server_fd);
    h.engine.complete(out, 200);
    h.turn();
    CHECK_FALSE(h.engine.has(Kind::Shutdown));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));  // no end of stream can come yet
    out = h.engine.take(Kind::SpliceOut, h.server_fd);
    CHECK(out.length == 300);
    h.engine.complete(out, 300);
    h.turn();
    CHECK_FALSE(h.engine.has(Kind::Shutdown));

    h.complete_without_pipe(h.engine.take(Kind::SpliceIn, h.client_fd), 0);  // the client's FIN
    CHECK(h.engine.has(Kind::Shutdown, h.server_fd));
    CHECK_FALSE(h.engine.has(Kind::Shutdown, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));  // nothing more to read that way
    CHECK(h.engine.released_pipes == Released{{4, true}});

    // The server's direction goes on, and its end closes the session.
    h.engine.complete(h.engine.take(Kind::Shutdown, h.server_fd), 0);
    h.turn();
    h.complete_splice_in(h.engine.take(Kind::SpliceIn, h.server_fd), 50, 5);
    h.engine.complete(h.engine.take(Kind::SpliceOut, h.client_fd), 50);
    h.turn();
    CHECK(h.engine.released_pipes == Released{{4, true}, {5, true}});
    h.complete_without_pipe(h.engine.take(Kind::SpliceIn, h.server_fd), 0);
    h.engine.complete(h.engine.take(Kind::Shutdown, h.client_fd), 0);
    h.turn();
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.engine.released_pipes.size() == 2);  // nothing more given back at the end
}

TEST_CASE("zero_copy splice: a session cut short closes a pipe that still holds bytes") {
    Harness h(splice_config(config::ZeroCopy::Splice));
    LoopbackPair pair;
    h.establish(pair);
    h.engine.cancel_completes = true;  // what is pending ends with -ECANCELED, as on the real engines
    h.complete_splice_in(h.engine.take(Kind::SpliceIn, h.client_fd), 500, 3);
    const auto out = h.engine.take(Kind::SpliceOut, h.server_fd);
    h.engine.complete(out, -EPIPE);  // the server went away with 500 bytes still in the pipe
    h.turn();
    h.turn();
    CHECK(h.forwarder.active_sessions() == 0);
    CHECK(h.engine.released_pipes == Released{{3, false}});
}

TEST_CASE("zero_copy splice: a session ending with its pipes empty or without any gives none back as full") {
    SUBCASE("no pipe ever taken") {
        Harness h(splice_config(config::ZeroCopy::Splice));
        LoopbackPair pair;
        h.establish(pair);
        h.engine.cancel_completes = true;
        h.complete_without_pipe(h.engine.take(Kind::SpliceIn, h.server_fd), -ECONNRESET);
        h.turn();
        CHECK(h.forwarder.active_sessions() == 0);
        CHECK(h.engine.released_pipes.empty());
    }
    SUBCASE("a pipe drained and given back before the end") {
        Harness h(splice_config(config::ZeroCopy::Splice));
        LoopbackPair pair;
        h.establish(pair);
        h.engine.cancel_completes = true;
        h.splice_one_upstream(700, 9);
        h.complete_without_pipe(h.engine.take(Kind::SpliceIn, h.server_fd), -ECONNRESET);
        h.turn();
        CHECK(h.forwarder.active_sessions() == 0);
        CHECK(h.engine.released_pipes == Released{{9, true}});
    }
    SUBCASE("bytes arriving in a pipe after the session began to close") {
        Harness h(splice_config(config::ZeroCopy::Splice));
        LoopbackPair pair;
        h.establish(pair);
        const auto client_in = h.engine.take(Kind::SpliceIn, h.client_fd);
        h.complete_without_pipe(h.engine.take(Kind::SpliceIn, h.server_fd), -ECONNRESET);
        CHECK(h.forwarder.active_sessions() == 1);  // the client's splice_in is still out
        h.complete_splice_in(client_in, 100, 6);  // it had moved bytes before the cancel
        CHECK(h.forwarder.active_sessions() == 0);
        CHECK(h.engine.released_pipes == Released{{6, false}});
    }
}

TEST_CASE("zero_copy splice with send_proxy: no splice from the client before the header is out") {
    config::Config config = splice_config(config::ZeroCopy::Splice);
    config.rules[0].send_proxy = config::ProxyProtocol::V1;
    Harness h(config);
    LoopbackPair pair;
    h.establish(pair);
    const auto header = h.engine.take(Kind::Send, h.server_fd);
    CHECK(header.bytes.rfind("PROXY TCP4 ", 0) == 0);
    CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));
    h.engine.complete(header, static_cast<int>(header.bytes.size()));
    h.turn();
    // A receive asked for while the header was going out completes on the copy path first.
    if (h.engine.has(Kind::Recv, h.client_fd)) {
        CHECK_FALSE(h.engine.has(Kind::SpliceIn, h.client_fd));
        h.copy_one_upstream(20);
    }
    CHECK(h.engine.has(Kind::SpliceIn, h.client_fd));
    CHECK_FALSE(h.engine.has(Kind::Recv, h.client_fd));
}

TEST_CASE("max_pipes = 0: zero_copy never splices") {
    for (const config::ZeroCopy mode : {config::ZeroCopy::Splice, config::ZeroCopy::Auto}) {
        CAPTURE(static_cast<int>(mode));
        Harness h(splice_config(mode, 0));
        LoopbackPair pair;
        h.establish(pair);
        CHECK(h.engine.has(Kind::Recv, h.client_fd));
        CHECK(h.engine.has(Kind::Recv, h.server_fd));
        for (int i = 0; i < 8; ++i) h.copy_one_upstream(kFullReceive);
        CHECK(h.engine.has(Kind::Recv, h.client_fd));
        CHECK(h.engine.count(Kind::SpliceIn) == 0);
    }
}
