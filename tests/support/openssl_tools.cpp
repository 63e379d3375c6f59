#include "openssl_tools.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace ringlb::test {

namespace {

std::string temp_root() {
    const char* dir = std::getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

// Runs argv until its output ends (it exited), at most 20 s.
void run_to_end(const std::vector<std::string>& argv) {
    ChildProcess child(argv);
    child.close_stdin();
    child.wait_for_output("\x01 not in any output", std::chrono::seconds(20));
}

std::vector<std::string> server_argv(const TempDir& dir, const std::string& name, std::uint16_t port) {
    const std::string key = dir.path() + "/" + name + ".key", cert = dir.path() + "/" + name + ".crt";
    if (!std::filesystem::exists(cert)) {
        run_to_end({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=" + name});
        if (!std::filesystem::exists(cert)) throw std::runtime_error("openssl req made no certificate for " + name);
    }
    return {"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert", cert, "-key", key,
            "-rev", "-alpn", "h2,http/1.1", "-ign_eof"};
}

}  // namespace

bool openssl_available() {
    ChildProcess child({"openssl", "version"});
    child.close_stdin();
    return child.wait_for_output("OpenSSL", std::chrono::seconds(5));
}

std::string captured_hello() {
    const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "client_hello" /
                      "openssl-tls13-sni-alpn";
    std::ifstream in(path, std::ios::binary);
    if (!in.good()) throw std::runtime_error("cannot read the captured ClientHello at " + path.string());
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TempDir::TempDir() {
    std::string pattern = temp_root() + "/ringlb-test-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int error = ::posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = UniqueFd(in[1]);
    stdout_ = UniqueFd(out[0]);
    if (error != 0) {
        pid_ = -1;
        throw std::runtime_error("posix_spawnp " + argv[0] + " failed");
    }
}

ChildProcess::~ChildProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
}

bool ChildProcess::write(std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(stdin_.get(), bytes.data(), bytes.size());
        if (n <= 0) return false;
        bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

bool ChildProcess::wait_for_output(std::string_view needle, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (output_.find(needle) == std::string::npos) {
        if (!stdout_.valid()) return false;
        pollfd pfd{stdout_.get(), POLLIN, 0};
        const int wait = millis_until(deadline);
        if (wait <= 0) return false;
        if (::poll(&pfd, 1, wait) <= 0) continue;
        char buffer[4096];
        const ssize_t n = ::read(stdout_.get(), buffer, sizeof buffer);
        if (n <= 0) {
            stdout_ = UniqueFd();
            return output_.find(needle) != std::string::npos;
        }
        output_.append(buffer, static_cast<size_t>(n));
    }
    return true;
}

TlsReverseServer::TlsReverseServer(const TempDir& dir, const std::string& name)
    : port_(find_free_port()), argv_(server_argv(dir, name, port_)), process_(argv_) {
    // Ready once it accepts connections.
    for (int i = 0; i < 200; ++i) {
        if (connect_to(port_).valid()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    throw std::runtime_error("openssl s_server for " + name + " did not start");
}

std::string tls_round_trip(std::uint16_t port, const std::string& server_name, const std::string& alpn,
                           const std::string& line, std::chrono::milliseconds timeout) {
    std::vector<std::string> argv = {"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-ign_eof"};
    if (server_name.empty()) argv.push_back("-noservername");
    else argv.insert(argv.end(), {"-servername", server_name});
    if (!alpn.empty()) argv.insert(argv.end(), {"-alpn", alpn});
    ChildProcess client(argv);
    std::string reversed(line.rbegin(), line.rend());
    // The line goes once the handshake is through (s_client prints the session summary then).
    if (!client.wait_for_output("---\n", timeout) || !client.wait_for_output("Verify return code", timeout) ||
        !client.write(line + "\n") || !client.wait_for_output(reversed, timeout))
        return client.output() + "<no reply>";
    return client.output();
}

}  // namespace ringlb::test
