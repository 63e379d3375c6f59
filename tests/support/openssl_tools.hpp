#pragma once
// Real TLS peers for the tests, from the openssl command line tool: a self-signed certificate,
// `openssl s_server` backends and `openssl s_client` clients, each a child process that is killed
// and reaped on destruction.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "net_util.hpp"

namespace ringlb::test {

// Whether the openssl tool can be run (the TLS tests need it).
bool openssl_available();

// A ClientHello captured from Debian's `openssl s_client -tls1_3 -servername www.Example.com
// -alpn h2,http/1.1` (a fuzz seed, tests/fuzz/corpus/client_hello/openssl-tls13-sni-alpn).
std::string captured_hello();

// A fresh directory in $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
public:
    TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir();
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// A child process with its stdin and stdout (stderr joined) on pipes.
class ChildProcess {
public:
    explicit ChildProcess(const std::vector<std::string>& argv);
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess();

    bool write(std::string_view bytes);
    void close_stdin() { stdin_ = UniqueFd(); }
    // Reads its output until it contains `needle`; false when the output ended or time ran out.
    bool wait_for_output(std::string_view needle, std::chrono::milliseconds timeout);
    const std::string& output() const { return output_; }

private:
    pid_t pid_ = -1;
    UniqueFd stdin_;
    UniqueFd stdout_;
    std::string output_;
};

// A TLS server on 127.0.0.1:port whose certificate names `name` (CN), offering ALPN h2 and
// http/1.1, that answers each line with the line reversed (s_server -rev).
class TlsReverseServer {
public:
    TlsReverseServer(const TempDir& dir, const std::string& name);
    std::uint16_t port() const { return port_; }
    std::string endpoint() const { return loopback_endpoint(port_); }

private:
    std::uint16_t port_;
    std::vector<std::string> argv_;
    ChildProcess process_;
};

// `openssl s_client` through 127.0.0.1:port with this server name and ALPN list ("" = none):
// sends "<line>\n" once the handshake is done and waits for the reversed line. Returns the
// client's whole output (certificate subject, "ALPN protocol: ...", the reply), or what it
// printed before failing, followed by "<no reply>".
std::string tls_round_trip(std::uint16_t port, const std::string& server_name, const std::string& alpn,
                           const std::string& line, std::chrono::milliseconds timeout = 10s);

}  // namespace ringlb::test
