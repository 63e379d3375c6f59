// The runtime's side of upgrades (see app/upgrade.hpp): starting the new process with every
// listening socket and claim, waiting for it, handing over; and, in the new process, taking them.
#include <sys/socket.h>
#include <unistd.h>

#include "ringlb/admin/admin_server.hpp"
#include "ringlb/admin/metrics.hpp"
#include "ringlb/app/runtime.hpp"
#include "ringlb/engine/dispatch.hpp"
#include "ringlb/net/handover.hpp"

namespace ringlb::app {

namespace {

using Clock = std::chrono::steady_clock;

// A connected pair: the old process keeps the first (non-blocking), the new one gets the second.
std::pair<net::UniqueFd, net::UniqueFd> report_pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        throw net::SystemError("socketpair for the upgrade report", errno);
    std::pair<net::UniqueFd, net::UniqueFd> pair{net::UniqueFd(fds[0]), net::UniqueFd(fds[1])};
    net::set_nonblocking(pair.first.get(), true);
    return pair;
}

}  // namespace

void Runtime::take_handover() {
    try {
        own_command_ = read_own_command();
    } catch (const std::exception& e) {
        log_.warn("upgrades will not be possible: ", e.what());
    }
    std::optional<net::Handover> handover = net::take_handover();
    if (!handover) return;
    for (auto& [fd, held_elsewhere] : handover->listeners) {
        std::string why_not;
        const int number = fd.get();
        if (!inherited_.add(std::move(fd), held_elsewhere, &why_not))
            log_.warn("upgrade: passed fd ", number, " closed: ", why_not);
    }
    for (net::UniqueFd& fd : handover->claims)
        if (auto claim = net::ListenLock::adopt(std::move(fd)))
            listen_claims_.emplace(claim->first, std::move(claim->second));
    upgrade_report_ = std::move(handover->report);
    log_.info("upgrade: taking over from pid ", ::getppid(), ": ", inherited_.socket_count(), " listening socket(s), ",
              listen_claims_.size(), " listen address claim(s)");
}

void Runtime::report_upgraded() {
    if (!upgrade_report_) return;
    // The service's main process changes: the unit needs NotifyAccess=all for this to count.
    notifier_.send("MAINPID=" + std::to_string(::getpid()));
    report_ready(upgrade_report_);
    upgrade_report_.reset();
}

void Runtime::begin_upgrade() {
    if (upgrade_) {
        log_.warn("upgrade: pid ", upgrade_->pid(), " is starting already; SIGUSR2 ignored");
        return;
    }
    try {
        if (own_command_.binary.empty()) throw std::runtime_error("the path of the binary could not be read at start");
        auto [ours, theirs] = report_pair();
        std::vector<net::HandoverEntry> entries{{net::HandoverKind::Report, 3}};
        std::vector<int> descriptors{theirs.get()};
        const auto pass = [&](net::HandoverKind kind, int fd) {
            descriptors.push_back(fd);
            entries.push_back({kind, 2 + static_cast<int>(descriptors.size())});
        };
        // Every worker's listeners: closing one of them would reset the clients queued on it.
        std::vector<std::pair<int, bool>> listening;
        if (!on_every_worker([&](core::Forwarder& forwarder) {
                for (const auto& listener : forwarder.listening_descriptors()) listening.push_back(listener);
            }))
            throw std::runtime_error("a worker did not answer");
        for (const auto& [fd, held_elsewhere] : listening)
            pass(held_elsewhere ? net::HandoverKind::ListenHeld : net::HandoverKind::Listen, fd);
        for (const auto& [address, claim] : listen_claims_) pass(net::HandoverKind::Claim, claim.fd());
        close_control_ports();  // for the new process to bind
        pid_t pid = -1;
        try {
            pid = net::spawn_with_descriptors(own_command_.binary, own_command_.argv,
                                              environment_for_upgrade(net::encode_handover(entries)), descriptors);
        } catch (...) {
            open_control_ports();
            throw;
        }
        upgrade_.emplace(pid, std::move(ours), Clock::now() + kUpgradeReadyTimeout);
        log_.info("upgrade: started ", own_command_.binary, " as pid ", pid, " with ", listening.size(),
                  " listening socket(s) and ", listen_claims_.size(), " claim(s); serving on until it is ready");
    } catch (const std::exception& e) {
        log_.error("upgrade failed, this process serves on: ", e.what());
    }
}

void Runtime::check_upgrade() {
    if (!upgrade_) return;
    std::string why;
    switch (upgrade_->poll(&why)) {
        case UpgradeChild::Outcome::Waiting:
            return;
        case UpgradeChild::Outcome::Ready:
            log_.info("upgrade: pid ", upgrade_->pid(), " is ready and serves; this process (pid ", ::getpid(),
                      ") stops accepting and lets its sessions finish");
            handed_over_ = true;
            upgrade_.reset();
            return;
        case UpgradeChild::Outcome::Failed:
            upgrade_.reset();
            log_.error("upgrade failed, this process serves on: ", why);
            try {
                open_control_ports();
            } catch (const std::exception& e) {
                log_.error("upgrade: the admin or metrics port cannot be opened again: ", e.what());
            }
            return;
    }
}

void Runtime::close_control_ports() {
    // As at the end of the run: the metrics server's cancelled requests complete first.
    if (metrics_server_) {
        metrics_server_->stop();
        const auto until = Clock::now() + std::chrono::seconds(2);
        while (!metrics_server_->idle() && Clock::now() < until) dispatcher_->run_once(std::chrono::milliseconds(10));
        metrics_server_.reset();
    }
    admin_server_.reset();
}

}  // namespace ringlb::app
