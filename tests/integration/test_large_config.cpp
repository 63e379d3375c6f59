// Large configurations: start-up and reload take time linear in the number of servers, and the
// control thread keeps answering while a reload of such a file is read and checked.
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "admin_client.hpp"
#include "config_text.hpp"
#include "test_helpers.hpp"

using namespace ringlb::test;

namespace {

constexpr size_t kRules = 10;

// `servers` servers spread over kRules rules, each rule on a listen port of its own. The servers
// are loopback addresses nobody connects to: the test is about reading and applying the file.
std::string large_config(size_t servers, const std::vector<std::uint16_t>& ports, std::uint16_t admin_port,
                         std::uint16_t first_server_port = 9000) {
    std::string text = "[global]\nthreads = 1\nshutdown_timeout = \"1s\"\n";
    for (size_t rule = 0; rule < kRules; ++rule) {
        text += "\n[[rule]]\nid = \"big-" + std::to_string(rule) + "\"\nlisten = [\"" + loopback_endpoint(ports[rule]) +
                "\"]\nservers = [\n";
        for (size_t i = rule; i < servers; i += kRules) {
            const size_t port = i == 0 ? first_server_port : 9000 + i % 1000;
            text += "  \"127." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
                    std::to_string(i & 255) + ":" + std::to_string(port) + "\",\n";
        }
        text += "]\n";
    }
    if (admin_port != 0) text += "\n[admin]\nlisten = \"" + loopback_endpoint(admin_port) + "\"\n";
    return text;
}

std::vector<std::uint16_t> free_ports(size_t count) {
    std::vector<std::uint16_t> ports;
    while (ports.size() < count) {
        const std::uint16_t port = find_free_port();
        if (std::find(ports.begin(), ports.end(), port) == ports.end()) ports.push_back(port);
    }
    return ports;
}

// Wall time from starting ringlb to its "ready" line.
std::chrono::milliseconds time_to_ready(size_t servers) {
    const std::string config = large_config(servers, free_ports(kRules), 0);
    const auto start = std::chrono::steady_clock::now();
    RinglbProcess ringlb(config);
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE(ringlb.wait_ready(120s));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    CHECK_CLEAN_EXIT(ringlb);
    return took;
}

}  // namespace

TEST_SUITE("scale") {

TEST_CASE("large config: 100,000 servers are ready within 12 times the time 10,000 take") {
    // The shortest of five starts of each size, taken in turns: the machine may be busy with
    // other work for a while, and the shortest start is the one least disturbed by it; taking
    // turns keeps such a while from falling on one size only.
    std::chrono::milliseconds ten_thousand = std::chrono::hours(1);
    std::chrono::milliseconds hundred_thousand = std::chrono::hours(1);
    for (int round = 0; round < 5; ++round) {
        ten_thousand = std::min(ten_thousand, time_to_ready(10'000));
        hundred_thousand = std::min(hundred_thousand, time_to_ready(100'000));
    }
    MESSAGE("start-up to ready: 10,000 servers ", ten_thousand.count(), " ms, 100,000 servers ",
            hundred_thousand.count(), " ms");
    CHECK(hundred_thousand.count() <= 12 * ten_thousand.count());
}

TEST_CASE("large config: show stats is answered while a reload of 100,000 servers is under way") {
    const std::uint16_t admin_port = find_free_port();
    const std::vector<std::uint16_t> ports = free_ports(kRules);
    RinglbProcess ringlb(large_config(100'000, ports, admin_port));
    RINGLB_LOG_ON_FAILURE(ringlb);
    REQUIRE(ringlb.wait_ready(120s));

    // One server changes, so the whole rule is rebuilt, not only the file read again.
    {
        std::ofstream out(ringlb.config_path(), std::ios::trunc);
        out << large_config(100'000, ports, admin_port, 9999);
    }
    UniqueFd reloader = connect_to(admin_port);
    REQUIRE(reloader.valid());
    const auto reload_sent = std::chrono::steady_clock::now();
    REQUIRE(send_all(reloader.get(), "reload\n"));

    int answered_during_reload = 0;
    std::chrono::milliseconds slowest{0};
    while (!wait_readable(reloader.get(), 0ms) && std::chrono::steady_clock::now() - reload_sent < 60s) {
        const auto asked = std::chrono::steady_clock::now();
        const AdminReply stats = admin_command(admin_port, "show stats");
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - asked);
        slowest = std::max(slowest, took);
        REQUIRE(stats.ok());
        CHECK(took < 1s);
        // Counted only while the reload's reply has not come: answered during the reload, not after it.
        if (!wait_readable(reloader.get(), 0ms)) ++answered_during_reload;
        std::this_thread::sleep_for(5ms);
    }
    const AdminReply reload = read_admin_reply(reloader.get(), 60s);
    const auto reload_took =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - reload_sent);
    MESSAGE("reload of 100,000 servers: ", reload_took.count(), " ms; show stats answered ", answered_during_reload,
            " times meanwhile, the slowest in ", slowest.count(), " ms");
    CHECK(reload.ok());
    CHECK(reload.body.find("reloaded") != std::string::npos);
    CHECK(answered_during_reload >= 1);
    CHECK(admin_command(admin_port, "show stats").ok());
    CHECK_CLEAN_EXIT(ringlb);
}

}  // TEST_SUITE("scale")
