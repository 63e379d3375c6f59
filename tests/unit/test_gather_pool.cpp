// The pool that keeps the parts of gathered sends where the kernel can read them.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "ringlb/engine/gather_pool.hpp"

using namespace ringlb::engine;

namespace {

std::string gathered_bytes(const msghdr& message) {
    std::string bytes;
    for (size_t i = 0; i < message.msg_iovlen; ++i)
        bytes.append(static_cast<const char*>(message.msg_iov[i].iov_base), message.msg_iov[i].iov_len);
    return bytes;
}

SendPart part_of(const std::string& text) {
    return {reinterpret_cast<const std::byte*>(text.data()), static_cast<uint32_t>(text.size())};
}

}  // namespace

TEST_CASE("a stored gather names its parts in order and keeps its address while the pool grows") {
    const std::string one = "one", two = "two", three = "three";
    GatherPool pool;
    const std::vector<SendPart> parts{part_of(one), part_of(two), part_of(three)};
    const uint32_t first = pool.store(parts);
    msghdr* message = pool.message(first);
    for (int i = 0; i < 1000; ++i) pool.store(parts);  // many sends in flight at once
    CHECK(pool.message(first) == message);
    CHECK(message->msg_iovlen == 3);
    CHECK(gathered_bytes(*message) == "onetwothree");
    CHECK(message->msg_name == nullptr);
    CHECK(message->msg_control == nullptr);
}

TEST_CASE("a released gather is reused, holding only its new parts") {
    const std::string long_part = "a longer first part", short_part = "x";
    GatherPool pool;
    const uint32_t index = pool.store(std::vector<SendPart>{part_of(long_part), part_of(long_part)});
    pool.release(index);
    const uint32_t again = pool.store(std::vector<SendPart>{part_of(short_part)});
    CHECK(again == index);
    CHECK(gathered_bytes(*pool.message(again)) == "x");
}

TEST_CASE("a gather of no parts or of more than kMaxSendParts is refused") {
    const std::string text = "p";
    GatherPool pool;
    CHECK_THROWS_AS(pool.store(std::vector<SendPart>{}), std::logic_error);
    CHECK_THROWS_AS(pool.store(std::vector<SendPart>(kMaxSendParts + 1, part_of(text))), std::logic_error);
    CHECK_NOTHROW(pool.store(std::vector<SendPart>(kMaxSendParts, part_of(text))));
}
