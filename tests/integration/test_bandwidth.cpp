// upload_rate / download_rate: a limited session moves no more than its rate each way, however
// fast its peers send, and a rule without limits on the same ringlb is not held back.
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <future>
#include <thread>
#include <vector>

#include "config_text.hpp"
#include "net_util.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr std::uint64_t kUploadRate = 1024 * 1024;   // "1m"
constexpr std::uint64_t kDownloadRate = 512 * 1024;  // "512k"

UniqueFd accept_one(int listener, std::chrono::milliseconds timeout) {
    pollfd entry{listener, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(timeout.count())) != 1) return UniqueFd();
    return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

// Sends as fast as the socket takes bytes until `stop` (or an error).
void pour(int fd, const std::atomic<bool>& stop) {
    std::vector<char> bytes(256 * 1024, 'x');
    while (!stop.load()) {
        pollfd entry{fd, POLLOUT, 0};
        if (::poll(&entry, 1, 50) <= 0) continue;
        const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN && errno != EINTR) return;
    }
}

// Bytes received during `window` from the first byte on; 0 if none arrives within 5 s.
std::uint64_t measure(int fd, std::chrono::milliseconds window) {
    std::vector<char> buffer(256 * 1024);
    std::uint64_t total = 0;
    auto end = Clock::now() + 5s;
    bool started = false;
    while (Clock::now() < end) {
        pollfd entry{fd, POLLIN, 0};
        if (::poll(&entry, 1, millis_until(end)) <= 0) continue;
        const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) break;
        if (got < 0) continue;
        if (!started) {
            started = true;
            end = Clock::now() + window;
        }
        total += static_cast<std::uint64_t>(got);
    }
    return total;
}

// A client of `port` and the connection ringlb made for it to `backend`.
struct Pair {
    UniqueFd client;
    UniqueFd server;
};

Pair open_pair(std::uint16_t port, int backend) {
    Pair pair;
    pair.client = connect_to(port);
    if (pair.client.valid()) pair.server = accept_one(backend, 5s);
    return pair;
}

// Bytes `reader` receives during `window` while `writer` sends all it can.
std::uint64_t transfer(int writer, int reader, std::chrono::milliseconds window) {
    std::atomic<bool> stop{false};
    std::thread sender([&] { pour(writer, stop); });
    const std::uint64_t received = measure(reader, window);
    stop = true;
    sender.join();
    return received;
}

void check_within_ten_percent(std::uint64_t bytes, std::uint64_t rate, std::chrono::milliseconds window) {
    const double expected = static_cast<double>(rate) * std::chrono::duration<double>(window).count();
    INFO("moved ", bytes, " bytes in ", window.count(), " ms; the rate allows ", expected);
    CHECK(static_cast<double>(bytes) >= expected * 0.9);
    CHECK(static_cast<double>(bytes) <= expected * 1.1);
}

}  // namespace

TEST_CASE("upload_rate and download_rate hold each direction of a session to its rate; an unlimited rule is not held back") {
    UniqueFd limited_backend = listen_on_loopback(0);
    UniqueFd free_backend = listen_on_loopback(0);
    REQUIRE(limited_backend.valid());
    REQUIRE(free_backend.valid());
    const std::uint16_t limited_port = find_free_port();
    const std::uint16_t free_port = find_free_port();
    RuleSpec limited = one_server_rule("limited", limited_port, loopback_endpoint(local_port(limited_backend.get())));
    limited.extra_lines = {"upload_rate = \"1m\"", "download_rate = \"512k\""};
    const RuleSpec unlimited = one_server_rule("free", free_port, loopback_endpoint(local_port(free_backend.get())));
    RinglbProcess ringlb(render_config(GlobalSpec{}, {limited, unlimited}));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE_READY(ringlb);

    constexpr auto kWindow = 5000ms;
    SUBCASE("both directions of limited sessions, at once") {
        Pair upload = open_pair(limited_port, limited_backend.get());
        Pair download = open_pair(limited_port, limited_backend.get());
        REQUIRE(upload.server.valid());
        REQUIRE(download.server.valid());
        auto up = std::async(std::launch::async, [&] { return transfer(upload.client.get(), upload.server.get(), kWindow); });
        const std::uint64_t down = transfer(download.server.get(), download.client.get(), kWindow);
        INFO("upload (upload_rate = 1m)");
        check_within_ten_percent(up.get(), kUploadRate, kWindow);
        INFO("download (download_rate = 512k)");
        check_within_ten_percent(down, kDownloadRate, kWindow);
    }
    SUBCASE("a rule without limits on the same ringlb") {
        Pair upload = open_pair(free_port, free_backend.get());
        REQUIRE(upload.server.valid());
        const std::uint64_t up = transfer(upload.client.get(), upload.server.get(), 1000ms);
        Pair download = open_pair(free_port, free_backend.get());
        REQUIRE(download.server.valid());
        const std::uint64_t down = transfer(download.server.get(), download.client.get(), 1000ms);
        // More in one second than the limited rule allows in five: no limit applied.
        INFO("unlimited: up ", up, " bytes, down ", down, " bytes in 1 s");
        CHECK(up > 5 * kUploadRate);
        CHECK(down > 5 * kUploadRate);
    }
    CHECK_CLEAN_EXIT(ringlb);
}
