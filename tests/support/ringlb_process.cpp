#include "ringlb_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace ringlb::test {

std::string test_engine() {
    const char* engine = std::getenv("RINGLB_TEST_ENGINE");
    return engine && *engine ? engine : "epoll";
}

std::string ringlb_binary() {
    const char* binary = std::getenv("RINGLB_BINARY");
    return binary && *binary ? binary : "./ringlb";
}

// ---------------------------------------------------------------------------------------------
// TempFile

namespace {

std::string temp_dir() {
    const char* dir = std::getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw std::runtime_error(std::string("write temp file: ") + std::strerror(errno));
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

}  // namespace

TempFile::TempFile(std::string_view content, std::string_view suffix) {
    std::string pattern = temp_dir() + "/ringlb-test-XXXXXX" + std::string(suffix);
    int fd = ::mkostemps(pattern.data(), static_cast<int>(suffix.size()), O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("mkostemps " + pattern + ": " + std::strerror(errno));
    UniqueFd owner(fd);
    path_ = pattern;
    write_all(fd, content);
}

TempFile::~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
}

std::string TempFile::read() const {
    std::ifstream in(path_, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// ---------------------------------------------------------------------------------------------
// Processes

std::string ExitStatus::describe() const {
    std::ostringstream out;
    if (exited) out << "exit code " << code;
    else if (signal != 0) out << "killed by signal " << signal << " (" << strsignal(signal) << ")";
    else out << "not finished";
    if (timed_out) out << " after a timeout";
    return out.str();
}

namespace {

ExitStatus decode_wait_status(int status) {
    ExitStatus result;
    if (WIFEXITED(status)) {
        result.exited = true;
        result.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        result.signal = WTERMSIG(status);
    }
    return result;
}

// fork + exec with stdout and stderr going to `output_path`. Everything the child needs is
// prepared before fork(): the test process has threads (the backends), so the child may only
// make async-signal-safe calls.
// Writes `value` in decimal at `out` (room for 20 digits and a NUL): async-signal-safe.
void write_decimal(char* out, long value) {
    char digits[24];
    int count = 0;
    do {
        digits[count++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value > 0);
    for (int i = 0; i < count; ++i) out[i] = digits[count - 1 - i];
    out[count] = '\0';
}

pid_t spawn(const std::vector<std::string>& args, const std::string& output_path,
            std::optional<rlimit> open_files_limit = std::nullopt, const std::vector<std::string>& extra_env = {},
            const std::vector<int>& listen_fds = {}, const std::string& listen_fdnames = "") {
    UniqueFd output(::open(output_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    UniqueFd null_input(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!output.valid() || !null_input.valid())
        throw std::runtime_error(std::string("open child stdio: ") + std::strerror(errno));
    std::vector<char*> argv;
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    // The extra entries first: getenv() returns the first of two with the same name.
    for (const auto& entry : extra_env) envp.push_back(const_cast<char*>(entry.c_str()));
    // Socket activation: copies above the fds they go to (so that no dup2 overwrites a source),
    // and LISTEN_PID, whose value only the child knows.
    std::vector<UniqueFd> passed;
    for (int fd : listen_fds) {
        passed.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3 + static_cast<int>(listen_fds.size())));
        if (!passed.back().valid()) throw std::runtime_error(std::string("dup listen fd: ") + std::strerror(errno));
    }
    std::string listen_count = "LISTEN_FDS=" + std::to_string(listen_fds.size());
    std::string listen_names = "LISTEN_FDNAMES=" + listen_fdnames;
    std::string listen_pid = "LISTEN_PID=" + std::string(24, '\0');
    if (!listen_fds.empty()) {
        envp.push_back(listen_count.data());
        envp.push_back(listen_pid.data());
        if (!listen_fdnames.empty()) envp.push_back(listen_names.data());
    }
    for (char** entry = environ; *entry; ++entry) envp.push_back(*entry);
    envp.push_back(nullptr);
    pid_t parent = ::getpid();

    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        // If the test process dies (crash, timeout kill), take ringlb with it.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);
        // Start ringlb as a shell would: default signal handling (the test ignores SIGPIPE, and
        // a non-interactive shell may have ignored SIGINT), nothing blocked.
        for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP}) ::signal(sig, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::dup2(null_input.get(), 0);
        ::dup2(output.get(), 1);
        ::dup2(output.get(), 2);
        for (size_t i = 0; i < passed.size(); ++i) ::dup2(passed[i].get(), 3 + static_cast<int>(i));
        if (!passed.empty()) write_decimal(listen_pid.data() + 11, ::getpid());
        // Belt and braces next to SOCK_CLOEXEC: no test socket may stay open in ringlb.
        ::close_range(3 + static_cast<unsigned>(passed.size()), ~0U, 0);
        if (open_files_limit && ::setrlimit(RLIMIT_NOFILE, &*open_files_limit) != 0) ::_exit(126);
        ::execve(argv[0], argv.data(), envp.data());
        const char message[] = "ringlb-test: execv failed\n";
        ssize_t ignored = ::write(2, message, sizeof message - 1);
        (void)ignored;
        ::_exit(127);
    }
    return pid;
}

// Waits for `pid` up to `timeout`, then SIGKILLs it. Always reaps.
ExitStatus wait_or_kill(pid_t pid, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    int status = 0;
    for (;;) {
        pid_t done = ::waitpid(pid, &status, WNOHANG);
        if (done == pid) return decode_wait_status(status);
        if (done < 0 && errno != EINTR) return ExitStatus{};
        if (Clock::now() >= deadline) break;
        std::this_thread::sleep_for(5ms);
    }
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ExitStatus result = decode_wait_status(status);
    result.timed_out = true;
    return result;
}

}  // namespace

RunResult run_to_exit(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
    TempFile output;
    std::vector<std::string> full_args{ringlb_binary()};
    full_args.insert(full_args.end(), args.begin(), args.end());
    pid_t pid = spawn(full_args, output.path());
    RunResult result;
    result.status = wait_or_kill(pid, timeout);
    result.output = output.read();
    return result;
}

RinglbProcess::RinglbProcess(std::string_view config_toml, std::vector<std::string> extra_args,
                             std::string engine)
    : config_(config_toml, ".toml"), log_("", ".log") {
    std::vector<std::string> args{ringlb_binary(), "-c", config_.path(), "--engine", engine};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = spawn(args, log_.path());
}

RinglbProcess::RinglbProcess(const RinglbOptions& options, std::string_view config_toml)
    : config_(config_toml, ".toml"), log_("", ".log") {
    std::vector<std::string> args{options.binary, "-c", config_.path(), "--engine", options.engine};
    args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
    std::optional<rlimit> limit;
    if (options.open_files_limit) limit = rlimit{*options.open_files_limit, *options.open_files_limit};
    if (options.open_files_soft_limit) {
        rlimit current{};
        ::getrlimit(RLIMIT_NOFILE, &current);
        limit = rlimit{*options.open_files_soft_limit, current.rlim_max};
    }
    pid_ = spawn(args, log_.path(), limit, options.environment, options.listen_fds, options.listen_fdnames);
}

RinglbProcess::~RinglbProcess() {
    if (!reaped_) {
        ::kill(pid_, SIGKILL);
        reap(0);
    }
}

bool RinglbProcess::reap(int options) {
    if (reaped_) return true;
    int status = 0;
    pid_t done;
    do {
        done = ::waitpid(pid_, &status, options);
    } while (done < 0 && errno == EINTR);
    if (done != pid_) return false;
    reaped_ = true;
    status_ = decode_wait_status(status);
    return true;
}

bool RinglbProcess::running() { return !reap(WNOHANG); }

bool RinglbProcess::wait_for_log(std::string_view needle, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        if (log_text().find(needle) != std::string::npos) return true;
        // Check once more after the exit: the line may have been written just before it.
        if (!running()) return log_text().find(needle) != std::string::npos;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(10ms);
    }
}

ExitStatus RinglbProcess::stop(int signal) {
    if (!reaped_) ::kill(pid_, signal);
    return wait_exit(10s);
}

ExitStatus RinglbProcess::wait_exit(std::chrono::milliseconds timeout) {
    if (reaped_) return status_;
    status_ = wait_or_kill(pid_, timeout);
    reaped_ = true;
    return status_;
}

}  // namespace ringlb::test
