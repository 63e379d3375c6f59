#include "ringlb/app/upgrade.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "ringlb/net/handover.hpp"

extern char** environ;  // NOLINT: the process environment, as POSIX declares it

namespace ringlb::app {

namespace {

constexpr std::string_view kReady = "ready\n";

bool belongs_to_this_process_alone(std::string_view entry) {
    for (std::string_view name : {"WATCHDOG_PID=", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "RINGLB_HANDOVER="})
        if (entry.starts_with(name)) return true;
    return false;
}

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
    return "ended";
}

}  // namespace

OwnCommand read_own_command() {
    OwnCommand command;
    std::string path(4096, '\0');
    const ssize_t length = ::readlink("/proc/self/exe", path.data(), path.size());
    if (length <= 0) throw net::SystemError("readlink /proc/self/exe", errno);
    path.resize(static_cast<size_t>(length));
    command.binary = std::move(path);
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t start = 0; start < text.size();) {
        const size_t end = text.find('\0', start);
        command.argv.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (command.argv.empty()) throw std::runtime_error("/proc/self/cmdline is empty");
    return command;
}

std::vector<std::string> environment_for_upgrade(const std::string& handover) {
    std::vector<std::string> environment;
    for (char** entry = environ; *entry != nullptr; ++entry)
        if (!belongs_to_this_process_alone(*entry)) environment.emplace_back(*entry);
    environment.push_back(std::string(net::kHandoverVariable) + "=" + handover);
    return environment;
}

UpgradeChild::UpgradeChild(pid_t pid, net::UniqueFd report, std::chrono::steady_clock::time_point deadline)
    : pid_(pid), report_(std::move(report)), deadline_(deadline) {}

UpgradeChild::Outcome UpgradeChild::poll(std::string* why) {
    char buffer[64];
    for (;;) {
        const ssize_t got = ::recv(report_.get(), buffer, sizeof buffer, MSG_DONTWAIT);
        if (got > 0) {
            received_.append(buffer, static_cast<size_t>(got));
            if (received_.starts_with(kReady)) return Outcome::Ready;
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // The end of the stream (or an error): the new process is gone without being ready.
        *why = "the new process (pid " + std::to_string(pid_) + ") " + reap_and_describe() + " before it was ready";
        return Outcome::Failed;
    }
    if (std::chrono::steady_clock::now() < deadline_) return Outcome::Waiting;
    ::kill(pid_, SIGKILL);
    *why = "the new process (pid " + std::to_string(pid_) + ") was not ready within " +
           std::to_string(kUpgradeReadyTimeout.count()) + " s and was killed";
    reap_and_describe();
    return Outcome::Failed;
}

std::string UpgradeChild::reap_and_describe() {
    int status = 0;
    pid_t done = -1;
    do {
        done = ::waitpid(pid_, &status, 0);
    } while (done < 0 && errno == EINTR);
    return done == pid_ ? describe_wait_status(status) : "ended";
}

void report_ready(const net::UniqueFd& report) {
    // Best effort: a failure means the old process is gone already, and nobody waits.
    (void)::send(report.get(), kReady.data(), kReady.size(), MSG_NOSIGNAL);
}

}  // namespace ringlb::app
