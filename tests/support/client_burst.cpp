#include "client_burst.hpp"

#include <poll.h>

#include <algorithm>

namespace ringlb::test {

BurstOutcome echo_burst(std::uint16_t port, unsigned count, std::vector<UniqueFd>& held,
                        std::chrono::milliseconds timeout) {
    static constexpr std::string_view kLine = "hello\n";
    std::vector<UniqueFd> clients;
    for (unsigned i = 0; i < count; ++i) clients.push_back(start_connect(port));
    BurstOutcome outcome;
    std::vector<pollfd> fds;
    for (auto& client : clients) {
        if (client.valid() && send_all(client.get(), kLine, 2s))
            fds.push_back({client.get(), POLLIN, 0});
        else
            ++outcome.closed;  // refused, or reset before its line went out
    }
    const auto deadline = Clock::now() + timeout;
    while (!fds.empty() && Clock::now() < deadline) {
        if (::poll(fds.data(), fds.size(), std::min(millis_until(deadline), 100)) <= 0) continue;
        for (auto& entry : fds) {
            if (entry.revents == 0) continue;
            const ReadResult read = read_exactly(entry.fd, kLine.size(), 1s);
            ++(read.data == kLine ? outcome.served : outcome.closed);
            entry.fd = -1;
        }
        std::erase_if(fds, [](const pollfd& entry) { return entry.fd < 0; });
    }
    outcome.unanswered = static_cast<unsigned>(fds.size());
    for (auto& client : clients) {
        pollfd probe{client.get(), POLLIN, 0};  // nothing more to read: served or unanswered
        if (client.valid() && ::poll(&probe, 1, 0) == 0) held.push_back(std::move(client));
    }
    return outcome;
}

}  // namespace ringlb::test
