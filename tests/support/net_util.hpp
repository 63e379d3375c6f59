#pragma once
// Plain POSIX socket helpers for the integration tests. Every blocking wait has a deadline so a
// misbehaving ringlb makes a test fail instead of hanging the suite.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringlb::test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release();
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

enum class Family { V4, V6 };

// "127.0.0.1" or "::1".
const char* loopback_ip(Family family);
// "127.0.0.1:8080" or "[::1]:8080", as ringlb's config expects.
std::string loopback_endpoint(std::uint16_t port, Family family = Family::V4);

// True when a socket can be bound to [::1] on this machine.
bool ipv6_loopback_available();

// A port that was free a moment ago (bind to port 0, read the port, close), never the same one
// twice in a process. Nothing listens on it afterwards, so it also serves as a "dead" server
// address that refuses connections.
std::uint16_t find_free_port(Family family = Family::V4);

// A listening, non-blocking, close-on-exec socket on the loopback address; port 0 = any.
UniqueFd listen_on_loopback(std::uint16_t port, Family family = Family::V4, int backlog = 4096);
std::uint16_t local_port(int fd);

void set_nonblocking(int fd);

// Blocking-style connect with a deadline. Returns an invalid fd on refusal, error or timeout.
// The returned socket is non-blocking and close-on-exec; the helpers below all cope with that.
UniqueFd connect_to(std::uint16_t port, Family family = Family::V4,
                    std::chrono::milliseconds timeout = 5000ms);
// Starts a non-blocking connect and returns at once (for opening many connections together).
UniqueFd start_connect(std::uint16_t port, Family family = Family::V4);
// connect_to() 127.0.0.1:port from another loopback source address (such as "127.0.0.2"), so that
// ringlb sees a peer of the test's choice.
UniqueFd connect_from(const char* source_ipv4, std::uint16_t port, std::chrono::milliseconds timeout = 5000ms);

// Sends every byte before the deadline. False on error or timeout.
bool send_all(int fd, std::string_view data, std::chrono::milliseconds timeout = 5000ms);

enum class ReadEnd { Eof, Reset, Timeout, Error, Limit };
const char* to_string(ReadEnd end);

struct ReadResult {
    std::string data;
    ReadEnd end = ReadEnd::Timeout;
    bool closed() const { return end == ReadEnd::Eof || end == ReadEnd::Reset; }
};

// Reads until EOF, a reset, an error or the deadline.
ReadResult read_until_closed(int fd, std::chrono::milliseconds timeout = 5000ms);
// Reads until the data holds at least `count` bytes (end = Limit), or the stream ends/times out earlier.
ReadResult read_exactly(int fd, std::size_t count, std::chrono::milliseconds timeout = 5000ms);
// Reads one '\n'-terminated line (returned without the '\n'); end = Limit when a line was found.
// Reads byte by byte so nothing after the line is consumed.
ReadResult read_line(int fd, std::chrono::milliseconds timeout = 5000ms);

// Connects to 127.0.0.1:port and reads a NameBackend's name line through ringlb; the connection
// stays open in `client`. Returns the name, or "<how it ended>" ("<EOF>", "<reset>", ...).
std::string open_session(std::uint16_t port, UniqueFd& client);

// Waits for the fd to become readable (or closed). False on timeout.
bool wait_readable(int fd, std::chrono::milliseconds timeout);

// Connects, reads the single line a NameBackend sends, closes. "" on any failure.
std::string fetch_name(std::uint16_t port, Family family = Family::V4,
                       std::chrono::milliseconds timeout = 5000ms);

// Milliseconds left until `deadline`, clamped to [0, INT_MAX] for poll().
int millis_until(Clock::time_point deadline);

}  // namespace ringlb::test
