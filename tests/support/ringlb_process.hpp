#pragma once
// Running the ringlb binary under test: a long-running instance (RinglbProcess) or a short run to
// completion (run_to_exit), each with its output captured in a temporary file.
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net_util.hpp"

namespace ringlb::test {

// The engine and binary chosen by the environment (RINGLB_TEST_ENGINE, RINGLB_BINARY), with the
// defaults "epoll" and "./ringlb".
std::string test_engine();
std::string ringlb_binary();

// A file in $TMPDIR (or /tmp) that is removed on destruction.
class TempFile {
public:
    // Creates "<dir>/ringlb-test-XXXXXX<suffix>" holding `content`.
    explicit TempFile(std::string_view content = "", std::string_view suffix = "");
    TempFile(TempFile&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    TempFile& operator=(TempFile&&) = delete;
    ~TempFile();

    const std::string& path() const { return path_; }
    std::string read() const;

private:
    std::string path_;
};

// How a child process ended.
struct ExitStatus {
    bool exited = false;    // exit() was called: `code` is valid
    int code = -1;
    int signal = 0;         // killed by this signal
    bool timed_out = false; // did not end in time and was killed with SIGKILL
    std::string describe() const;
};

struct RunResult {
    ExitStatus status;
    std::string output;  // stdout and stderr interleaved
};

// Runs `$RINGLB_BINARY args...` to completion (killed after `timeout`).
RunResult run_to_exit(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 10s);

// How to start a RinglbProcess when the environment's defaults are not enough: the soak program
// names the binary on its command line, and the exhaustion tests start ringlb under a low
// descriptor limit.
struct RinglbOptions {
    std::vector<std::string> extra_args;
    std::string engine = test_engine();
    std::string binary = ringlb_binary();
    // RLIMIT_NOFILE (soft and hard) set in the child just before exec; nullopt = inherited.
    std::optional<rlim_t> open_files_limit;
    // Only the soft RLIMIT_NOFILE (the hard one inherited); wins over open_files_limit.
    std::optional<rlim_t> open_files_soft_limit;
    // "NAME=value" entries added to the inherited environment (e.g. RINGLB_FAULT).
    std::vector<std::string> environment;
    // Socket activation as a service manager does it: these descriptors become fds 3, 4, ... in
    // the child, with LISTEN_FDS, LISTEN_PID (the child's pid) and LISTEN_FDNAMES (when not empty).
    std::vector<int> listen_fds;
    std::string listen_fdnames;
};

// One running ringlb: `<binary> -c <config file> --engine <engine> extra_args...`. The
// destructor always kills and reaps it, so a failing test never leaves a process behind.
class RinglbProcess {
public:
    explicit RinglbProcess(std::string_view config_toml, std::vector<std::string> extra_args = {},
                           std::string engine = test_engine());
    // Options first, so that `RinglbProcess(config, {})` keeps meaning "no extra arguments".
    RinglbProcess(const RinglbOptions& options, std::string_view config_toml);
    RinglbProcess(const RinglbProcess&) = delete;
    RinglbProcess& operator=(const RinglbProcess&) = delete;
    ~RinglbProcess();

    pid_t pid() const { return pid_; }
    const std::string& config_path() const { return config_.path(); }

    // Polls the log until it contains `needle`. False on timeout or if the process ended first.
    bool wait_for_log(std::string_view needle, std::chrono::milliseconds timeout = 10s);
    // Waits for the "ready" log line (all listeners bound).
    bool wait_ready(std::chrono::milliseconds timeout = 10s) { return wait_for_log("ready", timeout); }
    // True while the process has not exited.
    bool running();
    // Sends `signal` (SIGTERM by default) and waits for the exit; SIGKILL after 10 s.
    ExitStatus stop(int signal = SIGTERM);
    // Waits for the process to end on its own (killed after `timeout`).
    ExitStatus wait_exit(std::chrono::milliseconds timeout = 10s);
    std::string log_text() const { return log_.read(); }
    // The first log line: the one naming the engine and its features.
    std::string first_log_line() const {
        const std::string text = log_text();
        return text.substr(0, text.find('\n'));
    }

private:
    bool reap(int options);

    TempFile config_;
    TempFile log_;
    pid_t pid_ = -1;
    bool reaped_ = false;
    ExitStatus status_;
};

}  // namespace ringlb::test
