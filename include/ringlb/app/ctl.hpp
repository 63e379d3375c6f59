#pragma once
// `ringlb ctl`: a one-shot client of the admin port. Sends one command, prints the reply body on
// stdout, and turns the reply's last line into an exit code a script can test.
#include <iosfwd>
#include <string>
#include <vector>

namespace ringlb::app {

constexpr int kCtlOk = 0;
constexpr int kCtlCommandFailed = 1;  // the reply was `error: ...`, or it was cut short
constexpr int kCtlUnreachable = 2;    // usage error, or no admin port to talk to at that address

// `admin_address` is "127.0.0.1:9900", "[::1]:9900" or "unix:/run/ringlb.sock". With a non-empty
// token, `auth <token>` is sent first. `words` are joined by single spaces into one command line.
// Waits at most 10 s for each step (connect, send, each piece of the reply). Errors go to stderr
// as "ringlb ctl: <message>".
int run_ctl(const std::string& admin_address, const std::string& token, const std::vector<std::string>& words);

// The same, writing to the given streams instead of stdout and stderr.
int run_ctl(const std::string& admin_address, const std::string& token, const std::vector<std::string>& words,
            std::ostream& out, std::ostream& err);

}  // namespace ringlb::app
