// Failures that must be loud, against the real binary with the RINGLB_FAULT test hooks: a worker
// whose engine breaks makes ringlb log why and exit 1 (never a process that looks alive and serves
// nothing); an undersized io_uring completion queue loses no completion; a worker whose engine
// differs from worker 0's is logged.
#include <set>
#include <thread>

#include "backends.hpp"
#include "config_text.hpp"
#include "stream_client.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

RinglbOptions with_fault(std::string fault) {
    RinglbOptions options;
    options.environment = {"RINGLB_FAULT=" + std::move(fault)};
    return options;
}

// One line echoed through a fresh session.
bool echoes(std::uint16_t port) {
    UniqueFd client = connect_to(port, Family::V4, 2s);
    return client.valid() && send_all(client.get(), "ping\n", 2s) && read_exactly(client.get(), 5, 2s).data == "ping\n";
}

}  // namespace

TEST_CASE("loud failures: a worker whose engine fails for good makes ringlb log why and exit 1") {
    for (const char* fault : {"engine-poll-fails-after:12@1", "engine-poll-fails-after:12"}) {
        CAPTURE(fault);
        EchoBackend backend;
        const std::uint16_t port = find_free_port();
        GlobalSpec global;
        global.threads = 2;
        RinglbProcess ringlb(with_fault(fault), simple_config(port, {{backend.endpoint()}}, global));
        RINGLB_LOG_ON_FAILURE(ringlb);
        REQUIRE_READY(ringlb);
        // Serving, with live sessions, until the engine breaks a few seconds in (an idle worker
        // polls four times a second).
        UniqueFd held = connect_to(port);
        REQUIRE(held.valid());
        CHECK(send_all(held.get(), "held\n"));
        CHECK(read_exactly(held.get(), 5, 2s).data == "held\n");
        const ExitStatus status = ringlb.wait_exit(15s);
        INFO("ringlb ended with ", status.describe());
        CHECK(status.exited);
        CHECK(status.code == 1);
        const std::string log = ringlb.log_text();
        const std::string engine_call = test_engine() == "uring" ? "io_uring_submit_and_wait_timeout" : "epoll_wait";
        CHECK(log.find(" failed: " + engine_call + " (RINGLB_FAULT)") != std::string::npos);
        CHECK(log.find("error exiting with status 1: worker ") != std::string::npos);
        // Its sessions ended with it: the client sees the end, not a silent hang.
        CHECK(read_until_closed(held.get(), 2s).closed());
        CHECK_FALSE(echoes(port));
    }
}

TEST_CASE("loud failures: a malformed RINGLB_FAULT is refused at start") {
    const std::uint16_t port = find_free_port();
    RinglbProcess ringlb(with_fault("engine-poll-fails-after:soon"), simple_config(port, {{"127.0.0.1:1"}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    const ExitStatus status = ringlb.wait_exit(5s);
    CHECK(status.exited);
    CHECK(status.code == 2);
    CHECK(ringlb.log_text().find("RINGLB_FAULT: \"engine-poll-fails-after:soon\": not a number") != std::string::npos);
}

TEST_CASE("loud failures: with an undersized completion queue (8 entries), 200 sessions all arrive byte for byte") {
    constexpr unsigned kConnections = 200;
    constexpr std::uint64_t kBytesEachWay = 256 * 1024;
    constexpr std::uint64_t kFirstId = 0xC0E0000;
    StreamCheckBackend backend(kBytesEachWay);
    const std::uint16_t port = find_free_port();
    RinglbProcess ringlb(with_fault("completion-queue:8"), simple_config(port, {{backend.endpoint()}}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    if (test_engine() != "uring") MESSAGE("the epoll engine has no completion queue: this runs as a plain integrity check");

    const auto results = run_stream_clients(port, kConnections, kFirstId, kBytesEachWay, 60s);
    REQUIRE(results.size() == kConnections);
    unsigned ok = 0;
    for (const auto& result : results) {
        CHECK_MESSAGE(result.ok(kBytesEachWay), result.describe());
        ok += result.ok(kBytesEachWay) ? 1 : 0;
    }
    CHECK(ok == kConnections);
    CHECK(backend.wait_finished(kConnections, 10s));
    std::set<std::uint64_t> ids;
    for (const auto& result : backend.results()) {
        CHECK_MESSAGE(result.ok(kBytesEachWay), result.describe());
        ids.insert(result.id);
    }
    CHECK(ids.size() == kConnections);
    CHECK(ringlb.running());
    CHECK_CLEAN_EXIT(ringlb);
}

TEST_CASE("loud failures: a worker that falls back to epoll while worker 0 got io_uring is logged") {
    if (test_engine() != "uring") {
        MESSAGE("skipped: needs io_uring (RINGLB_TEST_ENGINE=uring)");
        return;
    }
    EchoBackend backend;
    const std::uint16_t port = find_free_port();
    GlobalSpec global;
    global.threads = 3;
    RinglbOptions options = with_fault("uring-unavailable@2");
    options.engine = "auto";
    RinglbProcess ringlb(options, simple_config(port, {{backend.endpoint()}}, global));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);
    REQUIRE(ringlb.first_log_line().find("engine=uring") != std::string::npos);
    const std::string log = ringlb.log_text();
    CHECK(log.find("warn worker 2 runs a different engine than worker 0 (uring): engine=epoll (io_uring unavailable") !=
          std::string::npos);
    CHECK(log.find("worker 1 runs a different engine") == std::string::npos);
    // It still serves, on all three workers.
    for (int i = 0; i < 10; ++i) CHECK(echoes(port));
    CHECK_CLEAN_EXIT(ringlb);
}
