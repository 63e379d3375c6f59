// The io_uring engine with a completion queue far smaller than the burst of completions it gets:
// the kernel keeps what does not fit aside (IORING_FEAT_NODROP), and one poll() hands every
// completion over, byte for byte, none lost and none left for a later round.
#include <doctest/doctest.h>
#include <sys/socket.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ringlb/engine/uring/uring_engine.hpp"
#include "ringlb/net/socket.hpp"

using namespace ringlb::engine;
using ringlb::net::UniqueFd;
using namespace std::chrono_literals;

namespace {

struct Collector final : CompletionHandler {
    std::vector<Completion> completions;
    void on_completion(const Completion& completion) override { completions.push_back(completion); }
};

std::unique_ptr<UringEngine> small_queue_engine(bool multishot) {
    EngineOptions options;
    options.buffer_size = 4096;
    options.initial_buffers = 256;
    options.max_buffers = 256;
    options.queue_depth = 8;
    options.completion_queue_entries = 8;
    options.multishot_recv = multishot;
    try {
        return std::make_unique<UringEngine>(options);
    } catch (const EngineUnavailable& e) {
        MESSAGE("skipped: ", e.what());
        return nullptr;
    }
}

}  // namespace

TEST_CASE("uring: 64 completions into a completion queue of 8 all come out of one poll, byte for byte") {
    for (const bool multishot : {false, true}) {
        CAPTURE(multishot);
        const auto engine = small_queue_engine(multishot);
        if (!engine) return;
        constexpr int kPairs = 64;
        std::vector<UniqueFd> readers, writers;
        for (int i = 0; i < kPairs; ++i) {
            int fds[2];
            REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
            readers.emplace_back(fds[0]);
            writers.emplace_back(fds[1]);
            // A room above one buffer arms a multishot receive where they are on.
            engine->recv(fds[0], multishot ? 2 * engine->buffer_size() : engine->buffer_size(), 1000 + i);
        }
        Collector none;
        engine->poll(0ms, none);  // every receive is in the kernel now, waiting
        REQUIRE(none.completions.empty());

        for (int i = 0; i < kPairs; ++i) {
            const std::string message = "message " + std::to_string(i);
            REQUIRE(::send(writers[i].get(), message.data(), message.size(), 0) == static_cast<ssize_t>(message.size()));
        }
        Collector collector;
        engine->poll(1000ms, collector);
        CHECK(collector.completions.size() == kPairs);

        std::map<uint64_t, std::string> received;
        for (const Completion& completion : collector.completions) {
            REQUIRE(completion.result > 0);
            REQUIRE(completion.has_buffer);
            received[completion.user_data] =
                std::string(reinterpret_cast<const char*>(engine->buffer_data(completion.buffer_id)),
                            static_cast<size_t>(completion.result));
            engine->release_buffer(completion.buffer_id);
        }
        for (int i = 0; i < kPairs; ++i) CHECK(received[1000 + i] == "message " + std::to_string(i));
        for (auto& reader : readers) {
            engine->cancel(reader.get());
            engine->forget(reader.get());
        }
        Collector rest;
        for (int i = 0; i < 5; ++i) engine->poll(10ms, rest);
    }
}
